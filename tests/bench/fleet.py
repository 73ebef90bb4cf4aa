#!/usr/bin/env python3
"""Benchmark of the Secret writer for fleets on a real control plane (tests/cluster/up.sh).

Measures, with the release daemon and the loopback HTTPS stand-in:
- takeover after SIGKILL of the leader of three writers: from the kill to the Lease watch
  showing a new holder (median and max over --runs kills);
- handover after SIGTERM of the leader, the same way;
- token exchanges per hour for N namespaces: one writer fanning out to N Secrets against N
  independent writers (one per namespace, as N sidecars each exchange for themselves), both
  measured over --rate-seconds with --rate-lifetime tokens and scaled to 900 s tokens
  (exchanges scale with 1/lifetime), next to the schedule's own arithmetic;
- resident memory (VmRSS, and the peak VmHWM) of one writer with N targets after that run, and
  of the followers standing by during the takeover runs.
Prints a Markdown table.

Usage: tests/bench/fleet.py --cluster-dir DIR [--runs 10] [--lease-seconds 15] [--targets 10]
                            [--rate-seconds 90] [--rate-lifetime 10] [--daemon PATH]
Build first: cargo build --release --workspace. The writers run with the cluster's admin
kubeconfig (RBAC is proven by tests/leader_election.rs, not here).
"""

import argparse
import http.client
import json
import os
import random
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from bench import free_port
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DAEMON = os.path.join(ROOT, "target", "release", "fiskil-token-refresher")
STAND_IN = os.path.join(ROOT, "target", "release", "fiskil-stand-in")
SECRET = "fiskil-token"


def wait_for(check, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            sys.exit(f"bench: timed out waiting for {what}")
        time.sleep(0.01)


def proc_status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field}")


class Api:
    """The API server as the cluster's admin, over its client certificate."""

    def __init__(self, cluster_dir):
        self.settings = {}
        with open(os.path.join(cluster_dir, "cluster.env")) as f:
            for line in f:
                if "=" in line and not line.startswith("#"):
                    key, value = line.strip().split("=", 1)
                    self.settings[key] = value.strip("'\"")
        server = urllib.parse.urlparse(self.settings["FISKIL_CLUSTER_SERVER"])
        self.host, self.port = server.hostname, server.port
        self.context = ssl.create_default_context(cafile=self.settings["FISKIL_CLUSTER_CA"])
        self.context.load_cert_chain(self.settings["FISKIL_CLUSTER_ADMIN_CERT"],
                                     self.settings["FISKIL_CLUSTER_ADMIN_KEY"])
        self.kubeconfig = self.settings["FISKIL_CLUSTER_KUBECONFIG"]

    def connection(self, timeout=30):
        return http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=timeout)

    def call(self, method, path, body=None):
        conn = self.connection()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
        return json.loads(data) if data else None

    def namespace(self, name):
        self.call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": name}})


class LeaseWatch(threading.Thread):
    """Records (monotonic arrival time, holder, leaseTransitions) of every Lease version."""

    def __init__(self, api, namespace, name):
        super().__init__(daemon=True)
        self.api, self.namespace, self.name = api, namespace, name
        self.events = []
        self.lock = threading.Lock()

    def run(self):
        rv = ""
        while True:
            conn = self.api.connection(timeout=None)
            conn.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"
                                f"?watch=true&fieldSelector=metadata.name%3D{self.name}"
                                f"&resourceVersion={rv}&timeoutSeconds=600")
            response = conn.getresponse()
            while True:
                line = response.readline()
                if not line:
                    break
                arrived = time.monotonic()
                event = json.loads(line)
                if event["type"] == "ERROR":
                    rv = ""
                    break
                lease = event["object"]
                rv = lease["metadata"]["resourceVersion"]
                spec = lease.get("spec", {})
                with self.lock:
                    self.events.append((arrived, spec.get("holderIdentity") or None,
                                        spec.get("leaseTransitions", 0)))
            conn.close()

    def snapshot(self):
        with self.lock:
            return list(self.events)


class StandIn:
    def __init__(self, work, lifetime):
        self.port = free_port()
        self.ca = os.path.join(work, "stand-in-ca.pem")
        self.proc = subprocess.Popen(
            [STAND_IN, "--listen", f"127.0.0.1:{self.port}", "--ca-out", self.ca, "--expires-in",
             str(lifetime), "--client-id", "bench-id", "--client-secret", "bench-secret", "--control"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.proc.stdout.readline()
        self.context = ssl.create_default_context(cafile=self.ca)
        self.credentials = os.path.join(work, "credentials")
        os.makedirs(self.credentials, exist_ok=True)
        for key, value in (("client_id", "bench-id"), ("client_secret", "bench-secret")):
            with open(os.path.join(self.credentials, key), "w") as f:
                f.write(value + "\n")

    def control(self, method, path, body=None):
        conn = http.client.HTTPSConnection("localhost", self.port, context=self.context, timeout=10)
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"Content-Type": "application/json"})
        data = conn.getresponse().read()
        conn.close()
        return json.loads(data)

    def token_requests(self):
        return self.control("GET", "/control/stats")["token_requests"]

    def lifetime(self, seconds):
        self.control("POST", "/control/behaviour", {"behaviour": "issue", "expires_in": seconds})

    def args(self):
        return ["--token-url", f"https://localhost:{self.port}/v1/token", "--ca-file", self.ca,
                "--client-id-file", os.path.join(self.credentials, "client_id"),
                "--client-secret-file", os.path.join(self.credentials, "client_secret"),
                "--listen", "127.0.0.1:0"]

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=10)


def spawn(daemon, stand_in, api, identity, home, extra):
    env = dict(os.environ, KUBECONFIG=api.kubeconfig, POD_NAME=identity, POD_NAMESPACE=home,
               FISKIL_LOG_LEVEL="warn")
    return subprocess.Popen([daemon] + stand_in.args() + extra, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def handovers(args, api, stand_in, home, target, sig, runs):
    """Times from sending `sig` to the leader to the Lease watch showing another holder."""
    lease = f"bench-{sig.name.lower()}"
    watch = LeaseWatch(api, home, lease)
    watch.start()
    time.sleep(0.5)
    extra = ["--leader-elect", "--lease-name", lease, "--lease-duration", f"{args.lease_seconds}s",
             "--secret", target]
    counter = iter(range(10_000))
    writers = {}
    for _ in range(3):
        name = f"{lease}-{next(counter)}"
        writers[name] = spawn(args.daemon, stand_in, api, name, home, extra)
    retry = args.lease_seconds * 2 / 15
    times = []
    standby = []
    try:
        for _ in range(runs):
            # Settled: the holder renewed twice since it took over, and every writer is up.
            def settled():
                events = watch.snapshot()
                if not events or events[-1][1] is None or events[-1][1] not in writers:
                    return None
                holder = events[-1][1]
                mine = [e for e in events if e[1] == holder]
                return holder if len(mine) >= 3 else None
            holder = wait_for(settled, args.lease_seconds * 4 + 30, "a settled leader")
            standby += [proc_status(p.pid, "VmRSS") for name, p in writers.items() if name != holder]
            time.sleep(random.uniform(0, retry) + 2 * retry)
            seen = len(watch.snapshot())
            sent = time.monotonic()
            writers[holder].send_signal(sig)
            arrived = wait_for(
                lambda: next((e[0] for e in watch.snapshot()[seen:] if e[1] not in (None, holder)), None),
                args.lease_seconds * 4 + 30, "a new holder")
            times.append(arrived - sent)
            writers.pop(holder).wait(timeout=30)
            name = f"{lease}-{next(counter)}"
            writers[name] = spawn(args.daemon, stand_in, api, name, home, extra)
    finally:
        for proc in writers.values():
            stop(proc)
    return times, standby


def exchanges_per_hour(args, api, stand_in, home, targets):
    """One writer with every target, then one writer per target, each over --rate-seconds."""
    stand_in.lifetime(args.rate_lifetime)
    results = {}
    secrets = []
    for t in targets:
        secrets += ["--secret", t]
    before = stand_in.token_requests()
    one = spawn(args.daemon, stand_in, api, "bench-fanout", home,
                secrets + ["--leader-elect", "--lease-name", "bench-fanout", "--events"])
    time.sleep(args.rate_seconds)
    results["one"] = stand_in.token_requests() - before
    rss, hwm = proc_status(one.pid, "VmRSS"), proc_status(one.pid, "VmHWM")
    stop(one)
    before = stand_in.token_requests()
    many = [spawn(args.daemon, stand_in, api, f"bench-sidecar-{i}", home, ["--secret", t])
            for i, t in enumerate(targets)]
    time.sleep(args.rate_seconds)
    results["many"] = stand_in.token_requests() - before
    for proc in many:
        stop(proc)
    return results, rss, hwm


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cluster-dir", required=True)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--lease-seconds", type=int, default=15)
    parser.add_argument("--targets", type=int, default=10)
    parser.add_argument("--rate-seconds", type=int, default=90)
    parser.add_argument("--rate-lifetime", type=int, default=10)
    parser.add_argument("--daemon", default=DAEMON)
    args = parser.parse_args()
    for binary in (args.daemon, STAND_IN):
        if not os.path.exists(binary):
            sys.exit(f"bench: {binary} is missing; run cargo build --release --workspace")

    api = Api(args.cluster_dir)
    work = tempfile.mkdtemp(prefix="fiskil-bench-fleet-")
    stand_in = StandIn(work, 900)
    prefix = f"bench-fleet-{os.getpid()}"
    home = prefix
    api.namespace(home)
    targets = []
    for i in range(args.targets):
        api.namespace(f"{prefix}-t{i}")
        targets.append(f"{prefix}-t{i}/{SECRET}")
    rows = []
    try:
        kills, standby = handovers(args, api, stand_in, home, targets[0], signal.SIGKILL, args.runs)
        terms, _ = handovers(args, api, stand_in, home, targets[0], signal.SIGTERM, args.runs)
        for label, times in (("takeover after SIGKILL of the leader", kills),
                             ("handover after SIGTERM of the leader", terms)):
            rows.append((f"{label} (lease {args.lease_seconds} s, {len(times)} runs, signal to Lease watch)",
                         "median %.2f s, min %.2f s, max %.2f s" % (statistics.median(times), min(times),
                                                                    max(times))))
        counts, rss, hwm = exchanges_per_hour(args, api, stand_in, home, targets)
        scale = 3600 / args.rate_seconds * args.rate_lifetime / 900
        n = len(targets)
        # Refresh at 75-80 % of the lifetime (ratio 0.8, jitter 0.05): 3600 / (0.775 * 900).
        schedule = 3600 / (0.775 * 900)
        rows.append((f"token exchanges per hour, {n} namespaces, one writer (measured {counts['one']} in "
                     f"{args.rate_seconds} s with {args.rate_lifetime} s tokens, scaled to 900 s)",
                     "%.1f (schedule: %.1f)" % (counts["one"] * scale, schedule)))
        rows.append((f"token exchanges per hour, {n} namespaces, {n} sidecars (measured {counts['many']} "
                     f"in {args.rate_seconds} s, scaled to 900 s)",
                     "%.1f (schedule: %.1f)" % (counts["many"] * scale, schedule * n)))
        rows.append((f"resident memory of one writer with {n} targets, --leader-elect --events, "
                     f"after {args.rate_seconds} s of {args.rate_lifetime} s tokens",
                     "VmRSS %.1f MiB, VmHWM %.1f MiB" % (rss / 1024, hwm / 1024)))
        rows.append(("resident memory of a follower (standby), one target",
                     "VmRSS median %.1f MiB, max %.1f MiB" % (statistics.median(standby) / 1024,
                                                              max(standby) / 1024)))
    finally:
        stand_in.stop()
    print("| measure | result |")
    print("| --- | --- |")
    for label, value in rows:
        print(f"| {label} | {value} |")


if __name__ == "__main__":
    main()
