#!/usr/bin/env python3
"""Cluster mode side by side with External Secrets Operator (ESO), on one control plane.

Both keep a bearer token from the same kind of loopback HTTPS stand-in for Fiskil's token
endpoint in Kubernetes Secrets, and run at the same time against the same kube-apiserver:

* fiskil-token-refresher's controller: one ClusterFiskilCredential per token lifetime, and
  FiskilTokens that name it;
* ESO: a Webhook generator per namespace and lifetime, which POSTs
  {"client_id","client_secret"} to the stand-in, and ExternalSecrets (one per target Secret)
  whose dataFrom is that generator, refreshInterval = --refresh-ratio x the token lifetime.

Each side has its own pair of stand-in processes (short and long lifetime), so token requests
and issued tokens are counted per side and per credential. The run:

  t0          both controllers start (the objects exist already)
  rate window short tokens: [t0 + P/2, t0 + P/2 + 3P], P = ratio x short lifetime
              long tokens:  [t0 + Q/2, t0 + Q/2 + 2Q], Q = ratio x long lifetime
              (whole numbers of refresh periods between refresh bursts; extrapolated to 1 h)
  outage      --outage seconds from t0 + P/2 + 3P + --outage-delay: both short-lifetime
              stand-ins answer --outage-status
  heal        they issue again; the run waits until every short-lifetime Secret of both sides
              holds an unexpired token (at most --recovery-timeout), and until the long window
              has closed

Every --poll seconds all Secrets are listed; a Secret holds an expired token when the token it
holds was issued (as the stand-in's counters show, polled every 0.1 s) more than its
expires_in ago. Memory is sampled from /proc every 2 s.

Standard library only. Prints a Markdown report on stdout; progress on stderr.
"""

import argparse
import base64
import bisect
import http.client
import json
import os
import platform
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
CLIENT_ID = "sidebyside-client"
CLIENT_SECRET = "sidebyside-secret-0123456789"


def log(*args):
    print(f"[{time.strftime('%H:%M:%S')}]", *args, file=sys.stderr, flush=True)


class Terminated(Exception):
    pass


def on_term(signum, frame):
    raise Terminated(f"signal {signum}")


# ---------------------------------------------------------------------------- stand-ins ---

class StandIn:
    """A fiskil-stand-in process with --control, and a thread that polls its counters."""

    def __init__(self, name, binary, work, expires_in, lenient):
        self.name = name
        self.expires_in = expires_in
        self.ca = os.path.join(work, f"stand-in-{name}-ca.pem")
        args = [binary, "--listen", "127.0.0.1:0", "--ca-out", self.ca,
                "--expires-in", str(expires_in), "--client-id", CLIENT_ID,
                "--client-secret", CLIENT_SECRET, "--control"]
        if lenient:
            args.append("--lenient")
        self.log = open(os.path.join(work, f"stand-in-{name}.log"), "w")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"token endpoint (https://\S+)", line)
        if not m:
            raise RuntimeError(f"stand-in {name} printed {line!r}")
        self.url = m.group(1)
        self.port = int(re.search(r":(\d+)/", self.url).group(1))
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        self.ctx = ssl.create_default_context(cafile=self.ca)
        self.conn = None
        # (monotonic time, token requests, tokens issued), appended by the poller
        self.history = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _request(self, method, path, body=None):
        for attempt in range(3):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPSConnection("localhost", self.port,
                                                            context=self.ctx, timeout=5)
                headers = {"content-type": "application/json"} if body is not None else {}
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                return resp.status, data
            except (OSError, http.client.HTTPException):
                if self.conn:
                    self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
                time.sleep(0.05)

    def _poll(self):
        # Its own connection: behaviour changes go over another one.
        ctx = ssl.create_default_context(cafile=self.ca)
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPSConnection("localhost", self.port, context=ctx,
                                                       timeout=5)
                conn.request("GET", "/control/stats")
                stats = json.loads(conn.getresponse().read())
                now = time.monotonic()
                with self.lock:
                    self.history.append((now, stats["token_requests"], stats["issued"]))
            except (OSError, http.client.HTTPException, ValueError):
                if conn:
                    conn.close()
                conn = None
            self.stop.wait(0.1)

    def behave(self, behaviour):
        status, data = self._request("POST", "/control/behaviour", json.dumps(behaviour))
        if status != 200:
            raise RuntimeError(f"stand-in {self.name}: {status} {data!r}")

    def issued_at(self, seq):
        """The earliest time the token numbered seq can have been issued: the last poll that
        counted fewer tokens (None when no poll has counted it yet)."""
        with self.lock:
            hist = list(self.history)
        counts = [h[2] for h in hist]
        i = bisect.bisect_left(counts, seq)
        if i == len(hist):
            return None
        return hist[i - 1][0] if i > 0 else hist[0][0] - 0.1

    def requests_between(self, a, b):
        """Token requests the stand-in received between monotonic times a and b."""
        with self.lock:
            hist = list(self.history)
        def at(t):
            i = bisect.bisect_right([h[0] for h in hist], t)
            return hist[i - 1][1] if i > 0 else 0
        return at(b) - at(a)

    def requests(self):
        with self.lock:
            return self.history[-1][1] if self.history else 0

    def close(self):
        self.stop.set()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# ---------------------------------------------------------------------------- the API server ---

class Kube:
    def __init__(self, env):
        m = re.match(r"https://([^:/]+):(\d+)", env["FISKIL_CLUSTER_SERVER"])
        self.host, self.port = m.group(1), int(m.group(2))
        self.ctx = ssl.create_default_context(cafile=env["FISKIL_CLUSTER_CA"])
        self.ctx.load_cert_chain(env["FISKIL_CLUSTER_ADMIN_CERT"], env["FISKIL_CLUSTER_ADMIN_KEY"])
        self.conn = None

    def get(self, path):
        for attempt in range(3):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPSConnection(self.host, self.port,
                                                            context=self.ctx, timeout=10)
                self.conn.request("GET", path, headers={"accept": "application/json"})
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"GET {path}: {resp.status} {data[:200]!r}")
                return json.loads(data)
            except (OSError, http.client.HTTPException):
                if self.conn:
                    self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
                time.sleep(0.1)


def kubectl(args, kubectl_bin, kubeconfig, stdin=None):
    out = subprocess.run([kubectl_bin, "--kubeconfig", kubeconfig] + args, input=stdin,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def apply(objects, kubectl_bin, kubeconfig):
    kubectl(["apply", "--server-side", "--field-manager=sidebyside", "-f", "-"], kubectl_bin,
            kubeconfig, json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))


# ---------------------------------------------------------------------------- processes ---

def proc_memory(pid):
    """(VmRSS, Anonymous from smaps_rollup) in KiB, or None when gone."""
    try:
        rss = anon = None
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Anonymous:"):
                    anon = int(line.split()[1])
        return rss, anon
    except OSError:
        return None


def proc_cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


def stop_process(proc, name):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        log(f"{name} did not stop on SIGTERM; killing it")
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------- the run ---

def token_seq(token):
    m = re.match(r"tok-(\d+)-", token or "")
    return int(m.group(1)) if m else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--eso-bin", default=None)
    ap.add_argument("--eso-crds", default=None)
    ap.add_argument("--sides", default="fiskil,eso",
                    help="which to run: fiskil,eso (default), or one of them")
    ap.add_argument("--eso-version", default="v0.16.2")
    ap.add_argument("--kubectl", required=True)
    ap.add_argument("--refresher", default=os.path.join(ROOT, "target/release/fiskil-token-refresher"))
    ap.add_argument("--stand-in", default=os.path.join(ROOT, "target/release/fiskil-stand-in"))
    ap.add_argument("--short", type=int, default=300, help="short token lifetime, s")
    ap.add_argument("--long", type=int, default=900, help="long token lifetime, s")
    ap.add_argument("--refresh-ratio", type=float, default=0.8)
    ap.add_argument("--namespaces", type=int, default=5, help="per side")
    ap.add_argument("--tokens", type=int, default=20, help="target Secrets per credential per side")
    ap.add_argument("--outage", type=int, default=600)
    ap.add_argument("--outage-delay", type=int, default=30,
                    help="seconds between the end of the short rate window and the outage")
    ap.add_argument("--outage-status", type=int, default=503)
    ap.add_argument("--recovery-timeout", type=int, default=900)
    ap.add_argument("--poll", type=float, default=0.5)
    ap.add_argument("--fiskil-leader-elect", action="store_true",
                    help="run our controller with --leader-elect, as deploy/controller does "
                         "(a fresh Lease is created only after lease duration + margin, 17 s)")
    ap.add_argument("--work", default=None)
    ap.add_argument("--keep-work", action="store_true")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    work = args.work or tempfile.mkdtemp(prefix="sidebyside-eso-")
    os.makedirs(work, exist_ok=True)
    cluster_dir = os.path.join(work, "cluster")
    stand_ins, procs, cluster_up = [], {}, False
    try:
        log(f"work directory {work}")
        out = subprocess.run([os.path.join(ROOT, "tests/cluster/up.sh"), cluster_dir],
                             capture_output=True, text=True)
        cluster_up = True
        if out.returncode != 0:
            raise RuntimeError(f"tests/cluster/up.sh failed: {out.stderr[-2000:]}")
        env = {}
        with open(os.path.join(cluster_dir, "cluster.env")) as f:
            for line in f:
                if "=" in line and not line.startswith("#"):
                    k, v = line.strip().split("=", 1)
                    env[k] = v.strip("'\"")
        admin = env["FISKIL_CLUSTER_KUBECONFIG"]
        kube = Kube(env)
        k = lambda a, stdin=None: kubectl(a, args.kubectl, admin, stdin)
        report = run(args, work, kube, k, env, admin, stand_ins, procs)
        print(report)
    finally:
        for name, (proc, logf) in procs.items():
            stop_process(proc, name)
            logf.close()
        for s in stand_ins:
            s.close()
        if cluster_up:
            subprocess.run([os.path.join(ROOT, "tests/cluster/down.sh"), cluster_dir],
                           stdout=sys.stderr, stderr=sys.stderr)
        if args.keep_work:
            log(f"kept {work}")
        else:
            subprocess.run(["rm", "-rf", work])


def run(args, work, kube, k, env, admin, stand_ins, procs):
    short, long_ = args.short, args.long
    lifetimes = {"short": short, "long": long_}
    interval = {n: round(args.refresh_ratio * l) for n, l in lifetimes.items()}

    # Stand-ins: one per side and lifetime. Ours keep the strict contract check; ESO's Go HTTP
    # client sends its own User-Agent, which --lenient lets through.
    sides = args.sides.split(",")
    si = {}
    for side in sides:
        for n, l in lifetimes.items():
            s = StandIn(f"{side}-{n}", args.stand_in, work, l, lenient=(side == "eso"))
            stand_ins.append(s)
            si[(side, n)] = s
            s.behave({"behaviour": "issue", "expires_in": l})

    # CustomResourceDefinitions: ours from deploy/controller/crds.yaml, ESO's bundle.
    log("installing the CRDs")
    k(["apply", "--server-side", "-f", os.path.join(ROOT, "deploy/controller/crds.yaml")])
    if "eso" in sides:
        k(["apply", "--server-side", "-f", args.eso_crds])
    k(["wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"])

    # Our controller's identity: the shipped ServiceAccount, ClusterRole and Lease Role
    # (kustomize of deploy/controller, without the Deployment and PodDisruptionBudget).
    built = k(["kustomize", os.path.join(ROOT, "deploy/controller")])
    docs = [d for d in re.split(r"^---\s*$", built, flags=re.M) if d.strip()]
    keep = [d for d in docs if re.search(r"^kind: (ServiceAccount|ClusterRole|ClusterRoleBinding|Role|RoleBinding)\s*$", d, re.M)]
    k(["create", "namespace", "fiskil"])
    k(["apply", "--server-side", "-f", "-"], "\n---\n".join(keep))
    token = k(["-n", "fiskil", "create", "token", "fiskil-token-refresher-controller",
               "--duration=6h"]).strip()
    with open(env["FISKIL_CLUSTER_CA"], "rb") as f:
        ca_data = base64.b64encode(f.read()).decode()
    controller_kubeconfig = os.path.join(work, "controller.kubeconfig")
    with open(controller_kubeconfig, "w") as f:
        json.dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": env["FISKIL_CLUSTER_SERVER"],
                                                    "certificate-authority-data": ca_data}}],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        }, f)

    # Objects: ours in namespaces f-0.., ESO's in e-0..; per lifetime `tokens` target Secrets
    # spread over the namespaces.
    nss = {side: [f"{side[0]}-{i}" for i in range(args.namespaces)] for side in sides}
    objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
               for side in nss for ns in nss[side]]
    objects.append({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "fiskil-credentials", "namespace": "fiskil"},
                    "stringData": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}})
    targets = []  # (side, lifetime name, namespace, secret name)
    fiskil_yaml, eso_yaml = [], []
    for n in (lifetimes if "fiskil" in sides else ()):
        cred = {"apiVersion": "fiskil-token-refresher.io/v1alpha1", "kind": "ClusterFiskilCredential",
                "metadata": {"name": f"fiskil-{n}"},
                "spec": {"secretRef": {"namespace": "fiskil", "name": "fiskil-credentials"},
                         "tokenURL": si[("fiskil", n)].url,
                         "allowedNamespaces": {"names": nss["fiskil"]}}}
        objects.append(cred)
        fiskil_yaml.append(cred)
        for j in range(args.tokens):
            ns = nss["fiskil"][j % args.namespaces]
            name = f"token-{n}-{j}"
            ft = {"apiVersion": "fiskil-token-refresher.io/v1alpha1", "kind": "FiskilToken",
                  "metadata": {"name": name, "namespace": ns},
                  "spec": {"credentialRef": {"kind": "ClusterFiskilCredential", "name": f"fiskil-{n}"},
                           "secretName": name}}
            objects.append(ft)
            if j == 0:
                fiskil_yaml.append(ft)
            targets.append(("fiskil", n, ns, name))
    eso_ca = {}
    for n in (lifetimes if "eso" in sides else ()):
        with open(si[("eso", n)].ca, "rb") as f:
            eso_ca[n] = base64.b64encode(f.read()).decode()
    for i, ns in enumerate(nss.get("eso", [])):
        creds = {"apiVersion": "v1", "kind": "Secret",
                 "metadata": {"name": "fiskil-credentials", "namespace": ns,
                              "labels": {"external-secrets.io/type": "webhook"}},
                 "stringData": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}}
        objects.append(creds)
        for n in lifetimes:
            gen = {"apiVersion": "generators.external-secrets.io/v1alpha1", "kind": "Webhook",
                   "metadata": {"name": f"fiskil-token-{n}", "namespace": ns},
                   "spec": {
                       "method": "POST",
                       "url": si[("eso", n)].url,
                       "headers": {"Content-Type": "application/json"},
                       "body": '{"client_id":"{{ .credentials.client_id }}",'
                               '"client_secret":"{{ .credentials.client_secret }}"}',
                       "timeout": "30s",
                       "result": {"jsonPath": "$"},
                       "secrets": [{"name": "credentials",
                                    "secretRef": {"name": "fiskil-credentials", "key": "client_id"}}],
                       "caBundle": eso_ca[n],
                   }}
            objects.append(gen)
            if i == 0:
                eso_yaml += [creds, gen]
    for n in (lifetimes if "eso" in sides else ()):
        for j in range(args.tokens):
            ns = nss["eso"][j % args.namespaces]
            name = f"token-{n}-{j}"
            es = {"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                  "metadata": {"name": name, "namespace": ns},
                  "spec": {
                      "refreshInterval": f"{interval[n]}s",
                      "refreshPolicy": "Periodic",
                      "target": {"name": name, "creationPolicy": "Owner"},
                      "dataFrom": [{"sourceRef": {"generatorRef": {
                          "apiVersion": "generators.external-secrets.io/v1alpha1",
                          "kind": "Webhook", "name": f"fiskil-token-{n}"}}}],
                  }}
            objects.append(es)
            if j == 0:
                eso_yaml.append(es)
            targets.append(("eso", n, ns, name))
    log(f"creating {len(objects)} objects")
    # Namespaces first, then the rest.
    apply([o for o in objects if o["kind"] == "Namespace"], args.kubectl, admin)
    apply([o for o in objects if o["kind"] != "Namespace"], args.kubectl, admin)
    with open(os.path.join(work, "objects.json"), "w") as f:
        json.dump({"fiskil": fiskil_yaml, "eso": eso_yaml}, f, indent=2)

    # Both controllers start at once.
    fiskil_ca = os.path.join(work, "fiskil-stand-ins-ca.pem")
    with open(fiskil_ca, "w") as out:
        for n in (lifetimes if "fiskil" in sides else ()):
            with open(si[("fiskil", n)].ca) as f:
                out.write(f.read())
    election = (["--leader-elect", "--lease-name=fiskil-token-refresher-controller",
                 "--lease-duration=15s"] if args.fiskil_leader_elect else [])
    fiskil_args = [args.refresher, "controller", *election,
                   f"--token-url={si[('fiskil', 'short')].url if 'fiskil' in sides else ''}",
                   f"--ca-file={fiskil_ca}",
                   f"--refresh-ratio={args.refresh_ratio}", "--refresh-jitter=0.05",
                   "--min-refresh-interval=1s", "--backoff-initial=1s", "--backoff-max=60s",
                   "--backoff-max-expired=8s", "--connect-timeout=5s", "--request-timeout=30s",
                   "--listen=127.0.0.1:0", "--log-format=json", "--log-level=info"]
    eso_args = [args.eso_bin or "external-secrets", "--enable-leader-election=false", "--metrics-addr=127.0.0.1:0",
                "--concurrent=1", "--loglevel=info", "--zap-time-encoding=iso8601"]
    base_env = {k_: v for k_, v in os.environ.items()
                if not k_.startswith(("KUBE", "POD_"))}
    t0 = time.monotonic()
    for name, argv, extra in (
            ("fiskil", fiskil_args, {"KUBECONFIG": controller_kubeconfig,
                                     "POD_NAMESPACE": "fiskil", "POD_NAME": "controller-0"}),
            ("eso", eso_args, {"KUBECONFIG": admin})):
        if name not in sides:
            continue
        logf = open(os.path.join(work, f"{name}.log"), "w")
        procs[name] = (subprocess.Popen(argv, env={**base_env, **extra}, stdout=logf,
                                        stderr=subprocess.STDOUT), logf)
    log("controllers started: " + ", ".join(f"{n} pid {p.pid}" for n, (p, _) in procs.items()))

    P, Q = interval["short"], interval["long"]
    short_window = (t0 + P / 2, t0 + P / 2 + 3 * P)
    long_window = (t0 + Q / 2, t0 + Q / 2 + 2 * Q)
    outage_start_at = short_window[1] + args.outage_delay
    outage_end_at = outage_start_at + args.outage
    deadline = max(outage_end_at + args.recovery_timeout, long_window[1] + 5)

    # Per target: time expired, time without a token; per side: first time all held a token.
    expired = {t: 0.0 for t in targets}
    missing = {t: 0.0 for t in targets}
    any_expired = {(side, n): 0.0 for side in nss for n in lifetimes}
    all_valid_at = {}
    first_expired_at = {}
    recovered_at = {}
    mem = {name: [] for name in procs}  # (t, rss, anon)
    mem_at_window_end = {}
    outage_state = "before"
    outage_requests = {}
    last = None
    next_mem = t0
    ns_set = set(ns for side in nss for ns in nss[side])
    log(f"short rate window ends in {short_window[1] - t0:.0f} s; outage "
        f"{outage_start_at - t0:.0f}..{outage_end_at - t0:.0f} s; long window ends "
        f"{long_window[1] - t0:.0f} s; run ends by {deadline - t0:.0f} s")
    while True:
        now = time.monotonic()
        for name, (proc, _) in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {work}/{name}.log")
        if now >= next_mem:
            for name, (proc, _) in procs.items():
                m = proc_memory(proc.pid)
                if m:
                    mem[name].append((now - t0, *m))
            next_mem = now + 2
        if "end" not in mem_at_window_end and now >= short_window[1]:
            mem_at_window_end["end"] = {n: proc_memory(p.pid) for n, (p, _) in procs.items()}
        if outage_state == "before" and now >= outage_start_at:
            for side in nss:
                si[(side, "short")].behave({"behaviour": "fail", "status": args.outage_status})
            outage_state = "down"
            outage_requests = {side: si[(side, "short")].requests() for side in nss}
            log(f"outage: short-lifetime stand-ins answer {args.outage_status}")
        if outage_state == "down" and now >= outage_end_at:
            for side in nss:
                si[(side, "short")].behave({"behaviour": "issue", "expires_in": short})
            outage_requests = {side: si[(side, "short")].requests() - outage_requests[side]
                               for side in nss}
            outage_state = "healed"
            log(f"healed; token requests during the outage: {outage_requests}")

        secrets = kube.get("/api/v1/secrets")["items"]
        now = time.monotonic()
        held = {}
        for s in secrets:
            ns, name = s["metadata"]["namespace"], s["metadata"]["name"]
            if ns in ns_set and name.startswith("token-"):
                tok = base64.b64decode((s.get("data") or {}).get("token", "")).decode(errors="replace")
                held[(ns, name)] = tok
        dt = (now - last) if last else 0.0
        last = now
        side_valid, side_expired = {}, {}
        for t in targets:
            side, n, ns, name = t
            tok = held.get((ns, name))
            seq = token_seq(tok)
            ok = stale = False
            if seq is None:
                missing[t] += dt
            else:
                issued = si[(side, n)].issued_at(seq)
                if issued is None or issued + lifetimes[n] > now:
                    ok = True
                else:
                    stale = True
                    expired[t] += dt
                    first_expired_at.setdefault((side, n), now - t0)
            side_valid.setdefault((side, n), []).append(ok)
            side_expired[(side, n)] = side_expired.get((side, n), False) or stale
        for key, oks in side_valid.items():
            if side_expired[key]:
                any_expired[key] += dt
            if all(oks):
                all_valid_at.setdefault(key, now - t0)
                if outage_state == "healed" and key[1] == "short":
                    recovered_at.setdefault(key[0], now - outage_end_at)
        if outage_state == "healed" and len(recovered_at) == len(nss) and now >= long_window[1]:
            break
        if now >= deadline:
            log("recovery timeout reached")
            break
        time.sleep(max(0.0, args.poll - (time.monotonic() - now)))
    t_end = time.monotonic()
    cpu = {n: proc_cpu_seconds(p.pid) for n, (p, _) in procs.items()}
    final_mem = {n: proc_memory(p.pid) for n, (p, _) in procs.items()}

    # ------------------------------------------------------------------ report ---
    def rate(side, n, window):
        count = si[(side, n)].requests_between(*window)
        return count, count * 3600 / (window[1] - window[0])

    def mib(kib):
        return f"{kib / 1024:.1f} MiB" if kib is not None else "n/a"

    with open("/proc/cpuinfo") as f:
        cpu_model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    eso_size = os.path.getsize(args.eso_bin) if args.eso_bin else None
    our_size = os.path.getsize(args.refresher)
    per_side = args.tokens * len(lifetimes)
    lines = []
    lines.append(f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs "
                 f"({cpu_model}), kernel {platform.release()}, run length {t_end - t0:.0f} s. "
                 f"Per side: {per_side} target Secrets, {args.tokens} per credential and lifetime, "
                 f"in {args.namespaces} namespaces; token lifetimes {short} s and {long_} s; "
                 f"refresh every {args.refresh_ratio:g} of the lifetime ({P} s and {Q} s).")
    lines.append("")
    lines.append("| | fiskil-token-refresher controller | ESO " + args.eso_version + " (Webhook generator + ExternalSecret) |")
    lines.append("|---|---|---|")
    sw, lw = short_window, long_window
    for n, w, k_ in (("short", sw, 3), ("long", lw, 2)):
        cells = []
        for side in ("fiskil", "eso"):
            if side not in sides:
                cells.append("not run")
                continue
            count, per_hour = rate(side, n, w)
            cells.append(f"{per_hour:.0f} /h ({count} in {w[1] - w[0]:.0f} s)")
        lines.append(f"| token requests per credential, {lifetimes[n]} s tokens "
                     f"(window {w[0] - t0:.0f}–{w[1] - t0:.0f} s after start, {k_} refresh periods) | "
                     + " | ".join(cells) + " |")
    cells = []
    for side in ("fiskil", "eso"):
        if side not in sides:
            cells.append("not run")
            continue
        ts = [t for t in targets if t[0] == side and t[1] == "short"]
        worst = max(expired[t] for t in ts)
        cells.append(f"{any_expired[(side, 'short')]:.0f} s any Secret; worst Secret {worst:.0f} s "
                     f"(first expiry {first_expired_at.get((side, 'short'), float('nan')) - (outage_start_at - t0):.0f} s into the outage)")
    lines.append(f"| seconds a target Secret held an expired {short} s token, {args.outage} s outage "
                 f"(endpoint answers {args.outage_status}) | " + " | ".join(cells) + " |")
    cells = []
    for side in ("fiskil", "eso"):
        if side not in sides:
            cells.append("not run")
            continue
        r = recovered_at.get(side)
        cells.append(f"{r:.1f} s" if r is not None else f"not within {args.recovery_timeout} s")
    lines.append("| endpoint healed to a valid token in every Secret | " + " | ".join(cells) + " |")
    lines.append("| token requests during the outage | "
                 + " | ".join(f"{outage_requests.get(s, 'n/a')}" for s in ("fiskil", "eso")) + " |")
    cells = []
    for side in ("fiskil", "eso"):
        if side not in sides:
            cells.append("not run")
            continue
        ts = [t for t in targets if t[0] == side and t[1] == "long"]
        cells.append(f"{max(expired[t] for t in ts):.0f} s")
    lines.append(f"| seconds a Secret held an expired {long_} s token (no outage) | " + " | ".join(cells) + " |")
    cells = []
    for side in ("fiskil", "eso"):
        if side not in sides:
            cells.append("not run")
            continue
        a = [all_valid_at.get((side, n)) for n in lifetimes]
        cells.append(f"{max(a):.1f} s" if None not in a else "never")
    lines.append(f"| start to all {per_side} Secrets holding a token | " + " | ".join(cells) + " |")
    for label, idx in (("RSS", 1), ("anonymous memory (smaps_rollup)", 2)):
        cells = []
        for side in ("fiskil", "eso"):
            if side not in sides:
                cells.append("not run")
                continue
            at_end = mem_at_window_end.get("end", {}).get(side)
            samples = [m[idx] for m in mem[side] if m[idx] is not None]
            steady = [m[idx] for m in mem[side] if m[0] >= 60]
            mean = sum(steady) / len(steady) if steady else None
            cells.append(f"{mib(at_end[idx - 1] if at_end else None)} at {short_window[1] - t0:.0f} s; "
                         f"mean {mib(mean)} after the first minute; peak {mib(max(samples) if samples else None)}")
        lines.append(f"| controller {label}, {per_side} target Secrets | " + " | ".join(cells) + " |")
    lines.append("| CPU time over the whole run | "
                 + " | ".join(f"{cpu[s]:.2f} s" if cpu.get(s) is not None else "not run" for s in ("fiskil", "eso")) + " |")
    lines.append(f"| executable size | {our_size / 1e6:.1f} MB | "
                 + (f"{eso_size / 1e6:.1f} MB |" if eso_size else "n/a |"))
    lines.append("")
    lines.append("Objects (first of each kind):")
    lines.append("```json")
    with open(os.path.join(work, "objects.json")) as f:
        lines.append(f.read())
    lines.append("```")
    lines.append("Commands:")
    lines.append("```")
    lines.append(" ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(fiskil_args)))
    if "eso" in sides:
        lines.append(" ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(eso_args)))
    lines.append("```")
    raw = {"t_end": t_end - t0, "expired": {"/".join(t): v for t, v in expired.items()},
           "missing": {"/".join(t): v for t, v in missing.items()},
           "any_expired": {"/".join(k_): v for k_, v in any_expired.items()},
           "first_expired_at": {"/".join(k_): v for k_, v in first_expired_at.items()},
           "recovered_after_heal": recovered_at, "all_valid_at": {"/".join(k_): v for k_, v in all_valid_at.items()},
           "outage": [outage_start_at - t0, outage_end_at - t0], "outage_requests": outage_requests,
           "windows": {"short": [sw[0] - t0, sw[1] - t0], "long": [lw[0] - t0, lw[1] - t0]},
           "requests": {f"{s}/{n}": si[(s, n)].requests() for s in nss for n in lifetimes},
           "mem": mem, "cpu": cpu, "final_mem": final_mem}
    with open(os.path.join(work, "raw.json"), "w") as f:
        json.dump(raw, f)
    if os.environ.get("SIDEBYSIDE_ESO_RAW"):
        with open(os.environ["SIDEBYSIDE_ESO_RAW"], "w") as f:
            json.dump(raw, f)
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        main()
    except (Terminated, KeyboardInterrupt) as e:
        log(f"stopped: {e}")
        sys.exit(130)
