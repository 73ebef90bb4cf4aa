#!/usr/bin/env python3
"""Start-up and per-pod memory of daemon builds side by side with the floor program.

The floor (tests/sidebyside/floor) is the least program that does the daemon's first job: one
HTTPS POST with rustls, the token written atomically, then idle. Every contender gets the same
loopback HTTPS stand-in, the same credentials files and a fresh token path; runs interleave the
contenders so that load from elsewhere on the machine spreads evenly over them.

Measured:
- process start to the token file existing (polled every 0.2 ms): median, min, max of --runs;
- CPU time (all threads, /proc/PID/task/*/schedstat) and minor page faults (/proc/PID/stat) the
  process had used when its token file was seen, medians of --runs: what the start-up costs on
  a busy machine too, where the wall time also holds waits for a CPU;
- anonymous memory (/proc/PID/smaps_rollup `Anonymous`: what each pod pays, while the binary's
  clean pages are shared through the page cache) and RSS after the first token, and for the
  daemons after --refreshes SIGHUP-driven refreshes (--min-refresh-interval 1ms);
- with --phases LABEL, starts of that daemon at --log-level debug: the time from process start
  at which each start-up log line was written (its microsecond timestamp), median of --runs.

The environment is passed on as it is: SSL_CERT_FILE and SSL_CERT_DIR, when set, make the daemon
read those bundles too (the floor never does); the output says whether they were set.

Usage: tests/bench/startup.py --daemon LABEL=PATH [--daemon LABEL=PATH ...] [--floor PATH]
                              [--runs 20] [--refreshes 1000] [--stand-in PATH] [--phases LABEL]
The floor's static binary: (cd tests/sidebyside/floor && cargo build --release --target
x86_64-unknown-linux-musl); the stand-in: cargo build --release -p fiskil-stand-in.
"""

import argparse
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from bench import free_port, read, stop, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STAND_IN = os.path.join(ROOT, "target", "release", "fiskil-stand-in")


def smaps_kib(pid, field):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in smaps_rollup")


def cost(pid):
    """CPU time in ms (every thread) and minor page faults of a running process."""
    nanoseconds = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as f:
            nanoseconds += int(f.read().split()[0])
    with open(f"/proc/{pid}/stat") as f:
        faults = int(f.read().rsplit(")", 1)[1].split()[7])
    return nanoseconds / 1e6, faults


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--daemon", action="append", required=True, metavar="LABEL=PATH")
    parser.add_argument("--floor", help="the floor program's binary")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--refreshes", type=int, default=1000)
    parser.add_argument("--stand-in", default=STAND_IN)
    parser.add_argument("--phases", metavar="LABEL", help="trace the starts of this daemon")
    args = parser.parse_args()
    daemons = [tuple(d.split("=", 1)) for d in args.daemon]
    for _, path in daemons + ([("floor", args.floor)] if args.floor else []):
        if not os.access(path, os.X_OK):
            sys.exit(f"startup: {path} is not an executable")

    work = tempfile.mkdtemp(prefix="fiskil-startup-")
    port = free_port()
    ca = os.path.join(work, "ca.pem")
    stand_in = subprocess.Popen(
        [args.stand_in, "--listen", f"127.0.0.1:{port}", "--ca-out", ca, "--expires-in", "900",
         "--client-id", "bench-id", "--client-secret", "bench-secret"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stand_in.stdout.readline()
    credentials = os.path.join(work, "credentials")
    os.mkdir(credentials)
    for key, value in (("client_id", "bench-id"), ("client_secret", "bench-secret")):
        with open(os.path.join(credentials, key), "w") as f:
            f.write(value + "\n")
    url = f"https://localhost:{port}/v1/token"
    id_file = os.path.join(credentials, "client_id")
    secret_file = os.path.join(credentials, "client_secret")
    env = dict(os.environ, FISKIL_LOG_LEVEL="warn")
    env.pop("RUST_LOG", None)

    def command(label, path, token, extra=()):
        if label == "floor":
            return [path, url, ca, id_file, secret_file, token]
        return [path, "--token-url", url, "--ca-file", ca, "--client-id-file", id_file,
                "--client-secret-file", secret_file, "--token-file", token,
                "--listen", "127.0.0.1:0", *extra]

    contenders = daemons + ([("floor", args.floor)] if args.floor else [])
    walls = {label: [] for label, _ in contenders}
    costs = {label: [] for label, _ in contenders}
    memory = {}
    try:
        for run in range(args.runs):
            for label, path in contenders:
                token = os.path.join(work, f"token-{label}")
                if os.path.exists(token):
                    os.remove(token)
                start = time.perf_counter()
                proc = subprocess.Popen(command(label, path, token), env=env,
                                        stderr=subprocess.DEVNULL)
                wait_for(lambda: os.path.exists(token), 10, f"{label}'s token", every=0.0002)
                walls[label].append((time.perf_counter() - start) * 1000)
                costs[label].append(cost(proc.pid))
                stop(proc)

        for label, path in contenders:
            token = os.path.join(work, f"token-{label}")
            if os.path.exists(token):
                os.remove(token)
            extra = ["--min-refresh-interval", "1ms"]
            proc = subprocess.Popen(command(label, path, token, extra), env=env,
                                    stderr=subprocess.DEVNULL)
            wait_for(lambda: os.path.exists(token), 10, f"{label}'s token", every=0.0002)
            time.sleep(0.5)
            first = (smaps_kib(proc.pid, "Anonymous"), smaps_kib(proc.pid, "Rss"))
            after = None
            if label != "floor" and args.refreshes:
                last = read(token)
                for i in range(args.refreshes):
                    os.kill(proc.pid, signal.SIGHUP)
                    wait_for(lambda: read(token) not in (None, last), 10, f"refresh {i + 1}")
                    last = read(token)
                time.sleep(0.5)
                after = (smaps_kib(proc.pid, "Anonymous"), smaps_kib(proc.pid, "Rss"))
            memory[label] = (first, after)
            stop(proc)

        phases = None
        if args.phases:
            path = dict(daemons)[args.phases]
            token = os.path.join(work, "token-phases")
            trace_env = dict(env, FISKIL_LOG_LEVEL="debug")
            at = {}
            for run in range(args.runs):
                if os.path.exists(token):
                    os.remove(token)
                log_path = os.path.join(work, f"phases-{run}.log")
                with open(log_path, "w") as log:
                    start_wall = time.time()
                    start = time.perf_counter()
                    proc = subprocess.Popen(command(args.phases, path, token), env=trace_env,
                                            stderr=log)
                    wait_for(lambda: os.path.exists(token), 10, "the traced token", every=0.0002)
                    at.setdefault("token file seen by the poller", []).append(
                        (time.perf_counter() - start) * 1000)
                    time.sleep(0.1)
                    stop(proc)
                with open(log_path) as log:
                    for line in log:
                        try:
                            entry = json.loads(line)
                        except ValueError:
                            continue
                        stamp = datetime.datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00"))
                        message = entry.get("message", "?")
                        if message in ("stopping", "stopped") or message in at and len(at[message]) > run:
                            continue
                        at.setdefault(message, []).append((stamp.timestamp() - start_wall) * 1000)
            phases = sorted(((m, statistics.median(v)) for m, v in at.items()), key=lambda p: p[1])
    finally:
        stand_in.send_signal(signal.SIGINT)
        stand_in.wait(timeout=10)

    floor = statistics.median(walls["floor"]) if args.floor else None
    print(f"| measure | {' | '.join(label for label, _ in contenders)} |")
    print("|---|" + "---|" * len(contenders))
    cells = []
    for label, _ in contenders:
        med = statistics.median(walls[label])
        ratio = f" ({med / floor:.2f}× floor)" if floor and label != "floor" else ""
        cells.append(f"{med:.1f} ms{ratio}; min {min(walls[label]):.1f}, max {max(walls[label]):.1f}")
    print(f"| start to token file (median of {args.runs}) | {' | '.join(cells)} |")
    cells = [f"{statistics.median(c for c, _ in costs[label]):.2f} ms" for label, _ in contenders]
    print(f"| CPU time when the token file was seen (median) | {' | '.join(cells)} |")
    cells = [f"{statistics.median(f for _, f in costs[label]):.0f}" for label, _ in contenders]
    print(f"| minor page faults when the token file was seen (median) | {' | '.join(cells)} |")
    cells = [f"{memory[label][0][0]} KiB (RSS {memory[label][0][1]} KiB)" for label, _ in contenders]
    print(f"| anonymous memory after the first token | {' | '.join(cells)} |")
    cells = []
    for label, _ in contenders:
        after = memory[label][1]
        cells.append(f"{after[0]} KiB (RSS {after[1]} KiB)" if after else "–")
    print(f"| anonymous memory after {args.refreshes} refreshes | {' | '.join(cells)} |")
    cells = [f"{os.path.getsize(path):,} bytes" for _, path in contenders]
    print(f"| binary size | {' | '.join(cells)} |")
    load = os.getloadavg()
    ssl = ", ".join(f"{name}={os.environ[name]}" for name in ("SSL_CERT_FILE", "SSL_CERT_DIR")
                    if os.environ.get(name)) or "neither SSL_CERT_FILE nor SSL_CERT_DIR set"
    print(f"\n{os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; "
          f"{datetime.date.today()}; {ssl}")
    if phases:
        print(f"\nStart-up of {args.phases} at --log-level debug (ms from process start, "
              f"median of {args.runs}):\n")
        print("| ms | line |")
        print("|---|---|")
        for message, at in phases:
            print(f"| {at:.2f} | {message} |")


if __name__ == "__main__":
    main()
