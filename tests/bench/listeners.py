#!/usr/bin/env python3
"""Benchmark of the daemon's listeners under hostile load, under the chart's 64 MiB limit.

Each phase starts a fresh daemon (proxy to the loopback HTTPS stand-in's API side, token
endpoint, health server) and prints one Markdown table at the end:

- memory: resident and anonymous memory idle, the peak under 64 keep-alive connections
  sending a mix through the proxy (small GETs, 256 KiB downloads, 64 KiB uploads), and
  10, 30 and 60 s after the load ends;
- heads: 300 connections (150 to the proxy, 150 to the health server) each sending 390 KiB
  of a request head and never finishing it: peak memory, and whether the daemon survived;
- churn: 500 connections from 127.0.0.2-241 to the health server, each sending half a head
  and reopened as soon as it is closed, while a probe from 127.0.0.250 asks /healthz every
  0.5 s with the chart's 2 s timeout: probes answered;
- descriptors: the daemon under `ulimit -n 1024`, 1,100 connections held to the proxy and
  200 each to the token endpoint and the health server; its open descriptors, whether a
  SIGHUP still rewrites the token file and /healthz answers.

Where this runs as root on a cgroup v1 memory hierarchy, each daemon runs in a child memory
cgroup of this process's own, limited to 64 MiB (removed afterwards); OOM kills are counted.
Elsewhere the limit is not applied and the table says so.

Usage: tests/bench/listeners.py [--daemon PATH] [--stand-in PATH] [--load-seconds 20]
Build first: cargo build --release --workspace.
"""

import argparse
import http.client
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from bench import free_port, stop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIMIT = 64 * 1024 * 1024


def status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def wait_port(port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"bench: port {port} never opened")


class MemoryCgroup:
    """A child of this process's memory cgroup (v1), limited to 64 MiB; None where impossible."""

    @staticmethod
    def create(name):
        if os.geteuid() != 0:
            return None
        own = None
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.strip().split(":", 2)
                if "memory" in controllers.split(","):
                    own = path
        base = "/sys/fs/cgroup/memory"
        if own is None or not os.path.isdir(base + own):
            return None
        path = f"{base}{own.rstrip('/')}/{name}"
        try:
            os.mkdir(path)
            with open(f"{path}/memory.limit_in_bytes", "w") as f:
                f.write(str(LIMIT))
        except OSError:
            return None
        return MemoryCgroup(path)

    def __init__(self, path):
        self.path = path

    def read(self, name):
        with open(f"{self.path}/{name}") as f:
            return f.read()

    def oom_kills(self):
        for line in self.read("memory.oom_control").splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def remove(self):
        for _ in range(50):
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.1)


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="fiskil-listeners-bench-")
        self.stand_in_port = free_port()
        self.ca = os.path.join(self.work, "ca.pem")
        self.stand_in = subprocess.Popen(
            [args.stand_in, "--listen", f"127.0.0.1:{self.stand_in_port}", "--ca-out", self.ca,
             "--expires-in", "900", "--client-id", "bench-id", "--client-secret", "bench-secret",
             "--api"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.stand_in.stdout.readline()
        credentials = os.path.join(self.work, "credentials")
        os.mkdir(credentials)
        for key, value in (("client_id", "bench-id"), ("client_secret", "bench-secret")):
            with open(os.path.join(credentials, key), "w") as f:
                f.write(value + "\n")
        self.credentials = credentials
        self.limited = None
        self.runs = 0

    def start(self, wrapper=""):
        """A fresh daemon; returns (process, ports, cgroup)."""
        self.runs += 1
        ports = {"admin": free_port(), "proxy": free_port(), "token": free_port()}
        token = os.path.join(self.work, "token")
        if os.path.exists(token):
            os.remove(token)
        cgroup = MemoryCgroup.create(f"fiskil-listeners-bench-{os.getpid()}-{self.runs}")
        self.limited = cgroup is not None
        enter = f"echo $$ > {cgroup.path}/cgroup.procs && " if cgroup else ""
        command = [
            "sh", "-c", f'{enter}{wrapper}exec "$0" "$@"', self.args.daemon,
            "--token-url", f"https://localhost:{self.stand_in_port}/v1/token", "--ca-file", self.ca,
            "--client-id-file", os.path.join(self.credentials, "client_id"),
            "--client-secret-file", os.path.join(self.credentials, "client_secret"),
            "--token-file", token, "--listen", f"127.0.0.1:{ports['admin']}",
            "--proxy-listen", f"127.0.0.1:{ports['proxy']}",
            "--proxy-upstream", f"https://localhost:{self.stand_in_port}",
            "--token-listen", f"127.0.0.1:{ports['token']}",
        ]
        env = dict(os.environ, FISKIL_LOG_LEVEL="warn")
        proc = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        for port in ports.values():
            wait_port(port)
        deadline = time.monotonic() + 10
        while not os.path.exists(token) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1)
        return proc, ports, cgroup, token

    def stop(self, proc, cgroup):
        if proc.poll() is None:
            stop(proc)
        if cgroup:
            cgroup.remove()

    def close(self):
        self.stand_in.terminate()
        self.stand_in.wait()
        subprocess.run(["rm", "-rf", self.work], check=False)


def healthz_answers(port):
    """Whether the health server on `port` answers GET /healthz with 200 within 5 s."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/healthz")
        return c.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False


def mib(kib):
    return "–" if kib is None else f"{kib / 1024:.1f} MiB"


def memory_phase(bench, results):
    proc, ports, cgroup, _ = bench.start()
    pid = proc.pid
    idle = (status_kib(pid, "VmRSS"), status_kib(pid, "RssAnon"))
    stop = threading.Event()
    counts = {"ok": 0, "failed": 0}
    upload = b"u" * (64 * 1024)

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", ports["proxy"], timeout=30)
        i = 0
        while not stop.is_set():
            i += 1
            try:
                if i % 3 == 0:
                    conn.request("GET", "/download/262144")
                elif i % 3 == 1:
                    conn.request("POST", "/echo/upload", body=upload,
                                 headers={"Content-Type": "application/octet-stream"})
                else:
                    conn.request("GET", "/v1/accounts?limit=10")
                response = conn.getresponse()
                response.read()
                counts["ok" if response.status == 200 else "failed"] += 1
            except (OSError, http.client.HTTPException):
                counts["failed"] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", ports["proxy"], timeout=30)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(64)]
    for t in threads:
        t.start()
    peak_rss = peak_anon = 0
    end = time.monotonic() + bench.args.load_seconds
    while time.monotonic() < end:
        peak_rss = max(peak_rss, status_kib(pid, "VmRSS") or 0)
        peak_anon = max(peak_anon, status_kib(pid, "RssAnon") or 0)
        time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    stopped = time.monotonic()
    after = {}
    for mark in (10, 30, 60):
        time.sleep(max(0, stopped + mark - time.monotonic()))
        after[mark] = (status_kib(pid, "VmRSS"), status_kib(pid, "RssAnon"))
    results.append(("resident / anonymous memory, idle with the proxy configured",
                    f"{mib(idle[0])} / {mib(idle[1])}"))
    results.append((f"peak under 64 keep-alive connections for {bench.args.load_seconds} s "
                    f"({counts['ok']} requests answered 200, {counts['failed']} not)",
                    f"{mib(peak_rss)} / {mib(peak_anon)}"))
    for mark, (rss, anon) in after.items():
        results.append((f"{mark} s after the load ended", f"{mib(rss)} / {mib(anon)}"))
    results.append(("anonymous memory 30 s after the load, above idle",
                    f"{(after[30][1] - idle[1]) / 1024:+.1f} MiB"))
    bench.stop(proc, cgroup)


def heads_phase(bench, results):
    proc, ports, cgroup, _ = bench.start()
    pid = proc.pid
    # Four long header lines (hyper takes at most 100 headers), no blank line to end the head.
    head = b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n" + (b"X-Filler: " + b"a" * (97 * 1024) + b"\r\n") * 4
    held = []
    peak = 0
    for port in (ports["proxy"], ports["admin"]):
        for _ in range(150):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.settimeout(5)
                s.sendall(head)
            except OSError:
                pass
            else:
                held.append(s)
            peak = max(peak, status_kib(pid, "VmRSS") or 0)
    time.sleep(2)
    peak = max(peak, status_kib(pid, "VmRSS") or 0)
    alive = proc.poll() is None
    oom = cgroup.oom_kills() if cgroup else None
    answered = alive and healthz_answers(ports["admin"])
    for s in held:
        s.close()
    results.append(("300 unfinished 390 KiB request heads: peak resident memory", mib(peak)))
    results.append(("... the daemon survived / OOM kills / /healthz answered",
                    f"{'yes' if alive else 'no'} / {'–' if oom is None else oom} / "
                    f"{'yes' if answered else 'no'}"))
    bench.stop(proc, cgroup)


def churn_phase(bench, results):
    proc, ports, cgroup, _ = bench.start()
    target = ("127.0.0.1", ports["admin"])
    stop = threading.Event()
    opened = [0]

    def open_one(n):
        s = socket.socket()
        s.bind((f"127.0.0.{2 + n % 240}", 0))
        s.settimeout(2)
        s.connect(target)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        s.setblocking(False)
        opened[0] += 1
        return s

    def churner(first, count):
        sel = selectors.DefaultSelector()
        n = first
        for _ in range(count):
            try:
                sel.register(open_one(n), selectors.EVENT_READ)
            except OSError:
                pass
            n += 10
        while not stop.is_set():
            for key, _ in sel.select(timeout=0.05):
                s = key.fileobj
                try:
                    data = s.recv(512)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(s)
                    s.close()
                    n += 10
                    try:
                        sel.register(open_one(n), selectors.EVENT_READ)
                    except OSError:
                        pass
        for key in list(sel.get_map().values()):
            key.fileobj.close()

    threads = [threading.Thread(target=churner, args=(i, 50)) for i in range(10)]
    for t in threads:
        t.start()
    time.sleep(3)
    answered = 0
    probes = 20
    for _ in range(probes):
        try:
            s = socket.socket()
            s.bind(("127.0.0.250", 0))
            s.settimeout(2)
            s.connect(target)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
            if answer.startswith(b"HTTP/1.1 200"):
                answered += 1
        except OSError:
            pass
        finally:
            s.close()
        time.sleep(0.5)
    fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
    stop.set()
    for t in threads:
        t.join()
    results.append(("probes answered (2 s timeout) while 500 connections from other addresses churn",
                    f"{answered} of {probes} ({opened[0]} connections opened; daemon {fds} descriptors)"))
    bench.stop(proc, cgroup)


def descriptors_phase(bench, results):
    proc, ports, cgroup, token = bench.start(wrapper="ulimit -n 1024 && ")
    held = []
    for port, count in ((ports["proxy"], 1100), (ports["token"], 200), (ports["admin"], 200)):
        for _ in range(count):
            try:
                held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            except OSError:
                pass
    time.sleep(1)
    fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
    with open(token) as f:
        before = f.read()
    proc.send_signal(signal.SIGHUP)
    rewritten = False
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not rewritten:
        with open(token) as f:
            rewritten = f.read() != before
        time.sleep(0.1)
    answered = healthz_answers(ports["admin"])
    for s in held:
        s.close()
    results.append((f"{len(held)} connections held, ulimit -n 1024: daemon descriptors", str(fds)))
    results.append(("... token file rewritten after SIGHUP / /healthz answered",
                    f"{'yes' if rewritten else 'no'} / {'yes' if answered else 'no'}"))
    bench.stop(proc, cgroup)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--daemon", default=os.path.join(ROOT, "target", "release", "fiskil-token-refresher"))
    parser.add_argument("--stand-in", default=os.path.join(ROOT, "target", "release", "fiskil-stand-in"))
    parser.add_argument("--load-seconds", type=int, default=20)
    parser.add_argument("--phases", default="memory,heads,churn,descriptors")
    args = parser.parse_args()
    for binary in (args.daemon, args.stand_in):
        if not os.path.exists(binary):
            sys.exit(f"bench: {binary} is missing; run cargo build --release --workspace")
    bench = Bench(args)
    results = []
    phases = {"memory": memory_phase, "heads": heads_phase, "churn": churn_phase,
              "descriptors": descriptors_phase}
    try:
        for name in args.phases.split(","):
            phases[name](bench, results)
            print(f"phase {name} done", file=sys.stderr)
    finally:
        bench.close()
    print()
    print("| measure | value |")
    print("|---|---|")
    for measure, value in results:
        print(f"| {measure} | {value} |")
    print()
    limit = "under a 64 MiB memory cgroup" if bench.limited else "without a memory limit (not root or no cgroup v1 memory controller)"
    print(f"{args.daemon}; {limit}; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
