#!/usr/bin/env bash
# Proves the chart's alerts and Grafana dashboard with real tools.
#
#   tests/deploy/alerts.sh
#
# - renders the PrometheusRule with each value set a test file in
#   tests/deploy/alerts/ names ("# values: FILE" from tests/deploy/values/),
#   runs "promtool check rules" on its spec and "promtool test rules" with that
#   test file, which feeds synthetic series and asserts which alerts fire, when,
#   with which labels and summary, and which do not;
# - negative control: the default tests must fail against rules rendered with a
#   lower expiry threshold;
# - every alert has a severity, summary, a description saying what to check and
#   a runbook pointer, and a runbook section in the chart README and the main
#   README (the writer's alerts and cluster mode's);
# - cluster mode (controller.enabled) renders the leader alerts and none of the
#   writer's per-output alerts, and its alerts use only the metric names the
#   controller registers (src/controller/metrics.rs and the shared families),
#   with a negative control;
# - runs the daemon (debug build, or FISKIL_TEST_BINARY) against the HTTPS
#   stand-in, scrapes its /metrics, and checks that the dashboard and the alerts
#   use only metric names the scrape declares (a binary built before leader
#   election lacks the leader gauge: then only the leader alerts may use it),
#   with a negative control;
# - runs a real Prometheus (the same Debian package as promtool) that scrapes
#   the daemon and evaluates the rules: every dashboard query is valid PromQL and
#   returns data, no alert fires while the token endpoint is healthy, and
#   FiskilCredentialsRejected fires once the stand-in rejects the credentials.
#
# Needs promtool and prometheus (Debian: apt-get install prometheus; or
# FISKIL_PROMTOOL / FISKIL_PROMETHEUS), Go for helm, python3, cargo.
# Prints one line per check and "N passed, M failed".
set -euo pipefail
# shellcheck source=tests/deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RELEASE=fiskil-token-refresher
NAMESPACE=fiskil

PROMTOOL="${FISKIL_PROMTOOL:-$(command -v promtool || true)}"
PROMETHEUS="${FISKIL_PROMETHEUS:-$(command -v prometheus || true)}"
[[ -x ${PROMTOOL} ]] || deploy_die "promtool not found: apt-get install prometheus (Debian), or set FISKIL_PROMTOOL"
[[ -x ${PROMETHEUS} ]] || deploy_die "prometheus not found: apt-get install prometheus (Debian), or set FISKIL_PROMETHEUS"
HELM="$("${DEPLOY_TESTS_DIR}/helm.sh")"
PYTHON="$(with_tool_lock venv venv_python)"
MON=("${PYTHON}" "${DEPLOY_TESTS_DIR}/check_monitoring.py")
deploy_log "$("${PROMTOOL}" --version 2>&1 | head -n 1), $("${HELM}" version --short)"

(cd "${REPO_ROOT}" && cargo build --locked --workspace --quiet) || deploy_die "cargo build --workspace failed"
daemon_bin="${FISKIL_TEST_BINARY:-${REPO_ROOT}/target/debug/fiskil-token-refresher}"
stand_in_bin="${REPO_ROOT}/target/debug/fiskil-stand-in"

out="$(mktemp -d)"
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "${pid}" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ -n ${FISKIL_KEEP:-} ]] || rm -rf "${out}"
}
trap cleanup EXIT

render_rules() { # render_rules VALUES OUT_FILE [--set ...]: the PrometheusRule alone
    local values="$1" file="$2"
    shift 2
    "${HELM}" template "${RELEASE}" "${CHART_DIR}" --namespace "${NAMESPACE}" -f "${values}" "$@" \
        --show-only templates/prometheusrule.yaml >"${file}"
}

# ------------------------------------------------- promtool, per value set ---
promtool_test() { (cd "$1" && "${PROMTOOL}" test rules test.yaml); } # the test names rules.yaml
for test_file in "${DEPLOY_TESTS_DIR}"/alerts/*.test.yaml; do
    name="$(basename "${test_file}" .test.yaml)"
    values="$(sed -n 's/^# values: //p' "${test_file}" | head -n 1)"
    dir="${out}/${name}"
    mkdir -p "${dir}"
    if [[ -z ${values} || ! -f ${DEPLOY_TESTS_DIR}/values/${values} ]]; then
        check "alerts/${name}.test.yaml names a value set (# values: FILE)" false
        continue
    fi
    check "render the PrometheusRule with values/${values}" \
        render_rules "${DEPLOY_TESTS_DIR}/values/${values}" "${dir}/rendered.yaml"
    check "values/${values}: alerts have severity, summary, what to check, runbook" \
        "${MON[@]}" annotations "${dir}/rendered.yaml"
    "${MON[@]}" rules "${dir}/rendered.yaml" "${dir}" >/dev/null
    check "values/${values}: promtool check rules" "${PROMTOOL}" check rules "${dir}/rules-full.yaml"
    cp "${test_file}" "${dir}/test.yaml"
    check "promtool test rules alerts/${name}.test.yaml" promtool_test "${dir}"
done

# monitoring.yaml turns every writer alert on, prometheusrule-controller.yaml every cluster-mode
# alert: each has its runbook, and only they do.
check "every alert (writer and cluster mode) has a runbook section in the chart README and a row in the README" \
    "${MON[@]}" runbooks "${out}/monitoring/rendered.yaml" "${out}/controller/rendered.yaml" \
    "${CHART_DIR}/README.md" "${REPO_ROOT}/README.md"

# The tests can fail: one alert's threshold lowered, the default tests must notice.
mutant_fails() {
    local dir="${out}/mutant"
    mkdir -p "${dir}"
    render_rules "${DEPLOY_TESTS_DIR}/values/prometheusrule-defaults.yaml" "${dir}/rendered.yaml" \
        --set prometheusRule.tokenExpiringSoon.thresholdSeconds=59
    "${MON[@]}" rules "${dir}/rendered.yaml" "${dir}" >/dev/null
    cp "${DEPLOY_TESTS_DIR}/alerts/defaults.test.yaml" "${dir}/test.yaml"
    ! (cd "${dir}" && "${PROMTOOL}" test rules test.yaml)
}
check "negative control: promtool test rules fails when the expiry threshold is 59 s, not 120 s" mutant_fails
leader_alerts_by_default() { [[ $(grep -c 'alert: FiskilTokenRefresher\(NoLeader\|MultipleLeaders\)' "${out}/defaults/rules-full.yaml") -eq 2 ]]; }
check "the leader alerts are in the defaults (leaderElection.enabled is the default)" leader_alerts_by_default
no_leader_alerts_without_election() { ! grep -q 'NoLeader\|MultipleLeaders' "${out}/single-writer/rules-full.yaml"; }
check "no leader alerts without leader election" no_leader_alerts_without_election
controller_leader_alerts() { [[ $(grep -c 'alert: FiskilTokenRefresher\(NoLeader\|MultipleLeaders\)' "${out}/controller/rules-full.yaml") -eq 2 ]]; }
check "cluster mode has the leader alerts, even with leaderElection.enabled false" controller_leader_alerts
controller_no_writer_alerts() {
    ! grep -E 'alert: FiskilToken(ExpiringSoon|Expired|OutputWriteFailing)$|fiskil_token_refresher_output_' \
        "${out}/controller/rules-full.yaml"
}
check "cluster mode has none of the writer's per-output alerts or output_* metrics" controller_no_writer_alerts

# -------------------------------------------- the daemon's real /metrics ---
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
client_id="alerts-client"
client_secret="alerts-secret-$$"
mkdir -p "${out}/credentials" "${out}/tokens"
printf '%s' "${client_id}" >"${out}/credentials/client_id"
printf '%s' "${client_secret}" >"${out}/credentials/client_secret"
stand_in_port="$(free_port)"
"${stand_in_bin}" --listen "127.0.0.1:${stand_in_port}" --ca-out "${out}/stand-in-ca.pem" --expires-in 600 \
    --control --client-id "${client_id}" --client-secret "${client_secret}" >"${out}/stand-in.log" 2>&1 &
pids+=($!)
daemon_port="$(free_port)"
for _ in $(seq 1 50); do [[ -s ${out}/stand-in-ca.pem ]] && break; sleep 0.1; done
"${daemon_bin}" --token-url "https://localhost:${stand_in_port}/v1/token" --ca-file "${out}/stand-in-ca.pem" \
    --client-id-file "${out}/credentials/client_id" --client-secret-file "${out}/credentials/client_secret" \
    --token-file "${out}/tokens/token" --listen "127.0.0.1:${daemon_port}" \
    --backoff-initial 200ms --backoff-max 1s >"${out}/daemon.log" 2>&1 &
daemon_pid=$!
pids+=("${daemon_pid}")

scrape() { # a scrape after the first token is on disk
    for _ in $(seq 1 100); do
        if [[ -s ${out}/tokens/token ]] &&
            curl -fsS "http://127.0.0.1:${daemon_port}/metrics" >"${out}/metrics.txt" 2>/dev/null &&
            grep -q '^fiskil_token_refresher_output_token_expiry_timestamp_seconds{output="file"}' "${out}/metrics.txt"; then
            "${MON[@]}" exported "${out}/metrics.txt"
            return 0
        fi
        sleep 0.1
    done
    cat "${out}/daemon.log"
    return 1
}
check "scrape of the running daemon's /metrics" scrape
# The leader gauge: a binary built before leader election lacks it; then only the leader
# alerts may use it.
# A binary built before leader election lacks the leader gauge: then only the leader alerts may
# use it, and the dashboard is checked without its leader panel.
leader_gauge=()
dashboard="${CHART_DIR}/dashboards/fiskil-token-refresher.json"
if ! grep -q '^# TYPE fiskil_token_refresher_leader gauge' "${out}/metrics.txt"; then
    echo "note: ${daemon_bin} does not export fiskil_token_refresher_leader yet: only the leader alerts may use it, and the dashboard is checked without its leader panel"
    leader_gauge=(--unexported-in-alerts "fiskil_token_refresher_leader=FiskilTokenRefresherNoLeader,FiskilTokenRefresherMultipleLeaders")
    "${PYTHON}" - "${dashboard}" "${out}/dashboard-without-leader.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["panels"] = [p for p in d["panels"] if "fiskil_token_refresher_leader" not in json.dumps(p.get("targets", []))]
json.dump(d, open(sys.argv[2], "w"))
PY
    dashboard="${out}/dashboard-without-leader.json"
fi
check "the dashboard and the default alerts use only metrics the scrape declares" \
    "${MON[@]}" names "${out}/metrics.txt" --dashboard "${dashboard}" \
    --rules "${out}/defaults/rendered.yaml" "${leader_gauge[@]}"
check "with every monitoring value set, the alerts use only metrics the scrape declares" \
    "${MON[@]}" names "${out}/metrics.txt" --rules "${out}/monitoring/rendered.yaml" "${leader_gauge[@]}"
# The controller needs a cluster to run, so its metric names come from the source: the
# families src/controller/metrics.rs registers, and the daemon's families the README's
# "Cluster mode" section says it shares (refresh_total, refresh_duration_seconds, leader,
# build_info), as this scrape declares them.
controller_metrics() { # controller_metrics OUT: a /metrics-like list of # TYPE lines
    {
        grep -E '^# TYPE fiskil_token_refresher_(refresh|refresh_duration_seconds|leader|build_info) ' "${out}/metrics.txt"
        "${PYTHON}" - "${REPO_ROOT}/src/controller/metrics.rs" <<'PY'
import re, sys
src = open(sys.argv[1]).read()
kinds = {"Counter": "counter", "Gauge": "gauge", "FloatGauge": "gauge"}
found = re.findall(r"Family::<\w+, (\w+)>::default\(\);\s*base\.register\(\s*\"(\w+)\"", src)
if len(found) < 6:
    sys.exit(f"expected 6 families in {sys.argv[1]}, found {found}")
for kind, name in found:
    print(f"# TYPE fiskil_token_refresher_{name} {kinds[kind]}")
PY
    } >"$1"
    cat "$1"
    [[ $(grep -c '^# TYPE' "$1") -ge 10 ]]
}
check "the controller's metric names, from src/controller/metrics.rs and the shared families" \
    controller_metrics "${out}/controller-metrics.txt"
check "the cluster-mode alerts use only metrics the controller exports" \
    "${MON[@]}" names "${out}/controller-metrics.txt" --rules "${out}/controller/rendered.yaml"
writer_metric_in_controller_caught() {
    sed 's/fiskil_token_refresher_credential_token_expiry_timestamp_seconds/fiskil_token_refresher_output_token_expiry_timestamp_seconds/' \
        "${out}/controller/rendered.yaml" >"${out}/controller-bogus.yaml"
    ! "${MON[@]}" names "${out}/controller-metrics.txt" --rules "${out}/controller-bogus.yaml"
}
check "negative control: a cluster-mode alert on a writer-only metric is caught" writer_metric_in_controller_caught
bogus_name_caught() {
    sed 's/fiskil_token_refresher_credential_reloads_total/fiskil_token_refresher_credential_reload_total/' \
        "${dashboard}" >"${out}/bogus-dashboard.json"
    ! "${MON[@]}" names "${out}/metrics.txt" --dashboard "${out}/bogus-dashboard.json"
}
check "negative control: a dashboard query of a metric the binary lacks is caught" bogus_name_caught

# ------------------------------------ a real Prometheus against the daemon ---
# It scrapes the daemon every second with the labels the chart's ServiceMonitor
# gives (job = the Service name, namespace), and evaluates the default rules.
prometheus_port="$(free_port)"
prom="http://127.0.0.1:${prometheus_port}"
cp "${out}/defaults/rules-full.yaml" "${out}/live-rules.yaml"
cat >"${out}/prometheus.yml" <<EOF
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [live-rules.yaml]
scrape_configs:
  - job_name: ${RELEASE}
    static_configs:
      - targets: ["127.0.0.1:${daemon_port}"]
        labels: {namespace: ${NAMESPACE}, pod: ${RELEASE}-0}
EOF
"${PROMETHEUS}" --config.file="${out}/prometheus.yml" --storage.tsdb.path="${out}/tsdb" \
    --web.listen-address="127.0.0.1:${prometheus_port}" --log.level=warn >"${out}/prometheus.log" 2>&1 &
pids+=($!)
control() { # control JSON: set the stand-in's behaviour
    curl -fsS --cacert "${out}/stand-in-ca.pem" -H 'Content-Type: application/json' \
        -d "$1" "https://localhost:${stand_in_port}/control/behaviour"
}
scraped() { # three scrapes of the daemon in Prometheus's database
    for _ in $(seq 1 120); do
        curl -fsS "${prom}/api/v1/query" --data-urlencode \
            "query=count_over_time(up{job=\"${RELEASE}\"}[1m]) >= 3 and up{job=\"${RELEASE}\"} == 1" 2>/dev/null |
            grep -q '"value"' && return 0
        sleep 0.5
    done
    cat "${out}/prometheus.log"
    return 1
}
check "Prometheus ($("${PROMETHEUS}" --version 2>&1 | head -n 1 | cut -d' ' -f3)) scrapes the daemon" scraped
check "Prometheus evaluates every default alert without error" "${MON[@]}" live-rules "${prom}" 9
check "healthy endpoint, 600 s tokens: no alert firing or pending" "${MON[@]}" live-alerts "${prom}"
# Tokens of 30 s: the file output's token always expires within 120 s.
check "stand-in issues 30 s tokens" control '{"behaviour":"issue","expires_in":30}'
kill -HUP "${daemon_pid}"
check "FiskilTokenExpiringSoon fires for output file" \
    "${MON[@]}" live-alerts "${prom}" FiskilTokenExpiringSoon:output=file --wait 60
check "stand-in rejects the credentials (401)" control '{"behaviour":"fail","status":401}'
kill -HUP "${daemon_pid}"
check "FiskilCredentialsRejected fires" \
    "${MON[@]}" live-alerts "${prom}" FiskilTokenExpiringSoon:output=file FiskilCredentialsRejected --wait 60
check "every dashboard query returns data from the real scrape, with all selected" \
    "${MON[@]}" live-queries "${prom}" "${dashboard}"
check "... and with the namespace, job and pod a person would pick" \
    "${MON[@]}" live-queries "${prom}" "${dashboard}" \
    "namespace=${NAMESPACE}" "job=${RELEASE}" "pod=${RELEASE}-0"
wrong_label_caught() { # a panel filtering on a label the series lack returns nothing
    # shellcheck disable=SC2016 # $pod is the dashboard's variable
    sed 's/pod=~\\"$pod\\"/kubernetes_pod_name=~\\"$pod\\"/g' \
        "${dashboard}" >"${out}/wrong-label.json"
    grep -q kubernetes_pod_name "${out}/wrong-label.json" || return 1
    local report rc=0
    report="$("${MON[@]}" live-queries "${prom}" "${out}/wrong-label.json" "pod=${RELEASE}-0")" || rc=$?
    grep '^FAIL' <<<"${report}"
    # Caught as empty answers to valid queries, not as errors.
    [[ ${rc} -ne 0 ]] && grep -q '^FAIL .*: 0 series from' <<<"${report}" && ! grep -q 'HTTP Error' <<<"${report}"
}
check "negative control: a dashboard filtering on a label the series lack is caught" wrong_label_caught
no_secret_in_logs() { ! grep -qE "${client_secret}|tok-[0-9]{4}-" "${out}/daemon.log"; }
check "the daemon's logs hold neither the client secret nor a token" no_secret_in_logs

check_summary
