#!/usr/bin/env python3
"""Side-by-side benchmark of token sidecars against the loopback HTTPS stand-in.

Runs, in one go and on the same machine, fiskil-token-refresher (release build), the
do-it-yourself shell loop (diy-sidecar.sh: sh + curl + jq) and, when a binary is given, a
generic OAuth2 client-credentials token refresher with a file output (observatorium's
token-refresher flags). Each gets its own stand-in process (same binary, same settings) so
that requests can be counted per contender. Prints a Markdown table.

Phases (all loops are bounded in count and time; all traffic is on 127.0.0.1):
  1. sizes of the executables (and of the shared libraries they load);
  2. time from start to the first token file, --startup-runs times each, one at a time;
  3. an idle minute with long-lived tokens, all contenders at once: CPU time of each process
     tree and its resident memory, sampled;
  4. one contender at a time with --lifetime second tokens while 4 reader processes read the
     token file in a tight loop: bad reads, refreshes, peak memory, CPU per refresh;
  5. all contenders at once: the endpoint answers 500 for --fail-seconds, then recovers:
     what the token file holds meanwhile, requests sent, time to a new token afterwards.

Usage: compare.py --fiskil BIN --stand-in BIN --diy SCRIPT
                  [--oauth2-refresher BIN | --oauth2-missing REASON] [--oauth2-label TEXT]
                  [--idle-seconds 60] [--fail-seconds 60] [--reader-seconds 20]
                  [--lifetime 3] [--startup-runs 5] [--recovery-timeout 75] [--keep-work]
"""

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
TOKEN_RE = re.compile(rb"tok-[0-9]{4,}-[0-9a-f]{16}")
CLIENT_ID = "sbs-client"
CLIENT_SECRET = "sbs-secret"
# golang.org/x/oauth2 treats a token that expires within 10 s as already expired, so a
# refresher built on it never writes shorter-lived tokens: it gets at least this lifetime,
# with a --margin that keeps its refresh cadence at 80 % of the nominal lifetime.
OAUTH2_MIN_LIFETIME = 12


def log(message):
    print(f"[compare] {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- process trees


def tree(pid):
    """pid and all its live descendants."""
    found, todo = [], [pid]
    while todo and len(found) < 256:
        p = todo.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return found


def stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_snapshot(pid):
    """On-CPU nanoseconds of every live thread in the tree (schedstat), and the CPU time of
    each process's reaped children (cutime+cstime, in clock ticks)."""
    threads, children = {}, {}
    for p in tree(pid):
        try:
            children[p] = sum(int(x) for x in stat_fields(p)[13:15])
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/schedstat") as f:
                    threads[int(task)] = int(f.read().split()[0])
        except OSError:
            continue
    return threads, children


def cpu_ms_between(before, after):
    """CPU time a tree used between two snapshots: threads alive at the end (their time
    since the first snapshot, or all of it if they are new), plus children reaped meanwhile.
    Threads that ended in between are missed after their last snapshot; children that were
    alive at the first snapshot and reaped later count whole. Both are small here."""
    (t0, c0), (t1, c1) = before, after
    ns = sum(v - t0.get(tid, 0) for tid, v in t1.items())
    ticks = sum(v - c0.get(pid, 0) for pid, v in c1.items())
    return ns / 1e6 + ticks * 1000 / CLK_TCK


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(pid):
    return sum(rss_kib(p) for p in tree(pid))


class Sampler:
    """Samples the summed RSS of a process tree."""

    def __init__(self):
        self.values = []

    def sample(self, pid):
        value = tree_rss_kib(pid)
        if value:
            self.values.append(value)

    def peak(self):
        return max(self.values) if self.values else 0

    def mean(self):
        return statistics.mean(self.values) if self.values else 0


# ---------------------------------------------------------------- the stand-in


class StandIn:
    def __init__(self, binary, work, name, lifetime):
        self.port = free_port()
        self.ca = os.path.join(work, f"{name}-ca.pem")
        self.proc = subprocess.Popen(
            [binary, "--listen", f"127.0.0.1:{self.port}", "--ca-out", self.ca,
             "--expires-in", str(lifetime), "--client-id", CLIENT_ID,
             "--client-secret", CLIENT_SECRET, "--lenient", "--oauth2", "--control"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            start_new_session=True)
        line = self.proc.stdout.readline()
        if "token endpoint" not in line:
            sys.exit(f"compare: the stand-in did not start: {line!r}")
        self.context = ssl.create_default_context(cafile=self.ca)

    @property
    def fiskil_url(self):
        return f"https://localhost:{self.port}/v1/token"

    @property
    def issuer(self):
        return f"https://localhost:{self.port}"

    def _call(self, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"https://localhost:{self.port}{path}", data=data,
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, context=self.context, timeout=5) as response:
            return json.load(response)

    def behave(self, **behaviour):
        self._call("/control/behaviour", behaviour)

    def stats(self):
        return self._call("/control/stats")

    def stop(self):
        stop_process(self.proc, signal.SIGINT)


def stop_process(proc, sig=signal.SIGTERM):
    """Stops a process this script started, with the process group it leads."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    else:
        # The leader is gone; its group may not be (a shell's children).
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ---------------------------------------------------------------- contenders


class Contender:
    def __init__(self, key, label, available=True, reason=""):
        self.key, self.label, self.available, self.reason = key, label, available, reason

    def lifetime(self, wanted):
        """The token lifetime this contender is given when the others get `wanted`."""
        return wanted

    def start(self, stand_in, token_file, log_file, nominal):
        """Starts it; the stand-in must already issue self.lifetime(nominal) second tokens."""
        argv, env = self.command(stand_in, token_file, nominal)
        return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                stdout=log_file, stderr=log_file, start_new_session=True)


class Fiskil(Contender):
    def __init__(self, binary):
        super().__init__("fiskil", "fiskil-token-refresher")
        self.binary = binary

    def command(self, stand_in, token_file, nominal):
        # Credentials from files, as mounted from a Secret: the deployed configuration, with
        # its directory watch and periodic re-read.
        secrets = os.path.join(os.path.dirname(token_file), "fiskil-credentials")
        os.makedirs(secrets, exist_ok=True)
        for name, value in (("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)):
            with open(os.path.join(secrets, name), "w") as f:
                f.write(value)
        env = dict(os.environ, FISKIL_LOG_LEVEL="warn")
        for name in ("FISKIL_CLIENT_ID", "FISKIL_CLIENT_SECRET"):
            env.pop(name, None)
        return ([self.binary, "--token-url", stand_in.fiskil_url, "--ca-file", stand_in.ca,
                 "--client-id-file", os.path.join(secrets, "client_id"),
                 "--client-secret-file", os.path.join(secrets, "client_secret"),
                 "--token-file", token_file, "--listen", "127.0.0.1:0"], env)

    def executables(self):
        return [self.binary]


class Diy(Contender):
    def __init__(self, script):
        super().__init__("diy", "shell loop (sh + curl + jq)")
        self.script = script

    def command(self, stand_in, token_file, nominal):
        env = dict(os.environ, FISKIL_TOKEN_URL=stand_in.fiskil_url, FISKIL_CLIENT_ID=CLIENT_ID,
                   FISKIL_CLIENT_SECRET=CLIENT_SECRET, TOKEN_FILE=token_file,
                   CURL_CA_BUNDLE=stand_in.ca)
        return (["/bin/sh", self.script], env)

    def executables(self):
        return [os.path.realpath("/bin/sh")] + [
            os.path.realpath(shutil.which(name) or name) for name in ("curl", "jq", "sleep")]


class OAuth2Refresher(Contender):
    """observatorium/token-refresher's command line, file output mode."""

    def __init__(self, binary, label, reason=""):
        super().__init__("oauth2", label, available=bool(binary), reason=reason)
        self.binary = binary

    def lifetime(self, wanted):
        return max(wanted, OAUTH2_MIN_LIFETIME)

    def command(self, stand_in, token_file, nominal):
        # Refresh every 80 % of the nominal lifetime like the others: --margin is the time
        # left on the (possibly longer) token it is given.
        margin_ms = int((self.lifetime(nominal) - 0.8 * nominal) * 1000)
        env = dict(os.environ, SSL_CERT_FILE=stand_in.ca)
        return ([self.binary, "--oidc.issuer-url", stand_in.issuer,
                 "--oidc.client-id", CLIENT_ID, "--oidc.client-secret", CLIENT_SECRET,
                 "--file", token_file, "--margin", f"{margin_ms}ms",
                 "--web.internal.listen", "127.0.0.1:0", "--log.level", "warn"], env)

    def executables(self):
        return [self.binary]


# ---------------------------------------------------------------- token files


def read_file(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def token_of(content):
    """The token a file holds (one trailing newline allowed), else None."""
    if content is None:
        return None
    stripped = content[:-1] if content.endswith(b"\n") else content
    return stripped if TOKEN_RE.fullmatch(stripped) else None


def wait_for_token(path, timeout, proc=None, differs_from=None):
    """Seconds until the file holds a valid token (other than differs_from), or None."""
    start = time.perf_counter()
    deadline = start + timeout
    while time.perf_counter() < deadline:
        token = token_of(read_file(path))
        if token is not None and token != differs_from:
            return time.perf_counter() - start
        if proc is not None and proc.poll() is not None:
            return None
        time.sleep(0.0005)
    return None


def reader(path, seconds, queue):
    """Reads the token file in a tight loop; counts reads and bad reads by kind."""
    counts = {"reads": 0, "missing": 0, "empty": 0, "other": 0}
    deadline = time.monotonic() + seconds
    n = 0
    while True:
        n += 1
        if n % 256 == 0 and time.monotonic() > deadline:
            break
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            counts["reads"] += 1
            counts["missing"] += 1
            continue
        try:
            content = os.read(fd, 65536)
        finally:
            os.close(fd)
        counts["reads"] += 1
        if not content:
            counts["empty"] += 1
        elif token_of(content) is None:
            counts["other"] += 1
    queue.put(counts)


# ---------------------------------------------------------------- measurements


def sizes(contender):
    """Size of the executables, and with the shared libraries they load (ldd)."""
    own, libraries = 0, set()
    for exe in contender.executables():
        own += os.path.getsize(exe)
        try:
            out = subprocess.run(["ldd", exe], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        for line in out.splitlines():
            match = re.search(r"(/\S+) \(0x", line)
            if match:
                libraries.add(os.path.realpath(match.group(1)))
    return own, own + sum(os.path.getsize(lib) for lib in libraries)


def measure_startup(contender, stand_in, work, runs):
    times = []
    token_file = os.path.join(work, f"{contender.key}-startup-token")
    with open(os.path.join(work, f"{contender.key}-startup.log"), "ab") as log_file:
        for _ in range(runs):
            if os.path.exists(token_file):
                os.remove(token_file)
            start = time.perf_counter()
            proc = contender.start(stand_in, token_file, log_file, 900)
            waited = wait_for_token(token_file, 15, proc)
            elapsed = time.perf_counter() - start
            stop_process(proc)
            if waited is None:
                return None
            times.append(elapsed * 1000)
    return times


def measure_idle(contenders, stand_ins, work, seconds):
    procs, results = {}, {}
    logs = {c.key: open(os.path.join(work, f"{c.key}-idle.log"), "ab") for c in contenders}
    try:
        for c in contenders:
            stand_ins[c.key].behave(behaviour="issue", expires_in=c.lifetime(900))
            token_file = os.path.join(work, f"{c.key}-idle-token")
            procs[c.key] = c.start(stand_ins[c.key], token_file, logs[c.key], 900)
            if wait_for_token(token_file, 15, procs[c.key]) is None:
                sys.exit(f"compare: {c.label} wrote no token for the idle minute")
        time.sleep(2)
        samplers = {c.key: Sampler() for c in contenders}
        before_requests = {c.key: stand_ins[c.key].stats()["token_requests"] for c in contenders}
        before = {c.key: cpu_snapshot(procs[c.key].pid) for c in contenders}
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            for c in contenders:
                samplers[c.key].sample(procs[c.key].pid)
            time.sleep(0.25)
        elapsed = time.monotonic() - start
        for c in contenders:
            results[c.key] = {
                "cpu_ms": cpu_ms_between(before[c.key], cpu_snapshot(procs[c.key].pid)),
                "seconds": elapsed,
                "rss_mean": samplers[c.key].mean(),
                "rss_peak": samplers[c.key].peak(),
                "requests": stand_ins[c.key].stats()["token_requests"] - before_requests[c.key],
            }
    finally:
        for proc in procs.values():
            stop_process(proc)
        for f in logs.values():
            f.close()
    return results


def measure_readers(contender, stand_in, work, seconds, lifetime, readers=4):
    stand_in.behave(behaviour="issue", expires_in=contender.lifetime(lifetime))
    token_file = os.path.join(work, f"{contender.key}-readers-token")
    with open(os.path.join(work, f"{contender.key}-readers.log"), "ab") as log_file:
        proc = contender.start(stand_in, token_file, log_file, lifetime)
        try:
            if wait_for_token(token_file, 20, proc) is None:
                return None
            issued_before = stand_in.stats()["issued"]
            queue = multiprocessing.Queue()
            workers = [multiprocessing.Process(target=reader, args=(token_file, seconds, queue))
                       for _ in range(readers)]
            cpu_before = cpu_snapshot(proc.pid)
            for w in workers:
                w.start()
            sampler = Sampler()
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                sampler.sample(proc.pid)
                time.sleep(0.02)
            counts = [queue.get(timeout=30) for _ in workers]
            for w in workers:
                w.join(timeout=10)
            cpu_ms = cpu_ms_between(cpu_before, cpu_snapshot(proc.pid))
            refreshes = stand_in.stats()["issued"] - issued_before
        finally:
            stop_process(proc)
    total = {k: sum(c[k] for c in counts) for k in counts[0]}
    total.update(refreshes=refreshes, rss_peak=sampler.peak(), rss_mean=sampler.mean(),
                 cpu_ms=cpu_ms, lifetime=contender.lifetime(lifetime), seconds=seconds)
    return total


def measure_failure(contenders, stand_ins, work, lifetime, fail_seconds, recovery_timeout):
    procs, files, logs, results = {}, {}, {}, {}
    try:
        for c in contenders:
            stand_ins[c.key].behave(behaviour="issue", expires_in=c.lifetime(lifetime))
            files[c.key] = os.path.join(work, f"{c.key}-failure-token")
            logs[c.key] = open(os.path.join(work, f"{c.key}-failure.log"), "ab")
            procs[c.key] = c.start(stand_ins[c.key], files[c.key], logs[c.key], lifetime)
        for c in contenders:
            if wait_for_token(files[c.key], 20, procs[c.key]) is None:
                sys.exit(f"compare: {c.label} wrote no token before the failure minute")
        time.sleep(max(3, lifetime))
        state = {}
        for c in contenders:
            stand_ins[c.key].behave(behaviour="fail", status=500)
            state[c.key] = {"last_good": token_of(read_file(files[c.key])),
                            "requests_before": stand_ins[c.key].stats()["token_requests"],
                            "samples": 0, "missing": 0, "empty": 0, "other": 0,
                            "kept": 0, "other_token": 0}
        start = time.monotonic()
        while time.monotonic() - start < fail_seconds:
            for c in contenders:
                s = state[c.key]
                content = read_file(files[c.key])
                s["samples"] += 1
                token = token_of(content)
                if content is None:
                    s["missing"] += 1
                elif not content:
                    s["empty"] += 1
                elif token is None:
                    s["other"] += 1
                    s["other_example"] = content[:40]
                elif token == s["last_good"]:
                    s["kept"] += 1
                else:
                    # A token written just after the failure began (a request in flight).
                    s["other_token"] += 1
                    s["last_good"] = token
            time.sleep(0.05)
        recovered_at = time.monotonic()
        for c in contenders:
            s = state[c.key]
            s["requests"] = stand_ins[c.key].stats()["token_requests"] - s["requests_before"]
            s["end_content"] = read_file(files[c.key])
            stand_ins[c.key].behave(behaviour="issue", expires_in=c.lifetime(lifetime))
        pending = {c.key for c in contenders}
        while pending and time.monotonic() - recovered_at < recovery_timeout:
            for key in list(pending):
                token = token_of(read_file(files[key]))
                if token is not None and token != state[key]["last_good"]:
                    state[key]["recovery_s"] = time.monotonic() - recovered_at
                    pending.discard(key)
            time.sleep(0.01)
        for c in contenders:
            results[c.key] = state[c.key]
    finally:
        for proc in procs.values():
            stop_process(proc)
        for f in logs.values():
            f.close()
    return results


# ---------------------------------------------------------------- the table


def mib(kib):
    return f"{kib / 1024:.1f} MiB"


SHOW_RATIO = True


def ratio(value, base):
    if not SHOW_RATIO or value is None or base is None:
        return ""
    if base == 0:
        return " (—)" if value else " (1.0×)"
    return f" ({value / base:.1f}×)" if value / base < 100 else f" ({value / base:.0f}×)"


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}, Linux {platform.release()}"


def version_of(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "?"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fiskil", required=True)
    parser.add_argument("--stand-in", required=True)
    parser.add_argument("--diy", required=True)
    parser.add_argument("--oauth2-refresher", default="")
    parser.add_argument("--oauth2-label", default="observatorium token-refresher")
    parser.add_argument("--oauth2-missing", default="no binary given")
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--fail-seconds", type=float, default=60)
    parser.add_argument("--reader-seconds", type=float, default=20)
    parser.add_argument("--lifetime", type=int, default=3)
    parser.add_argument("--startup-runs", type=int, default=5)
    parser.add_argument("--recovery-timeout", type=float, default=75)
    parser.add_argument("--notes", default="", help="extra lines printed under the table")
    parser.add_argument("--keep-work", action="store_true",
                        help="keep the work directory (token files, contenders' logs)")
    args = parser.parse_args()

    contenders = [Fiskil(args.fiskil), Diy(args.diy),
                  OAuth2Refresher(args.oauth2_refresher, args.oauth2_label, args.oauth2_missing)]
    active = [c for c in contenders if c.available]
    work = tempfile.mkdtemp(prefix="fiskil-sidebyside-")
    log(f"work directory {work}")
    stand_ins = {}
    results = {c.key: {} for c in contenders}
    began = time.monotonic()
    try:
        for c in active:
            stand_ins[c.key] = StandIn(args.stand_in, work, c.key, 900)
        for c in active:
            results[c.key]["size"] = sizes(c)
        log("time to first token")
        for c in active:
            results[c.key]["startup"] = measure_startup(c, stand_ins[c.key], work, args.startup_runs)
        log(f"idle minute ({args.idle_seconds:.0f} s, all at once)")
        for key, value in measure_idle(active, stand_ins, work, args.idle_seconds).items():
            results[key]["idle"] = value
        for c in active:
            life = c.lifetime(args.lifetime)
            log(f"4 readers, {args.reader_seconds:.0f} s, {life} s tokens: {c.label}")
            results[c.key]["readers"] = measure_readers(c, stand_ins[c.key], work,
                                                        args.reader_seconds, args.lifetime)
        log(f"endpoint answers 500 for {args.fail_seconds:.0f} s, then recovers (all at once)")
        for key, value in measure_failure(active, stand_ins, work, args.lifetime,
                                          args.fail_seconds, args.recovery_timeout).items():
            results[key]["failure"] = value
    finally:
        for s in stand_ins.values():
            s.stop()
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    log(f"measured in {time.monotonic() - began:.0f} s")
    print_table(args, contenders, results)


def print_table(args, contenders, results):
    base = results["fiskil"]
    rows = []

    def row(title, render):
        cells = []
        for c in contenders:
            global SHOW_RATIO
            SHOW_RATIO = c.key != "fiskil"
            if not c.available:
                cells.append("not measured")
                continue
            try:
                cells.append(render(c, results[c.key]))
            except (KeyError, TypeError, ValueError, statistics.StatisticsError):
                cells.append("failed")
        rows.append((title, cells))

    row("executable size (with its shared libraries)",
        lambda c, r: f"{r['size'][0] / 2**20:.1f} MiB{ratio(r['size'][0], base['size'][0])}; "
        f"with libraries {r['size'][1] / 2**20:.1f} MiB{ratio(r['size'][1], base['size'][1])}")

    def startup(c, r):
        if not r["startup"]:
            return "no token"
        med = statistics.median(r["startup"])
        return (f"{med:.0f} ms{ratio(med, statistics.median(base['startup']))}; "
                f"range {min(r['startup']):.0f}–{max(r['startup']):.0f} ms")
    row(f"start to first token file (median of {args.startup_runs})", startup)
    row("resident memory of the process tree over an idle minute",
        lambda c, r: f"mean {mib(r['idle']['rss_mean'])}{ratio(r['idle']['rss_mean'], base['idle']['rss_mean'])}; "
        f"peak {mib(r['idle']['rss_peak'])}")
    row("CPU time of the process tree over an idle minute",
        lambda c, r: f"{r['idle']['cpu_ms']:.2f} ms{ratio(r['idle']['cpu_ms'], base['idle']['cpu_ms'])}")

    def lifetime(c, r):
        rd = r["readers"]
        return f"{rd['refreshes']} refreshes in {rd['seconds']:.0f} s ({rd['lifetime']} s tokens)"
    row("refresh window (4 readers)", lifetime)
    row("resident memory of the process tree while refreshing",
        lambda c, r: f"peak {mib(r['readers']['rss_peak'])}{ratio(r['readers']['rss_peak'], base['readers']['rss_peak'])}; "
        f"mean {mib(r['readers']['rss_mean'])}")

    def cpu_per_refresh(c, r):
        rd = r["readers"]
        mine = rd["cpu_ms"] / max(rd["refreshes"], 1)
        theirs = base["readers"]["cpu_ms"] / max(base["readers"]["refreshes"], 1)
        return f"{mine:.1f} ms{ratio(mine, theirs)}"
    row("CPU time per refresh", cpu_per_refresh)

    def bad_reads(c, r):
        rd = r["readers"]
        bad = rd["missing"] + rd["empty"] + rd["other"]
        detail = ", ".join(f"{rd[k]} {k}" for k in ("missing", "empty", "other") if rd[k])
        per = bad / max(rd["refreshes"], 1)
        return (f"**{bad}** of {rd['reads']:,} reads" + (f" ({detail}; {per:.1f} per refresh)" if bad else ""))
    row("bad reads by 4 concurrent readers (missing, empty, partial or not a token)", bad_reads)

    def during_failure(c, r):
        f = r["failure"]
        bad = []
        if f["missing"]:
            bad.append(f"missing in {f['missing']}")
        if f["empty"]:
            bad.append(f"empty in {f['empty']}")
        if f["other"]:
            example = f.get("other_example", b"")[:20].decode("utf-8", "replace").strip()
            bad.append(f"not a token ({example!r}) in {f['other']}")
        if bad:
            return "**" + "; ".join(bad) + f"** of {f['samples']} samples"
        return f"kept the last good token ({f['samples']} samples)"
    row(f"token file while the endpoint answers 500 for {args.fail_seconds:.0f} s", during_failure)
    row(f"token requests sent during those {args.fail_seconds:.0f} s",
        lambda c, r: f"{r['failure']['requests']}{ratio(r['failure']['requests'], base['failure']['requests'])}")

    def recovery(c, r):
        f = r["failure"]
        if "recovery_s" not in f:
            return f"no new token within {args.recovery_timeout:.0f} s"
        b = base["failure"].get("recovery_s")
        return f"{f['recovery_s']:.1f} s{ratio(f['recovery_s'], b)}"
    row("endpoint healthy again to a new token in the file", recovery)

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"### Side by side, {now}\n")
    print(f"Machine: {machine()}.  ")
    print(f"Contenders: fiskil-token-refresher ({version_of([args.fiskil, '--version'])}); "
          f"{os.path.realpath('/bin/sh')} + {' '.join(version_of(['curl', '--version']).split()[:2])} + "
          f"{version_of(['jq', '--version'])} running diy-sidecar.sh; "
          + (f"{contenders[2].label}." if contenders[2].available
             else f"{contenders[2].label}: not measured ({contenders[2].reason})."))
    print()
    header = ["measure"] + [c.label for c in contenders]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for title, cells in rows:
        print("| " + " | ".join([title] + cells) + " |")
    print()
    print("Ratios are to fiskil-token-refresher. Memory and CPU count the whole process tree "
          "(the shell loop's curl, jq and sleep children included). "
          f"Tokens live 900 s in the idle minute and {args.lifetime} s otherwise"
          + (f" ({OAUTH2_MIN_LIFETIME} s for the OAuth2 refresher, which treats tokens with under "
             f"10 s left as expired, refreshing on the same cadence)"
             if contenders[2].available else "") + ".")
    if args.notes:
        print()
        print(args.notes)


if __name__ == "__main__":
    main()
