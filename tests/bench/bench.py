#!/usr/bin/env python3
"""Benchmark of the release daemon against the loopback HTTPS stand-in.

Measures time from process start to the first token file, the daemon's own CPU time for
that, resident memory after the first token and after 1,000 refreshes, CPU used over an
idle minute, and the stripped binary size. Prints a Markdown table.

With --cluster-dir DIR (a control plane from tests/cluster/up.sh DIR) it also measures the
Secret output: resident memory with it on, and the time from the token file changing to the
Secret holding the same token.

Usage: tests/bench/bench.py [--idle-seconds 60] [--refreshes 1000] [--runs 20] [--cluster-dir DIR]
                            [--daemon PATH]
Build first: cargo build --release --workspace. --daemon measures another build of the daemon,
e.g. the static musl binary the container image ships (tests/deploy/static-binary.sh).
"""

import argparse
import base64
import json
import os
import resource
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DAEMON = os.path.join(ROOT, "target", "release", "fiskil-token-refresher")
STAND_IN = os.path.join(ROOT, "target", "release", "fiskil-stand-in")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wait_for(check, timeout, what, every=0.0005):
    """Polls check() every `every` seconds; exits naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            sys.exit(f"bench: timed out waiting for {what}")
        time.sleep(every)


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def stop(proc):
    """SIGTERM, then SIGKILL if the process has not exited within 10 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cluster_settings(cluster_dir):
    settings = {}
    with open(os.path.join(cluster_dir, "cluster.env")) as f:
        for line in f:
            if "=" in line and not line.startswith("#"):
                key, value = line.strip().split("=", 1)
                settings[key] = value
    return settings


def secret_token(settings, context, name):
    url = f"{settings['FISKIL_CLUSTER_SERVER']}/api/v1/namespaces/default/secrets/{name}"
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            data = json.load(response).get("data", {})
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise
    return base64.b64decode(data["token"]).decode() if "token" in data else None


def bench_secret(args, base, env, token):
    """Memory with the Secret output on, and token-file-to-Secret latency."""
    settings = cluster_settings(args.cluster_dir)
    context = ssl.create_default_context(cafile=settings["FISKIL_CLUSTER_CA"])
    context.load_cert_chain(settings["FISKIL_CLUSTER_ADMIN_CERT"], settings["FISKIL_CLUSTER_ADMIN_KEY"])
    name = "bench-token-%d" % os.getpid()
    env = dict(env, KUBECONFIG=settings["FISKIL_CLUSTER_KUBECONFIG"])
    if os.path.exists(token):
        os.remove(token)
    proc = subprocess.Popen(base + ["--secret-name", name, "--secret-namespace", "default"],
                            env=env, stderr=subprocess.DEVNULL)
    results = []
    try:
        wait_for(lambda: os.path.exists(token), 10, "the first token")
        wait_for(lambda: secret_token(settings, context, name) == read(token), 10, "the first Secret")
        time.sleep(0.5)
        first_rss = rss_kib(proc.pid)
        delays = []
        last = read(token)
        for i in range(args.secret_refreshes):
            os.kill(proc.pid, signal.SIGHUP)
            wait_for(lambda: read(token) not in (None, last), 10, f"refresh {i + 1}")
            last = read(token)
            changed = time.perf_counter()
            wait_for(lambda: secret_token(settings, context, name) == last, 10, "the Secret")
            delays.append((time.perf_counter() - changed) * 1000)
        time.sleep(0.5)
        after_rss = rss_kib(proc.pid)
        results.append(("resident memory with the Secret output, after the first token",
                        "%.1f MiB" % (first_rss / 1024)))
        results.append(("resident memory with the Secret output, after %d refreshes" % args.secret_refreshes,
                        "%.1f MiB (%+d KiB)" % (after_rss / 1024, after_rss - first_rss)))
        results.append(("token file written to Secret holding the token (median of %d, incl. polling)"
                        % args.secret_refreshes,
                        "%.1f ms (p90 %.1f)" % (statistics.median(delays),
                                                sorted(delays)[int(len(delays) * 0.9) - 1])))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-seconds", type=int, default=60)
    parser.add_argument("--refreshes", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--cluster-dir", help="control plane from tests/cluster/up.sh, to bench the Secret output")
    parser.add_argument("--secret-refreshes", type=int, default=100)
    parser.add_argument("--daemon", default=DAEMON, help="the daemon binary to measure")
    args = parser.parse_args()
    for binary in (args.daemon, STAND_IN):
        if not os.path.exists(binary):
            sys.exit(f"bench: {binary} is missing; run cargo build --release --workspace")

    work = tempfile.mkdtemp(prefix="fiskil-bench-")
    port = free_port()
    ca = os.path.join(work, "ca.pem")
    stand_in = subprocess.Popen(
        [STAND_IN, "--listen", f"127.0.0.1:{port}", "--ca-out", ca, "--expires-in", "900",
         "--client-id", "bench-id", "--client-secret", "bench-secret"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stand_in.stdout.readline()
    token = os.path.join(work, "token")
    credentials = os.path.join(work, "credentials")
    os.mkdir(credentials)
    for key, value in (("client_id", "bench-id"), ("client_secret", "bench-secret")):
        with open(os.path.join(credentials, key), "w") as f:
            f.write(value + "\n")
    env = dict(os.environ, FISKIL_LOG_LEVEL="warn")
    base = [args.daemon, "--token-url", f"https://localhost:{port}/v1/token", "--ca-file", ca,
            "--client-id-file", os.path.join(credentials, "client_id"),
            "--client-secret-file", os.path.join(credentials, "client_secret"),
            "--token-file", token, "--listen", "127.0.0.1:0"]
    results = []
    try:
        # Time to first token: process start to the file appearing (daemon mode), and the
        # daemon's own CPU time for a whole --once run.
        walls, cpus = [], []
        for _ in range(args.runs):
            if os.path.exists(token):
                os.remove(token)
            start = time.perf_counter()
            proc = subprocess.Popen(base, env=env, stderr=subprocess.DEVNULL)
            wait_for(lambda: os.path.exists(token), 10, "the first token")
            walls.append((time.perf_counter() - start) * 1000)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(base + ["--once"], env=env, stderr=subprocess.DEVNULL, check=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) * 1000)
        results.append(("time from start to first token file (median of %d)" % args.runs,
                        "%.1f ms (min %.1f, max %.1f)" % (statistics.median(walls), min(walls), max(walls))))
        results.append(("daemon CPU time for a whole --once run (median)",
                        "%.1f ms" % statistics.median(cpus)))

        # Memory after the first token and after N refreshes (SIGHUP-driven), then idle CPU.
        os.remove(token)
        proc = subprocess.Popen(base, env=env, stderr=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(token), 10, "the first token")
        time.sleep(0.5)
        first_rss = rss_kib(proc.pid)
        last = read(token)
        start = time.perf_counter()
        for i in range(args.refreshes):
            os.kill(proc.pid, signal.SIGHUP)
            wait_for(lambda: read(token) not in (None, last), 10, f"refresh {i + 1}")
            last = read(token)
        per_refresh = (time.perf_counter() - start) / args.refreshes * 1000
        time.sleep(0.5)
        after_rss = rss_kib(proc.pid)
        results.append(("resident memory after the first token", "%.1f MiB" % (first_rss / 1024)))
        results.append(("resident memory after %d refreshes" % args.refreshes,
                        "%.1f MiB (%+d KiB)" % (after_rss / 1024, after_rss - first_rss)))
        results.append(("refresh round trip, SIGHUP to new file (mean)", "%.2f ms" % per_refresh))
        cpu_before = cpu_seconds(proc.pid)
        time.sleep(args.idle_seconds)
        cpu_used = cpu_seconds(proc.pid) - cpu_before
        results.append(("CPU time used over %d s idle" % args.idle_seconds,
                        "%.0f ms (%.4f%% of one core)" % (cpu_used * 1000, cpu_used / args.idle_seconds * 100)))
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        if args.cluster_dir:
            results.extend(bench_secret(args, base, env, token))
        size = os.path.getsize(args.daemon)
        results.append(("release binary size (stripped)", "%.2f MB (%d bytes)" % (size / 1e6, size)))
    finally:
        stand_in.send_signal(signal.SIGINT)
        stand_in.wait(timeout=10)

    print("| measure | value |")
    print("|---|---|")
    for name, value in results:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
