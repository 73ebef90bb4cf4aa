#!/usr/bin/env bash
# Benchmark of the authenticating proxy (--proxy-listen), side by side with nginx configured as
# the same authenticating reverse proxy, and with the upstream called directly.
#
# One run, one load generator (wrk), one upstream: a loopback HTTPS nginx answering a fixed
# 200. Measured for each path: requests per second at 64 connections, median latency at one
# connection, and the CPU time the proxy process(es) spent per request during the 64-connection
# run (medians of interleaved rounds). Also: resident memory of the daemon idle with and without the proxy configured.
# Both proxies run one worker (the daemon is single-threaded by design): nginx with
# worker_processes 1, upstream keep-alive and a fixed Authorization header. nginx logs one line per
# request (its default access log); the daemon logs at its default level, to a file: a JSON line
# for each failed request and for at most one successful request a second
# (FISKIL_BENCH_DAEMON_ARGS="--log-level debug" logs every request, as releases before 2026-12-07
# did at the default level).
#
# Needs: nginx, wrk, openssl (Debian: apt-get install nginx-light wrk openssl) and
# `cargo build --release --workspace`. Usage: tests/bench/proxy.sh [SECONDS per run, default 10]
# FISKIL_BENCH_DAEMON_ARGS adds daemon arguments, e.g. "--log-level warn" to leave out the
# per-request log lines. FISKIL_BENCH_DAEMON and FISKIL_BENCH_STAND_IN name other builds (e.g. the
# static musl binary); FISKIL_BENCH_BASELINE names a second daemon build measured in the same
# interleaved rounds, in a column of its own (before/after comparisons).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
seconds=${1:-10}
daemon=${FISKIL_BENCH_DAEMON:-$root/target/release/fiskil-token-refresher}
stand_in=${FISKIL_BENCH_STAND_IN:-$root/target/release/fiskil-stand-in}
baseline=${FISKIL_BENCH_BASELINE:-}
PATH=$PATH:/usr/sbin # nginx
for tool in nginx wrk openssl; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install nginx-light wrk openssl)" >&2; exit 2; }
done
[[ -x $daemon && -x $stand_in ]] || { echo "build first: cargo build --release --workspace" >&2; exit 2; }

work=$(mktemp -d /tmp/fiskil-proxy-bench.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for conf in "$work"/nginx-*.conf; do
    if [[ -e $conf ]]; then nginx -p "$work" -c "$conf" -s stop 2>/dev/null || true; fi
  done
  sleep 0.3
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# CPU ticks (user + system) of a process and its children that are still running.
cpu_ticks() {
  local total=0 pid
  for pid in "$@"; do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}
# nginx_pids PIDFILE: the master and its workers, one per line.
nginx_pids() { local master; master=$(cat "$1"); echo "$master"; tr ' ' '\n' <"/proc/$master/task/$master/children" | grep .; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

# A CA and a localhost certificate for the upstream.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=bench CA" \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
  -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$work/san.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
  -CAcreateserial -days 2 -extfile "$work/san.ext" -out "$work/server.pem" 2>/dev/null

upstream_port=$(free_port)
nginx_proxy_port=$(free_port)
temp_paths="client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work; uwsgi_temp_path $work; scgi_temp_path $work;"
cat > "$work/nginx-upstream.conf" <<EOF
worker_processes 1;
pid $work/upstream.pid;
error_log $work/upstream-error.log warn;
events { worker_connections 1024; }
http {
  access_log off; $temp_paths
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$upstream_port ssl;
    ssl_certificate $work/server.pem;
    ssl_certificate_key $work/server.key;
    location / { default_type application/json; return 200 '{"accounts":[]}'; }
  }
}
EOF
cat > "$work/nginx-proxy.conf" <<EOF
worker_processes 1;
pid $work/proxy.pid;
error_log $work/proxy-error.log warn;
events { worker_connections 1024; }
http {
  access_log $work/proxy-access.log; $temp_paths
  keepalive_requests 1000000;
  upstream fiskil { server 127.0.0.1:$upstream_port; keepalive 128; }
  server {
    listen 127.0.0.1:$nginx_proxy_port;
    location / {
      proxy_pass https://fiskil;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host localhost:$upstream_port;
      proxy_set_header Authorization "Bearer fixed-benchmark-token";
      proxy_ssl_server_name on;
      proxy_ssl_name localhost;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate $work/ca.pem;
      proxy_ssl_session_reuse on;
    }
  }
}
EOF
nginx -p "$work" -c "$work/nginx-upstream.conf"
nginx -p "$work" -c "$work/nginx-proxy.conf"
wait_port "$upstream_port"
wait_port "$nginx_proxy_port"

# The token endpoint stand-in and the daemon, trusting both CAs.
token_port=$(free_port)
"$stand_in" --listen "127.0.0.1:$token_port" --ca-out "$work/stand-in-ca.pem" \
  --client-id bench --client-secret bench-secret >/dev/null &
pids+=($!)
wait_port "$token_port"
cat "$work/stand-in-ca.pem" "$work/ca.pem" > "$work/trust.pem"
printf bench > "$work/client_id"
printf bench-secret > "$work/client_secret"
start_daemon() { # extra args...; sets daemon_pid; $binary picks the build (default $daemon)
  "${binary:-$daemon}" --token-url "https://localhost:$token_port/v1/token" --ca-file "$work/trust.pem" \
    --client-id-file "$work/client_id" --client-secret-file "$work/client_secret" \
    --token-file "${token_file:-$work/token}" --listen 127.0.0.1:0 "$@" 2>>"$work/daemon.log" &
  daemon_pid=$!
  pids+=("$daemon_pid")
  for _ in $(seq 100); do [[ -s ${token_file:-$work/token} ]] && break; sleep 0.05; done
  sleep 1
}
if [[ -n $baseline ]]; then
  baseline_proxy_port=$(free_port)
  # shellcheck disable=SC2086 # FISKIL_BENCH_DAEMON_ARGS holds several words
  binary=$baseline token_file=$work/token-baseline start_daemon --proxy-listen "127.0.0.1:$baseline_proxy_port" \
    --proxy-upstream "https://localhost:$upstream_port" ${FISKIL_BENCH_DAEMON_ARGS:-}
  baseline_pid=$daemon_pid
  wait_port "$baseline_proxy_port"
fi

start_daemon
rss_plain=$(rss_kib "$daemon_pid")
kill "$daemon_pid"; wait "$daemon_pid" 2>/dev/null || true
rm -f "$work/token"
daemon_proxy_port=$(free_port)
# shellcheck disable=SC2086 # FISKIL_BENCH_DAEMON_ARGS holds several words
start_daemon --proxy-listen "127.0.0.1:$daemon_proxy_port" --proxy-upstream "https://localhost:$upstream_port" ${FISKIL_BENCH_DAEMON_ARGS:-}
wait_port "$daemon_proxy_port"
rss_proxy_idle=$(rss_kib "$daemon_pid")

path='/v1/accounts?limit=10'
rounds=${FISKIL_BENCH_ROUNDS:-3}
to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) printf "%.3f", v / 1000; else if (v ~ /ms$/) printf "%.3f", v + 0; else printf "%.3f", v * 1000 }'; }
median() { tr -s ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
# throughput URL PIDS...: appends "rps cpu_us_per_request" of one 64-connection run
throughput() {
  local url=$1; shift
  local before after out rps requests cpu_us=n/a
  before=$([[ $# -gt 0 ]] && cpu_ticks "$@" || echo 0)
  out=$(wrk -t1 -c64 -d"${seconds}s" "$url")
  after=$([[ $# -gt 0 ]] && cpu_ticks "$@" || echo 0)
  if grep -q 'Non-2xx\|Socket errors' <<<"$out"; then echo "errors from $url: $out" >&2; exit 1; fi
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  if [[ $# -gt 0 ]]; then
    cpu_us=$(awk -v t=$((after - before)) -v n="$requests" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t / hz / n * 1e6}')
  fi
  echo "$rps $cpu_us"
}
latency() { to_ms "$(wrk --latency -t1 -c1 -d"${seconds}s" "$1" | awk '$1 == "50%" {print $2}')"; }

direct_url="https://localhost:$upstream_port$path"
nginx_url="http://127.0.0.1:$nginx_proxy_port$path"
daemon_url="http://127.0.0.1:$daemon_proxy_port$path"
baseline_url=${baseline:+http://127.0.0.1:$baseline_proxy_port$path}
for url in "$direct_url" "$nginx_url" "$daemon_url" $baseline_url; do
  wrk -t1 -c64 -d2s "$url" >/dev/null # warm up connections and TLS sessions
done
declare -A rps cpu lat
# Rounds interleave the three paths, so that load from elsewhere on the machine spreads evenly.
for round in $(seq "$rounds"); do
  read -r r _ <<<"$(throughput "$direct_url")"; rps[direct]+="$r "
  mapfile -t nginx_procs < <(nginx_pids "$work/proxy.pid")
  read -r r c <<<"$(throughput "$nginx_url" "${nginx_procs[@]}")"; rps[nginx]+="$r "; cpu[nginx]+="$c "
  read -r r c <<<"$(throughput "$daemon_url" "$daemon_pid")"; rps[daemon]+="$r "; cpu[daemon]+="$c "
  if [[ -n $baseline ]]; then
    read -r r c <<<"$(throughput "$baseline_url" "$baseline_pid")"; rps[baseline]+="$r "; cpu[baseline]+="$c "
  fi
  lat[direct]+="$(latency "$direct_url") "
  lat[nginx]+="$(latency "$nginx_url") "
  lat[daemon]+="$(latency "$daemon_url") "
  if [[ -n $baseline ]]; then lat[baseline]+="$(latency "$baseline_url") "; fi
  echo "round $round done" >&2
done
d_rps=$(median <<<"${rps[direct]}"); d_med=$(median <<<"${lat[direct]}")
n_rps=$(median <<<"${rps[nginx]}"); n_med=$(median <<<"${lat[nginx]}")
f_rps=$(median <<<"${rps[daemon]}"); f_med=$(median <<<"${lat[daemon]}")
n_cpu=$(median <<<"${cpu[nginx]}")
f_cpu=$(median <<<"${cpu[daemon]}")
rss_proxy_after=$(rss_kib "$daemon_pid")
threads_after=$(awk '/^Threads:/ {print $2}' "/proc/$daemon_pid/status")

if grep -q 'fixed-benchmark-token\|bench-secret' "$work/daemon.log" || grep -q "$(cat "$work/token")" "$work/daemon.log" ||
  { [[ -n $baseline ]] && grep -q "$(cat "$work/token-baseline")" "$work/daemon.log"; }; then
  echo "a secret or token reached the daemon's log" >&2; exit 1
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo
echo "| measure | direct to the upstream | nginx as authenticating proxy | fiskil-token-refresher --proxy-listen |"
echo "|---|---|---|---|"
echo "| requests/s at 64 connections | ${d_rps%.*} | ${n_rps%.*} | ${f_rps%.*} ($(ratio "$f_rps" "$n_rps")× nginx) |"
echo "| median latency at 1 connection | $d_med ms | $n_med ms | $f_med ms ($(awk -v a="$f_med" -v b="$n_med" 'BEGIN {printf "%+.3f", a - b}') ms vs nginx) |"
echo "| proxy CPU time per request (64 connections) | – | $n_cpu µs | $f_cpu µs |"
if [[ -n $baseline ]]; then
  b_rps=$(median <<<"${rps[baseline]}"); b_med=$(median <<<"${lat[baseline]}"); b_cpu=$(median <<<"${cpu[baseline]}")
  echo
  echo "| baseline ($baseline) | requests/s at 64 connections | median latency at 1 connection | proxy CPU time per request |"
  echo "|---|---|---|---|"
  echo "| baseline | ${b_rps%.*} ($(ratio "$b_rps" "$n_rps")× nginx) | $b_med ms | $b_cpu µs |"
  echo "| measured | ${f_rps%.*} ($(ratio "$f_rps" "$n_rps")× nginx) | $f_med ms | $f_cpu µs |"
fi
echo
echo "daemon log: $(wc -l <"$work/daemon.log") lines in all"
echo "daemon resident memory: $rss_plain KiB without the proxy, $rss_proxy_idle KiB with the proxy idle" \
  "(+$((rss_proxy_idle - rss_plain)) KiB), $rss_proxy_after KiB after the load ($threads_after threads)"
echo "medians of $rounds interleaved rounds; wrk: one thread; ${seconds} s per run; $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); $(nginx -v 2>&1)"
