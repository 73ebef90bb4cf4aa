#!/usr/bin/env python3
"""Assert properties of rendered fiskil-token-refresher manifests.

Chart output:
    check_manifests.py chart NAME RENDERED.yaml --chart-dir DIR --values FILE \
        --release R --namespace NS
deploy/ output (kustomize build):
    check_manifests.py kustomize NAME RENDERED.yaml

Cluster mode (controller.enabled, deploy/controller) is checked by
check_controller: the controller Deployment, its ClusterRole (exactly
CONTROLLER_RULES), its Lease Role, its PodDisruptionBudget and the
CustomResourceDefinitions (rendered by the chart with --include-crds, which a
value set's "# helm-args:" line asks for).

Prints one line per check ("ok   ..." or "FAIL ...") and exits 1 if any
check failed. Expectations for the chart come from its values.yaml merged with
the value set; for deploy/ they come from the manifests' own consistency
(e.g. the Role names the Secret the writer's --secret-name gives).
"""

import argparse
import base64
import copy
import json
import posixpath
import sys

import yaml

REFRESHER = "token-refresher"
REFRESHER_UID = 65532
# Verbs the writer's Role may hold on its Secret. Anything wider (list, watch,
# delete, "*") fails the check.
ALLOWED_SECRET_VERBS = {"get", "patch", "update", "create"}
STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)
TIMING_FLAGS = (
    ("refreshRatio", "--refresh-ratio"),
    ("refreshJitter", "--refresh-jitter"),
    ("minRefreshInterval", "--min-refresh-interval"),
    ("backoffInitial", "--backoff-initial"),
    ("backoffMax", "--backoff-max"),
    ("backoffMaxExpired", "--backoff-max-expired"),
    ("connectTimeout", "--connect-timeout"),
    ("requestTimeout", "--request-timeout"),
    ("credentialsPollInterval", "--credentials-poll-interval"),
    ("tokenUrl", "--token-url"),
    ("logFormat", "--log-format"),
    ("logLevel", "--log-level"),
)


# The controller's flags from the chart's values: the writer's timing flags but
# --credentials-poll-interval (a FiskilCredential's Secret is watched, not polled).
CONTROLLER_FLAGS = tuple(f for f in TIMING_FLAGS if f[0] != "credentialsPollInterval")
CONTROLLER = "controller"
# The controller's ClusterRole, rule for rule: the least that cluster mode needs.
CONTROLLER_RULES = [
    {"apiGroups": ["fiskil-token-refresher.io"],
     "resources": ["fiskiltokens", "fiskilcredentials", "clusterfiskilcredentials"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["fiskil-token-refresher.io"], "resources": ["fiskiltokens/status"], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch", "create", "patch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
]
CRD_GROUP = "fiskil-token-refresher.io"
# CustomResourceDefinition name -> (kind, scope).
CRDS = {
    f"fiskilcredentials.{CRD_GROUP}": ("FiskilCredential", "Namespaced"),
    f"clusterfiskilcredentials.{CRD_GROUP}": ("ClusterFiskilCredential", "Cluster"),
    f"fiskiltokens.{CRD_GROUP}": ("FiskilToken", "Namespaced"),
}
# Objects without a namespace.
CLUSTER_KINDS = ("ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition")


class Checker:
    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = 0

    def check(self, description, condition, detail=""):
        if condition:
            self.passed += 1
            print(f"ok   {self.name}: {description}")
        else:
            self.failed += 1
            extra = f" ({detail})" if detail else ""
            print(f"FAIL {self.name}: {description}{extra}")
        return bool(condition)


def deep_merge(base, override):
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def fmt_value(value):
    """How the chart prints a number or string into an argument."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def arg_value(args, flag):
    prefix = flag + "="
    values = [a[len(prefix):] for a in args if a.startswith(prefix)]
    return values


def pod_spec(obj):
    return obj.get("spec", {}).get("template", {}).get("spec")


def all_containers(spec):
    return [("initContainer", c) for c in spec.get("initContainers") or []] + [
        ("container", c) for c in spec.get("containers") or []
    ]


def effective(container, pod, field):
    csc = container.get("securityContext") or {}
    psc = pod.get("securityContext") or {}
    if field in csc:
        return csc[field]
    return psc.get(field)


def check_restricted(ck, obj):
    """The "restricted" Pod Security Standard, container by container."""
    spec = pod_spec(obj)
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        ck.check(f"{where}: no {flag}", not spec.get(flag))
    vols = spec.get("volumes") or []
    allowed = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
               "persistentVolumeClaim", "projected", "secret"}
    bad = [v["name"] for v in vols if not (set(v) - {"name"}) <= allowed]
    ck.check(f"{where}: only restricted volume types", not bad, f"bad: {bad}")
    for kind, c in all_containers(spec):
        cw = f"{where} {kind} {c['name']}"
        sc = c.get("securityContext") or {}
        ck.check(f"{cw}: runAsNonRoot", effective(c, spec, "runAsNonRoot") is True)
        uid = effective(c, spec, "runAsUser")
        ck.check(f"{cw}: runAsUser set and not 0", uid is not None and uid != 0, f"runAsUser={uid}")
        ck.check(f"{cw}: allowPrivilegeEscalation false", sc.get("allowPrivilegeEscalation") is False)
        ck.check(f"{cw}: not privileged", sc.get("privileged") is not True)
        caps = sc.get("capabilities") or {}
        ck.check(f"{cw}: capabilities drop ALL", "ALL" in (caps.get("drop") or []))
        ck.check(f"{cw}: adds no capability beyond NET_BIND_SERVICE",
                 set(caps.get("add") or []) <= {"NET_BIND_SERVICE"})
        ck.check(f"{cw}: readOnlyRootFilesystem", sc.get("readOnlyRootFilesystem") is True)
        seccomp = (effective(c, spec, "seccompProfile") or {}).get("type")
        ck.check(f"{cw}: seccompProfile RuntimeDefault", seccomp in ("RuntimeDefault", "Localhost"),
                 f"type={seccomp}")
        ck.check(f"{cw}: no hostPort",
                 not any(p.get("hostPort") for p in c.get("ports") or []))


def find_refresher(spec):
    for kind, c in all_containers(spec):
        if c["name"] == REFRESHER:
            return kind, c
    return None, None


def check_refresher(ck, obj, expect):
    """Probes, ports, args and mounts of the refresher container."""
    spec = pod_spec(obj)
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    kind, c = find_refresher(spec)
    if not ck.check(f"{where}: has a {REFRESHER} container", c is not None):
        return None
    args = c.get("args") or []
    ck.check(f"{where}: {REFRESHER} runs as UID {REFRESHER_UID}",
             effective(c, spec, "runAsUser") == REFRESHER_UID)
    ck.check(f"{where}: image is fiskil-token-refresher",
             "fiskil-token-refresher" in c.get("image", ""), c.get("image"))
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    ck.check(f"{where}: port http-metrics is {expect['port']}", ports.get("http-metrics") == expect["port"],
             f"ports={ports}")
    ck.check(f"{where}: --listen on port {expect['port']}",
             arg_value(args, "--listen") == [f"[::]:{expect['port']}"], str(arg_value(args, "--listen")))
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (c.get(probe) or {}).get("httpGet") or {}
        ck.check(f"{where}: {probe} GET {path} on http-metrics",
                 get.get("path") == path and get.get("port") == "http-metrics", str(get))
    for key, flag in TIMING_FLAGS:
        if key not in expect["args"]:
            continue
        want = expect["args"][key]
        got = arg_value(args, flag)
        ck.check(f"{where}: {flag}={want}", got == [want], f"got {got}")
    repeatable = {"--notify-url", "--secret"}
    dupes = sorted({a.split("=", 1)[0] for a in args if a.startswith("--")
                    and a.split("=", 1)[0] not in repeatable
                    and sum(1 for b in args if b.split("=", 1)[0] == a.split("=", 1)[0]) > 1})
    ck.check(f"{where}: no option given twice", not dupes, f"twice: {dupes}")
    for extra in expect.get("extraArgs", []):
        ck.check(f"{where}: extra argument {extra}", extra in args)
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
    cred = mounts.get("/var/run/secrets/fiskil")
    ck.check(f"{where}: credentials mounted read-only at /var/run/secrets/fiskil",
             cred is not None and cred.get("readOnly") is True)
    vols = {v["name"]: v for v in spec.get("volumes") or []}
    cred_vol = vols.get(cred["name"]) if cred else None
    secret = (cred_vol or {}).get("secret") or {}
    ck.check(f"{where}: credentials volume is Secret {expect['credentialsSecret']}",
             secret.get("secretName") == expect["credentialsSecret"], str(secret.get("secretName")))
    items = {i["path"]: i["key"] for i in secret.get("items") or []}
    ck.check(f"{where}: credential files client_id <- {expect['clientIdKey']}, "
             f"client_secret <- {expect['clientSecretKey']}",
             items == {"client_id": expect["clientIdKey"], "client_secret": expect["clientSecretKey"]},
             str(items))
    res = c.get("resources") or {}
    ck.check(f"{where}: cpu/memory requests and a memory limit",
             {"cpu", "memory"} <= set(res.get("requests") or {}) and "memory" in (res.get("limits") or {}),
             str(res))
    if expect.get("caFile"):
        ck.check(f"{where}: --ca-file={expect['caFile']}", arg_value(args, "--ca-file") == [expect["caFile"]])
        ck.check(f"{where}: CA bundle mounted at /etc/fiskil/ca", "/etc/fiskil/ca" in mounts)
    for name, value in expect.get("env", {}).items():
        env = {e["name"]: e.get("value") for e in c.get("env") or []}
        ck.check(f"{where}: env {name}={value}", env.get(name) == value, str(env.get(name)))
    return kind, c, args


def labels_subset(sub, labels):
    return bool(sub) and all(labels.get(k) == v for k, v in sub.items())


POD_ENV = {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "POD_UID": "metadata.uid"}
HOSTNAME_KEY = "kubernetes.io/hostname"


def check_pod_env(ck, where, container):
    """POD_NAME, POD_NAMESPACE and POD_UID from the downward API."""
    env = {e["name"]: ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
           for e in container.get("env") or []}
    for name, field in POD_ENV.items():
        ck.check(f"{where}: env {name} from the downward API ({field})", env.get(name) == field, str(env.get(name)))


def rules_on(role, group, resource):
    return [r for r in role.get("rules") or []
            if group in (r.get("apiGroups") or []) and resource in (r.get("resources") or [])]


def bindings_to(objs, role, sa_name, sa_ns):
    """RoleBindings in the Role's namespace that refer to it and name the ServiceAccount."""
    ns = role["metadata"].get("namespace")
    out = []
    for rb in (o for o in objs if o["kind"] == "RoleBinding" and o["metadata"].get("namespace") == ns):
        ref = rb.get("roleRef") or {}
        if ref.get("kind") == "Role" and ref.get("name") == role["metadata"]["name"] \
                and ref.get("apiGroup") == "rbac.authorization.k8s.io" \
                and {"kind": "ServiceAccount", "name": sa_name, "namespace": sa_ns} in (rb.get("subjects") or []):
            out.append(rb)
    return out


def check_writer(ck, objs, dep, expect):
    """The standalone writer: replicas and strategy, spreading and its PodDisruptionBudget, the
    downward API env, its targets, leader election and Events arguments, and every Role and
    RoleBinding it gets (each target Secret by name, the Lease by name, Events), and no other."""
    where = f"Deployment/{dep['metadata']['name']}"
    spec = pod_spec(dep)
    dep_ns = dep["metadata"].get("namespace")
    lease = expect.get("leaderElection")
    replicas = expect["replicas"]
    ck.check(f"{where}: {replicas} replica(s)", dep["spec"].get("replicas") == replicas,
             str(dep["spec"].get("replicas")))
    strategy = dep["spec"].get("strategy") or {}
    if lease:
        ck.check(f"{where}: strategy RollingUpdate, maxSurge 1, maxUnavailable 0 (a standby is always up)",
                 strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                 str(strategy))
    else:
        ck.check(f"{where}: without leader election, 1 replica and strategy Recreate (one writer, even in an update)",
                 replicas == 1 and strategy.get("type") == "Recreate", str(strategy))
    pod_labels = dep["spec"]["template"]["metadata"].get("labels") or {}
    spreads = [t for t in spec.get("topologySpreadConstraints") or [] if t.get("topologyKey") == HOSTNAME_KEY]
    pdbs = [o for o in objs if o["kind"] == "PodDisruptionBudget"]
    if replicas > 1:
        ck.check(f"{where}: soft spreading across nodes (topologyKey {HOSTNAME_KEY}, ScheduleAnyway, its own pods)",
                 len(spreads) == 1 and spreads[0].get("whenUnsatisfiable") == "ScheduleAnyway"
                 and spreads[0].get("maxSkew") == 1
                 and labels_subset((spreads[0].get("labelSelector") or {}).get("matchLabels"), pod_labels),
                 str(spreads))
        ck.check(f"{where}: exactly one PodDisruptionBudget", len(pdbs) == 1, f"{len(pdbs)}")
        for pdb in pdbs[:1]:
            pw = f"PodDisruptionBudget/{pdb['metadata']['name']}"
            ck.check(f"{pw}: policy/v1, in {dep_ns}", pdb.get("apiVersion") == "policy/v1"
                     and pdb["metadata"].get("namespace") == dep_ns)
            ck.check(f"{pw}: minAvailable 1, no maxUnavailable",
                     pdb["spec"].get("minAvailable") == 1 and "maxUnavailable" not in pdb["spec"], str(pdb["spec"]))
            ck.check(f"{pw}: unhealthyPodEvictionPolicy AlwaysAllow",
                     pdb["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow")
            ck.check(f"{pw}: selects the writer's pods",
                     labels_subset(pdb["spec"].get("selector", {}).get("matchLabels"), pod_labels))
    else:
        ck.check(f"{where}: one replica: no PodDisruptionBudget (minAvailable 1 would block every drain)", not pdbs)
        ck.check(f"{where}: one replica: no spreading constraint", not spreads)
    ck.check(f"{where}: automountServiceAccountToken true (it calls the API server)",
             spec.get("automountServiceAccountToken") is True)
    result = check_refresher(ck, dep, expect)
    if not result:
        return
    _, c, args = result
    check_pod_env(ck, where, c)

    # Targets: --secret NAMESPACE/NAME each (fan-out) or --secret-name/--secret-namespace.
    fan_out = arg_value(args, "--secret")
    if expect.get("fanOut", bool(fan_out)):
        ck.check(f"{where}: fan-out: no --secret-name/--secret-namespace next to --secret",
                 not arg_value(args, "--secret-name") and not arg_value(args, "--secret-namespace"))
        got = [tuple(t.split("/", 1)) for t in fan_out]
    else:
        names = arg_value(args, "--secret-name")
        ck.check(f"{where}: exactly one --secret-name and no --secret", len(names) == 1 and not fan_out, str(names))
        ns_args = arg_value(args, "--secret-namespace")
        got = [(ns_args[0] if ns_args else dep_ns, names[0] if names else None)]
    if expect.get("targets") is not None:
        want = [tuple(t) for t in expect["targets"]]
        ck.check(f"{where}: Secret targets {', '.join('/'.join(t) for t in want)}", got == want, str(got))
    targets = got
    ck.check(f"{where}: no target twice", len(set(targets)) == len(targets), str(targets))
    if expect.get("tokenKey"):
        ck.check(f"{where}: --secret-key={expect['tokenKey']}",
                 arg_value(args, "--secret-key") == [expect["tokenKey"]])
    ck.check(f"{where}: no --token-file (Secret output only)", not arg_value(args, "--token-file"))
    if lease:
        ck.check(f"{where}: --leader-elect", args.count("--leader-elect") == 1)
        ck.check(f"{where}: --lease-name={lease['name']}", arg_value(args, "--lease-name") == [lease["name"]],
                 str(arg_value(args, "--lease-name")))
        ck.check(f"{where}: --lease-duration={lease['duration']}",
                 arg_value(args, "--lease-duration") == [lease["duration"]])
        ck.check(f"{where}: no --lease-namespace (the pod's namespace, from POD_NAMESPACE)",
                 not arg_value(args, "--lease-namespace"))
    else:
        ck.check(f"{where}: no leader election arguments",
                 not [a for a in args if a.startswith(("--leader-elect", "--lease-"))])
    ck.check(f"{where}: --events {'given' if expect.get('events') else 'absent'}",
             ("--events" in args) == bool(expect.get("events")))

    sa_name = spec.get("serviceAccountName")
    if expect.get("serviceAccountCreated", True):
        sas = [o for o in objs if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == sa_name
               and o["metadata"].get("namespace") == dep_ns]
        ck.check(f"{where}: its ServiceAccount {sa_name} exists in {dep_ns}", len(sas) == 1)
        if sas:
            ck.check(f"ServiceAccount/{sa_name}: automountServiceAccountToken false",
                     sas[0].get("automountServiceAccountToken") is False)
    if not expect.get("rbac", True):
        ck.check("no Role or RoleBinding (rbac.create false)",
                 not [o for o in objs if o["kind"] in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")])
        return
    roles = [o for o in objs if o["kind"] == "Role"]
    ck.check("no ClusterRole or ClusterRoleBinding",
             not [o for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding")])
    for role in roles:
        rw = f"Role/{role['metadata']['name']} in {role['metadata'].get('namespace')}"
        wild = [r for r in role.get("rules") or []
                if "*" in (r.get("verbs") or []) + (r.get("resources") or []) + (r.get("apiGroups") or [])]
        ck.check(f"{rw}: no '*' in verbs, resources or API groups", not wild, str(wild))

    # Secrets: one Role per target namespace, limited to its Secret names.
    by_ns = {}
    for ns, name in targets:
        by_ns.setdefault(ns, []).append(name)
    secret_roles = [r for r in roles if rules_on(r, "", "secrets")]
    ck.check(f"one Secret Role per target namespace ({', '.join(sorted(by_ns))}), none elsewhere",
             sorted(r["metadata"].get("namespace") for r in secret_roles) == sorted(by_ns),
             str([r["metadata"].get("namespace") for r in secret_roles]))
    for role in secret_roles:
        ns = role["metadata"].get("namespace")
        rw = f"Role/{role['metadata']['name']} in {ns}"
        rules = role.get("rules") or []
        ck.check(f"{rw}: exactly one rule", len(rules) == 1, f"{len(rules)} rules")
        if rules:
            rule = rules[0]
            ck.check(f"{rw}: core API group, resource secrets",
                     rule.get("apiGroups") == [""] and rule.get("resources") == ["secrets"], str(rule))
            want_names = sorted(by_ns.get(ns, []))
            ck.check(f"{rw}: resourceNames equals the target Secret name(s) {want_names}",
                     sorted(rule.get("resourceNames") or []) == want_names and want_names,
                     str(rule.get("resourceNames")))
            verbs = set(rule.get("verbs") or [])
            ck.check(f"{rw}: verbs include patch (server-side apply) and are within {sorted(ALLOWED_SECRET_VERBS)}",
                     "patch" in verbs and verbs <= ALLOWED_SECRET_VERBS, str(sorted(verbs)))
        ck.check(f"{rw}: a RoleBinding in {ns} binds it to ServiceAccount {dep_ns}/{sa_name}",
                 len(bindings_to(objs, role, sa_name, dep_ns)) == 1)

    # The Lease: get/update/watch by name, create unnamed, in the pods' namespace.
    lease_roles = [r for r in roles if rules_on(r, "coordination.k8s.io", "leases")]
    if lease:
        ck.check(f"exactly one Lease Role, in {dep_ns}",
                 len(lease_roles) == 1 and lease_roles[0]["metadata"].get("namespace") == dep_ns,
                 str([(r["metadata"]["name"], r["metadata"].get("namespace")) for r in lease_roles]))
        for role in lease_roles[:1]:
            rw = f"Role/{role['metadata']['name']}"
            rules = role.get("rules") or []
            ck.check(f"{rw}: only rules on coordination.k8s.io leases",
                     rules and all(r.get("apiGroups") == ["coordination.k8s.io"] and r.get("resources") == ["leases"]
                                   for r in rules), str(rules))
            named = [r for r in rules if r.get("resourceNames")]
            unnamed = [r for r in rules if not r.get("resourceNames")]
            ck.check(f"{rw}: get, update and watch limited to resourceNames [{lease['name']}]",
                     len(named) == 1 and named[0]["resourceNames"] == [lease["name"]]
                     and sorted(named[0].get("verbs") or []) == ["get", "update", "watch"], str(named))
            ck.check(f"{rw}: create (which cannot be limited by name) and nothing else unnamed",
                     len(unnamed) == 1 and unnamed[0].get("verbs") == ["create"], str(unnamed))
            ck.check(f"{rw}: a RoleBinding binds it to ServiceAccount {dep_ns}/{sa_name}",
                     len(bindings_to(objs, role, sa_name, dep_ns)) == 1)
    else:
        ck.check("no Lease Role without leader election", not lease_roles)

    # Events: create and patch in the pods' namespace.
    event_roles = [r for r in roles if rules_on(r, "events.k8s.io", "events") or rules_on(r, "", "events")]
    if expect.get("events"):
        ck.check(f"exactly one Events Role, in {dep_ns}",
                 len(event_roles) == 1 and event_roles[0]["metadata"].get("namespace") == dep_ns)
        for role in event_roles[:1]:
            rw = f"Role/{role['metadata']['name']}"
            ck.check(f"{rw}: exactly create and patch on events.k8s.io events",
                     role.get("rules") == [{"apiGroups": ["events.k8s.io"], "resources": ["events"],
                                            "verbs": ["create", "patch"]}], str(role.get("rules")))
            ck.check(f"{rw}: a RoleBinding binds it to ServiceAccount {dep_ns}/{sa_name}",
                     len(bindings_to(objs, role, sa_name, dep_ns)) == 1)
    else:
        ck.check("no Events Role without events", not event_roles)
    ck.check("every Role is a target Secret's, the Lease's or the Events'",
             len(roles) == len(secret_roles) + len(lease_roles) + len(event_roles), str(len(roles)))
    bindings = [o for o in objs if o["kind"] == "RoleBinding"]
    ck.check("as many RoleBindings as Roles, each to a Role of the same name",
             len(bindings) == len(roles) and all(
                 any(r["metadata"]["name"] == (b.get("roleRef") or {}).get("name")
                     and r["metadata"].get("namespace") == b["metadata"].get("namespace") for r in roles)
                 for b in bindings), f"{len(bindings)} RoleBindings")


def rule_key(rule):
    """A rule as comparable data: API groups, resources, names and verbs, each sorted."""
    return (tuple(sorted(rule.get("apiGroups") or [])), tuple(sorted(rule.get("resources") or [])),
            tuple(sorted(rule.get("resourceNames") or [])), tuple(sorted(rule.get("verbs") or [])))


def is_controller(obj):
    spec = pod_spec(obj) if obj["kind"] == "Deployment" else None
    if not spec:
        return False
    return any((c.get("args") or [])[:1] == [CONTROLLER] for _, c in all_containers(spec))


def check_crds(ck, objs):
    """The three CustomResourceDefinitions of cluster mode."""
    crds = {o["metadata"]["name"]: o for o in objs if o["kind"] == "CustomResourceDefinition"}
    ck.check(f"CustomResourceDefinitions exactly {', '.join(sorted(CRDS))}", sorted(crds) == sorted(CRDS),
             str(sorted(crds)))
    for name, (kind, scope) in CRDS.items():
        crd = crds.get(name)
        if crd is None:
            continue
        cw = f"CustomResourceDefinition/{name}"
        spec = crd.get("spec") or {}
        ck.check(f"{cw}: apiextensions.k8s.io/v1, group {CRD_GROUP}, kind {kind}, scope {scope}",
                 crd.get("apiVersion") == "apiextensions.k8s.io/v1" and spec.get("group") == CRD_GROUP
                 and (spec.get("names") or {}).get("kind") == kind and spec.get("scope") == scope)
        versions = spec.get("versions") or []
        ck.check(f"{cw}: one version, v1alpha1, served and stored, with a schema",
                 [(v.get("name"), v.get("served"), v.get("storage")) for v in versions] == [("v1alpha1", True, True)]
                 and all((v.get("schema") or {}).get("openAPIV3Schema") for v in versions), str(versions)[:200])
        if kind == "FiskilToken":
            ck.check(f"{cw}: status subresource", all((v.get("subresources") or {}).get("status") == {}
                                                      for v in versions))


def check_controller(ck, objs, dep, expect):
    """Cluster mode: the controller Deployment (replicas electing a leader, the controller
    subcommand and its flags, no credentials of its own), its PodDisruptionBudget, its
    ServiceAccount, its ClusterRole (exactly CONTROLLER_RULES) and Lease Role with their
    bindings, and no delete verb anywhere."""
    where = f"Deployment/{dep['metadata']['name']}"
    spec = pod_spec(dep)
    dep_ns = dep["metadata"].get("namespace")
    replicas = expect["replicas"]
    ck.check(f"{where}: {replicas} replica(s)", dep["spec"].get("replicas") == replicas,
             str(dep["spec"].get("replicas")))
    ck.check(f"{where}: strategy RollingUpdate, maxSurge 1, maxUnavailable 0 (a standby is always up)",
             dep["spec"].get("strategy") == {"type": "RollingUpdate",
                                             "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
             str(dep["spec"].get("strategy")))
    pod_labels = dep["spec"]["template"]["metadata"].get("labels") or {}
    ck.check(f"{where}: component label controller", pod_labels.get("app.kubernetes.io/component") == "controller")
    spreads = [t for t in spec.get("topologySpreadConstraints") or [] if t.get("topologyKey") == HOSTNAME_KEY]
    pdbs = [o for o in objs if o["kind"] == "PodDisruptionBudget"]
    if replicas > 1:
        ck.check(f"{where}: soft spreading across nodes (topologyKey {HOSTNAME_KEY}, ScheduleAnyway, its own pods)",
                 len(spreads) == 1 and spreads[0].get("whenUnsatisfiable") == "ScheduleAnyway"
                 and labels_subset((spreads[0].get("labelSelector") or {}).get("matchLabels"), pod_labels),
                 str(spreads))
        ck.check(f"{where}: exactly one PodDisruptionBudget", len(pdbs) == 1, f"{len(pdbs)}")
        for pdb in pdbs[:1]:
            pw = f"PodDisruptionBudget/{pdb['metadata']['name']}"
            ck.check(f"{pw}: policy/v1, in {dep_ns}", pdb.get("apiVersion") == "policy/v1"
                     and pdb["metadata"].get("namespace") == dep_ns)
            ck.check(f"{pw}: minAvailable {expect['minAvailable']}, no maxUnavailable",
                     pdb["spec"].get("minAvailable") == expect["minAvailable"]
                     and "maxUnavailable" not in pdb["spec"], str(pdb["spec"]))
            ck.check(f"{pw}: minAvailable below the {replicas} replicas (a drain can proceed)",
                     (pdb["spec"].get("minAvailable") or 0) < replicas)
            ck.check(f"{pw}: unhealthyPodEvictionPolicy AlwaysAllow",
                     pdb["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow")
            ck.check(f"{pw}: selects the controller's pods",
                     labels_subset(pdb["spec"].get("selector", {}).get("matchLabels"), pod_labels))
    else:
        ck.check(f"{where}: one replica: no PodDisruptionBudget", not pdbs)
    ck.check(f"{where}: automountServiceAccountToken true (it calls the API server)",
             spec.get("automountServiceAccountToken") is True)

    containers = [c for _, c in all_containers(spec)]
    ck.check(f"{where}: one container, {CONTROLLER}", [c["name"] for c in containers] == [CONTROLLER],
             str([c["name"] for c in containers]))
    c = next((x for x in containers if x["name"] == CONTROLLER), None)
    if c is None:
        return
    args = c.get("args") or []
    ck.check(f"{where}: args start with the subcommand controller", args[:1] == [CONTROLLER], str(args[:2]))
    ck.check(f"{where}: --leader-elect", args.count("--leader-elect") == 1)
    ck.check(f"{where}: --lease-name={expect['leaseName']}", arg_value(args, "--lease-name") == [expect["leaseName"]],
             str(arg_value(args, "--lease-name")))
    ck.check(f"{where}: --lease-duration={expect['leaseDuration']}",
             arg_value(args, "--lease-duration") == [expect["leaseDuration"]])
    for key, flag in CONTROLLER_FLAGS:
        if key in expect["args"]:
            want = expect["args"][key]
            ck.check(f"{where}: {flag}={want}", arg_value(args, flag) == [want], f"got {arg_value(args, flag)}")
    ck.check(f"{where}: --listen on port {expect['port']}",
             arg_value(args, "--listen") == [f"[::]:{expect['port']}"], str(arg_value(args, "--listen")))
    writer_only = ("--client-id-file", "--client-secret-file", "--credentials-poll-interval", "--secret",
                   "--secret-name", "--secret-namespace", "--secret-key", "--token-file", "--events")
    ck.check(f"{where}: none of the writer's or the sidecar's options",
             not [a for a in args if a.split("=", 1)[0] in writer_only], str(args))
    ck.check(f"{where}: --lease-namespace only from extraArgs (default: the pod's namespace)",
             [a for a in args if a.startswith("--lease-namespace")]
             == [a for a in expect.get("extraArgs", []) if a.startswith("--lease-namespace")])
    dupes = sorted({a.split("=", 1)[0] for a in args if a.startswith("--")
                    and sum(1 for b in args if b.split("=", 1)[0] == a.split("=", 1)[0]) > 1})
    ck.check(f"{where}: no option given twice", not dupes, f"twice: {dupes}")
    for extra in expect.get("extraArgs", []):
        ck.check(f"{where}: extra argument {extra}", extra in args)
    ck.check(f"{where}: {CONTROLLER} runs as UID {REFRESHER_UID}", effective(c, spec, "runAsUser") == REFRESHER_UID)
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    ck.check(f"{where}: port http-metrics is {expect['port']}", ports.get("http-metrics") == expect["port"],
             f"ports={ports}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (c.get(probe) or {}).get("httpGet") or {}
        ck.check(f"{where}: {probe} GET {path} on http-metrics",
                 get.get("path") == path and get.get("port") == "http-metrics", str(get))
    check_pod_env(ck, where, c)
    for name, value in expect.get("env", {}).items():
        env = {e["name"]: e.get("value") for e in c.get("env") or []}
        ck.check(f"{where}: env {name}={value}", env.get(name) == value, str(env.get(name)))
    if expect.get("resources") is not None:
        ck.check(f"{where}: resources {expect['resources']}", c.get("resources") == expect["resources"],
                 str(c.get("resources")))
    res = c.get("resources") or {}
    ck.check(f"{where}: cpu/memory requests and a memory limit",
             {"cpu", "memory"} <= set(res.get("requests") or {}) and "memory" in (res.get("limits") or {}), str(res))
    vols = {v["name"]: v for v in spec.get("volumes") or []}
    ck.check(f"{where}: mounts no Secret volume but a CA bundle's (credentials come from FiskilCredentials)",
             not [v for v in vols.values() if v.get("secret") and v["name"] != "fiskil-ca"], str(list(vols)))
    mounts = {m["mountPath"] for m in c.get("volumeMounts") or []}
    if expect.get("caFile"):
        ck.check(f"{where}: --ca-file={expect['caFile']}", arg_value(args, "--ca-file") == [expect["caFile"]])
        ck.check(f"{where}: CA bundle mounted at /etc/fiskil/ca", "/etc/fiskil/ca" in mounts)
    else:
        ck.check(f"{where}: no --ca-file and no volume", not arg_value(args, "--ca-file") and not vols)

    sa_name = spec.get("serviceAccountName")
    if expect.get("serviceAccountCreated", True):
        sas = [o for o in objs if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == sa_name
               and o["metadata"].get("namespace") == dep_ns]
        ck.check(f"{where}: its ServiceAccount {sa_name} exists in {dep_ns}", len(sas) == 1)
        for sa in sas[:1]:
            ck.check(f"ServiceAccount/{sa_name}: automountServiceAccountToken false",
                     sa.get("automountServiceAccountToken") is False)
    rbac_kinds = ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
    if not expect.get("rbac", True):
        ck.check("no Role, RoleBinding, ClusterRole or ClusterRoleBinding (rbac.create false)",
                 not [o for o in objs if o["kind"] in rbac_kinds])
        return
    every_rule = [r for o in objs if o["kind"] in ("Role", "ClusterRole") for r in o.get("rules") or []]
    ck.check("no delete or deletecollection verb in any Role or ClusterRole",
             not [r for r in every_rule if {"delete", "deletecollection"} & set(r.get("verbs") or [])])
    ck.check("no '*' in any rule's verbs, resources or API groups",
             not [r for r in every_rule
                  if "*" in (r.get("verbs") or []) + (r.get("resources") or []) + (r.get("apiGroups") or [])])
    cluster_roles = [o for o in objs if o["kind"] == "ClusterRole"]
    ck.check("exactly one ClusterRole", len(cluster_roles) == 1, str(len(cluster_roles)))
    for role in cluster_roles[:1]:
        rw = f"ClusterRole/{role['metadata']['name']}"
        rules = role.get("rules") or []
        ck.check(f"{rw}: exactly the controller's rules (custom resources read, fiskiltokens/status patch, "
                 "namespaces read, secrets read/create/patch, events create/patch)",
                 sorted(map(rule_key, rules)) == sorted(map(rule_key, CONTROLLER_RULES))
                 and len(rules) == len(CONTROLLER_RULES), str(rules))
        ck.check(f"{rw}: no resourceNames (the Secrets' names are the FiskilTokens' choice)",
                 not [r for r in rules if r.get("resourceNames")])
        crbs = [b for b in objs if b["kind"] == "ClusterRoleBinding"
                and (b.get("roleRef") or {}) == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                                 "name": role["metadata"]["name"]}]
        ck.check(f"{rw}: one ClusterRoleBinding to ServiceAccount {dep_ns}/{sa_name}, and no other subject",
                 len(crbs) == 1 and crbs[0].get("subjects") == [{"kind": "ServiceAccount", "name": sa_name,
                                                                "namespace": dep_ns}],
                 str([b.get("subjects") for b in crbs]))
    ck.check("exactly one ClusterRoleBinding", len([o for o in objs if o["kind"] == "ClusterRoleBinding"]) == 1)
    lease_roles = [r for r in objs if r["kind"] == "Role" and rules_on(r, "coordination.k8s.io", "leases")]
    ck.check(f"exactly one Lease Role, in {dep_ns}",
             len(lease_roles) == 1 and lease_roles[0]["metadata"].get("namespace") == dep_ns,
             str([(r["metadata"]["name"], r["metadata"].get("namespace")) for r in lease_roles]))
    for role in lease_roles[:1]:
        rw = f"Role/{role['metadata']['name']}"
        rules = role.get("rules") or []
        named = [r for r in rules if r.get("resourceNames")]
        unnamed = [r for r in rules if not r.get("resourceNames")]
        ck.check(f"{rw}: only rules on coordination.k8s.io leases",
                 rules and all(r.get("apiGroups") == ["coordination.k8s.io"] and r.get("resources") == ["leases"]
                               for r in rules), str(rules))
        ck.check(f"{rw}: get, update and watch limited to resourceNames [{expect['leaseName']}]",
                 len(named) == 1 and named[0]["resourceNames"] == [expect["leaseName"]]
                 and sorted(named[0].get("verbs") or []) == ["get", "update", "watch"], str(named))
        ck.check(f"{rw}: create (which cannot be limited by name) and nothing else unnamed",
                 len(unnamed) == 1 and unnamed[0].get("verbs") == ["create"], str(unnamed))
        ck.check(f"{rw}: a RoleBinding binds it to ServiceAccount {dep_ns}/{sa_name}",
                 len(bindings_to(objs, role, sa_name, dep_ns)) == 1)
    others = [r for r in objs if r["kind"] == "Role" and r not in lease_roles
              and not rules_on(r, "events.k8s.io", "events")]
    ck.check("no Role but the Lease's (and the example's Events Role)", not others,
             str([r["metadata"]["name"] for r in others]))


def check_sidecar(ck, dep, expect, native=True):
    where = f"Deployment/{dep['metadata']['name']}"
    spec = pod_spec(dep)
    events = bool(expect.get("events"))
    if events:
        ck.check(f"{where}: automountServiceAccountToken true (it publishes Events)",
                 spec.get("automountServiceAccountToken") is True)
    else:
        ck.check(f"{where}: automountServiceAccountToken false (no API access needed)",
                 spec.get("automountServiceAccountToken") is False)
    result = check_refresher(ck, dep, expect)
    if not result:
        return
    kind, c, args = result
    ck.check(f"{where}: --events {'given' if events else 'absent'}", ("--events" in args) == events)
    ck.check(f"{where}: no leader election arguments (a sidecar holds its own token)",
             not [a for a in args if a.startswith(("--leader-elect", "--lease-"))])
    if events:
        check_pod_env(ck, where, c)
    if native:
        ck.check(f"{where}: {REFRESHER} is a native sidecar (initContainer)", kind == "initContainer")
        ck.check(f"{where}: {REFRESHER} has restartPolicy Always", c.get("restartPolicy") == "Always")
        get = (c.get("startupProbe") or {}).get("httpGet") or {}
        ck.check(f"{where}: {REFRESHER} startupProbe GET /readyz on http-metrics",
                 get.get("path") == "/readyz" and get.get("port") == "http-metrics", str(get))
    else:
        ck.check(f"{where}: {REFRESHER} is a regular container, listed first",
                 kind == "container" and spec["containers"][0]["name"] == REFRESHER)
        ck.check(f"{where}: {REFRESHER} has no restartPolicy/startupProbe",
                 "restartPolicy" not in c and "startupProbe" not in c)
        ck.check(f"{where}: no initContainers left", not spec.get("initContainers"))
    token_file = expect["tokenFile"]
    ck.check(f"{where}: --token-file={token_file}", arg_value(args, "--token-file") == [token_file])
    ck.check(f"{where}: no --secret-name (file output only)", not arg_value(args, "--secret-name"))
    token_dir = posixpath.dirname(token_file)
    vols = {v["name"]: v for v in spec.get("volumes") or []}
    mine = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
    tm = mine.get(token_dir)
    ck.check(f"{where}: {REFRESHER} mounts {token_dir} read-write", tm is not None and not tm.get("readOnly"))
    vol = vols.get(tm["name"]) if tm else None
    ck.check(f"{where}: {token_dir} is an in-memory emptyDir",
             vol is not None and (vol.get("emptyDir") or {}).get("medium") == "Memory", str(vol))
    apps = [x for x in spec.get("containers") or [] if x["name"] != REFRESHER]
    ck.check(f"{where}: has an app container", len(apps) >= 1)
    fs_group = (spec.get("securityContext") or {}).get("fsGroup")
    ck.check(f"{where}: pod fsGroup set", fs_group is not None)
    for app in apps:
        aw = f"{where} container {app['name']}"
        am = {m["mountPath"]: m for m in app.get("volumeMounts") or []}
        m = am.get(token_dir)
        ck.check(f"{aw}: mounts {token_dir} read-only", m is not None and m.get("readOnly") is True
                 and tm is not None and m["name"] == tm["name"])
        ck.check(f"{aw}: does not mount the credentials",
                 "/var/run/secrets/fiskil" not in am and all(
                     not (vols.get(x["name"]) or {}).get("secret") for x in app.get("volumeMounts") or []))
        uid = effective(app, spec, "runAsUser")
        if spec.get("shareProcessNamespace"):
            # Signalling the app by its pid file needs the same UID (no capability is added).
            ck.check(f"{aw}: runs as {REFRESHER}'s UID, which may signal it ({uid})",
                     uid == effective(c, spec, "runAsUser"))
        else:
            ck.check(f"{aw}: runs as another UID than {REFRESHER} ({uid})", uid != effective(c, spec, "runAsUser"))
        if expect.get("appUid") is not None:
            ck.check(f"{aw}: runAsUser {expect['appUid']}", uid == expect["appUid"])
        if expect.get("appImage"):
            ck.check(f"{aw}: image {expect['appImage']}", app.get("image") == expect["appImage"])
    for key, flag in (("tokenFormat", "--token-format"), ("fileMode", "--file-mode")):
        if key in expect:
            ck.check(f"{where}: {flag}={expect[key]}", arg_value(args, flag) == [expect[key]])


def check_service_monitor(ck, objs, writer, expect):
    services = [o for o in objs if o["kind"] == "Service"]
    ck.check("exactly one Service", len(services) == 1, f"{len(services)} Services")
    if not services:
        return
    svc = services[0]
    sw = f"Service/{svc['metadata']['name']}"
    ports = svc["spec"].get("ports") or []
    ck.check(f"{sw}: port http-metrics {expect['port']}",
             any(p.get("name") == "http-metrics" and p.get("port") == expect["port"] for p in ports), str(ports))
    pod_labels = writer["spec"]["template"]["metadata"].get("labels") or {}
    ck.check(f"{sw}: selector matches the writer's pods", labels_subset(svc["spec"].get("selector"), pod_labels))
    if not expect.get("serviceMonitor"):
        ck.check("no ServiceMonitor", not [o for o in objs if o["kind"] == "ServiceMonitor"])
        return
    sms = [o for o in objs if o["kind"] == "ServiceMonitor"]
    ck.check("exactly one ServiceMonitor", len(sms) == 1)
    if not sms:
        return
    sm = sms[0]
    mw = f"ServiceMonitor/{sm['metadata']['name']}"
    ck.check(f"{mw}: apiVersion monitoring.coreos.com/v1", sm.get("apiVersion") == "monitoring.coreos.com/v1")
    eps = sm["spec"].get("endpoints") or []
    ck.check(f"{mw}: scrapes port http-metrics path /metrics",
             len(eps) == 1 and eps[0].get("port") == "http-metrics" and eps[0].get("path") == "/metrics", str(eps))
    if eps:
        ck.check(f"{mw}: interval {expect['smInterval']}, timeout {expect['smTimeout']}",
                 eps[0].get("interval") == expect["smInterval"] and eps[0].get("scrapeTimeout") == expect["smTimeout"])
    ck.check(f"{mw}: selector matches the Service",
             labels_subset(sm["spec"].get("selector", {}).get("matchLabels"), svc["metadata"].get("labels") or {}))
    ck.check(f"{mw}: namespaceSelector names {svc['metadata']['namespace']}",
             sm["spec"].get("namespaceSelector", {}).get("matchNames") == [svc["metadata"]["namespace"]])
    for k, v in expect.get("smLabels", {}).items():
        ck.check(f"{mw}: label {k}={v}", sm["metadata"].get("labels", {}).get(k) == v)


def check_network_policy(ck, policy, writer, peers):
    """Ingress to the writer's pods: only the listed peers, only to its port."""
    pw = f"NetworkPolicy/{policy['metadata']['name']}"
    spec = policy["spec"]
    pod_labels = writer["spec"]["template"]["metadata"].get("labels") or {}
    selector = spec.get("podSelector", {}).get("matchLabels")
    ck.check(f"{pw}: selects the writer's pods", bool(selector) and labels_subset(selector, pod_labels))
    ck.check(f"{pw}: policyTypes [Ingress]", spec.get("policyTypes") == ["Ingress"], str(spec.get("policyTypes")))
    rules = spec.get("ingress")
    if not peers:
        ck.check(f"{pw}: no peer listed, so no ingress rule", rules == [], str(rules))
        return
    ok = (isinstance(rules, list) and len(rules) == 1 and rules[0].get("from") == peers
          and rules[0].get("ports") == [{"port": "http-metrics", "protocol": "TCP"}])
    ck.check(f"{pw}: one rule, from the {len(peers)} listed peer(s), to port http-metrics", ok, str(rules))


ALERTS = ("FiskilTokenExpiringSoon", "FiskilTokenExpired", "FiskilTokenOutputWriteFailing",
          "FiskilCredentialsRejected", "FiskilTokenRefreshFailing", "FiskilTokenRefresherDown",
          "FiskilTokenRefresherAbsent")
LEADER_ALERTS = ("FiskilTokenRefresherNoLeader", "FiskilTokenRefresherMultipleLeaders")
# Cluster mode: no per-output alert (the controller has no outputs), per-credential and
# per-reason ones instead, and the leader alerts always (the controller always elects a leader).
CONTROLLER_ALERTS = ("FiskilTokensNotReady", "FiskilCredentialTokenExpiringSoon", "FiskilCredentialTokenExpired",
                     "FiskilCredentialsRejected", "FiskilTokenRefreshFailing", "FiskilTokenRefresherDown",
                     "FiskilTokenRefresherAbsent") + LEADER_ALERTS


def check_monitoring(ck, objs, exp, args):
    """The PrometheusRule and the dashboard ConfigMap: where they go, their labels, and what
    the values put in them (tests/deploy/alerts.sh checks what the alerts do)."""
    v = exp["values"]
    pr = v["prometheusRule"]
    for rule in (o for o in objs if o["kind"] == "PrometheusRule"):
        rw = f"PrometheusRule/{rule['metadata']['name']}"
        ck.check(f"{rw}: apiVersion monitoring.coreos.com/v1", rule.get("apiVersion") == "monitoring.coreos.com/v1")
        ns = pr["namespace"] or args.namespace
        ck.check(f"{rw}: in namespace {ns}", rule["metadata"].get("namespace") == ns)
        for k, val in (pr["labels"] or {}).items():
            ck.check(f"{rw}: label {k}={val}", rule["metadata"]["labels"].get(k) == val)
        rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
        if v["controller"]["enabled"]:
            want = set(CONTROLLER_ALERTS)
        else:
            want = set(ALERTS) | (set(LEADER_ALERTS) if v["leaderElection"]["enabled"] else set())
        ck.check(f"{rw}: alerts {', '.join(sorted(want))}", {r.get("alert") for r in rules} == want,
                 str(sorted(r.get("alert") for r in rules)))
        selector = pr["selector"] or f'job="{exp["fullname"]}",namespace="{args.namespace}"'
        for r in rules:
            ck.check(f"{rw}: {r['alert']} selects {{{selector}}}", "{" + selector in r["expr"], r["expr"])
            for k, val in (pr["additionalAlertLabels"] or {}).items():
                ck.check(f"{rw}: {r['alert']} label {k}={val}", r["labels"].get(k) == val)
    for cm in (o for o in objs if o["kind"] == "ConfigMap"):
        cw = f"ConfigMap/{cm['metadata']['name']}"
        d = v["dashboard"]
        ns = d["namespace"] or args.namespace
        ck.check(f"{cw}: in namespace {ns}", cm["metadata"].get("namespace") == ns)
        for k, val in (d["labels"] or {}).items():
            ck.check(f"{cw}: sidecar label {k}={val}", cm["metadata"]["labels"].get(k) == val)
        for k, val in (d["annotations"] or {}).items():
            ck.check(f"{cw}: annotation {k}", (cm["metadata"].get("annotations") or {}).get(k) == val)
        data = cm.get("data") or {}
        ck.check(f"{cw}: one .json key", list(data) == ["fiskil-token-refresher.json"], str(list(data)))
        try:
            dash = json.loads(data.get("fiskil-token-refresher.json", ""))
        except ValueError as e:
            ck.check(f"{cw}: the dashboard is JSON", False, str(e))
            continue
        ids = [p.get("id") for p in dash.get("panels", [])]
        ck.check(f"{cw}: dashboard uid, title and {len(ids)} panels with distinct ids",
                 dash.get("uid") and dash.get("title") and ids and len(set(ids)) == len(ids))


def is_writer(obj):
    spec = pod_spec(obj) if obj["kind"] == "Deployment" else None
    if not spec:
        return False
    _, c = find_refresher(spec)
    args = (c.get("args") or []) if c is not None else []
    return c is not None and bool(arg_value(args, "--secret-name") or arg_value(args, "--secret"))


def is_sidecar_workload(obj):
    spec = pod_spec(obj) if obj["kind"] == "Deployment" else None
    if not spec:
        return False
    _, c = find_refresher(spec)
    return c is not None and bool(arg_value(c.get("args") or [], "--token-file"))


INJECTION_KINDS = ("MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding", "ValidatingAdmissionPolicy",
                   "ValidatingAdmissionPolicyBinding")
INJECT_LABEL = "fiskil-token-refresher.io/inject"


def check_injection(ck, objs, exp):
    """The admission policies of injection.enabled: what they match, bind and how they fail. What
    they do to pods is checked against a real API server (tests/deploy/injection.sh)."""
    if not exp["values"]["injection"]["enabled"]:
        ck.check("no admission policies (injection.enabled is false)",
                 not [o for o in objs if o["kind"] in INJECTION_KINDS])
        return
    by_kind = {o["kind"]: o for o in objs if o["kind"] in INJECTION_KINDS}
    for kind in ("MutatingAdmissionPolicy", "ValidatingAdmissionPolicy"):
        pol = by_kind.get(kind)
        if pol is None:
            ck.check(f"{kind} rendered", False)
            continue
        spec = pol["spec"]
        mc = spec.get("matchConstraints") or {}
        ck.check(f"{kind}: matches only pod CREATE labelled {INJECT_LABEL}=true",
                 mc.get("resourceRules") == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                              "resources": ["pods"]}]
                 and mc.get("objectSelector") == {"matchLabels": {INJECT_LABEL: "true"}}, str(mc))
        ck.check(f"{kind}: failurePolicy Fail", spec.get("failurePolicy") == "Fail")
        binding = by_kind.get(kind + "Binding") or {}
        bspec = binding.get("spec") or {}
        ck.check(f"{kind}Binding: binds the policy, namespaceSelector from injection.namespaceSelector",
                 bspec.get("policyName") == pol["metadata"]["name"]
                 and bspec.get("matchResources", {}).get("namespaceSelector")
                 == {k: val for k, val in exp["values"]["injection"]["namespaceSelector"].items() if val is not None},
                 str(bspec))
    mut = by_kind.get("MutatingAdmissionPolicy")
    if mut:
        conds = {c["name"]: c["expression"] for c in mut["spec"].get("matchConditions") or []}
        ck.check("MutatingAdmissionPolicy: skips pods that have the sidecar (matchCondition no-sidecar-yet)",
                 'c.name == "token-refresher"' in conds.get("no-sidecar-yet", ""), str(conds))
        ck.check("MutatingAdmissionPolicy: reinvocationPolicy Never", mut["spec"].get("reinvocationPolicy") == "Never")
        sidecar = next((m["jsonPatch"]["expression"] for m in mut["spec"].get("mutations") or []
                        if m.get("patchType") == "JSONPatch" and "/spec/initContainers/0" in m["jsonPatch"]["expression"]),
                       "")
        ck.check("MutatingAdmissionPolicy: the sidecar is native (restartPolicy Always) with a startupProbe on /readyz",
                 'restartPolicy: "Always"' in sidecar and 'startupProbe: Object.spec.initContainers.startupProbe{'
                 'failureThreshold' in sidecar and '"/readyz"' in sidecar, sidecar[:200])
        ck.check("MutatingAdmissionPolicy: the sidecar's securityContext is the chart's",
                 all(f"{k}: {'true' if val is True else 'false' if val is False else val}" in sidecar
                     for k, val in exp["values"]["securityContext"].items() if not isinstance(val, dict)))
    vap = by_kind.get("ValidatingAdmissionPolicy")
    if vap:
        msgs = [x.get("message", "") for x in vap["spec"].get("validations") or []]
        ck.check("ValidatingAdmissionPolicy: every message names its annotation",
                 msgs and all("annotation fiskil-token-refresher.io/" in m for m in msgs), str(msgs))


def chart_expectations(args):
    with open(posixpath.join(args.chart_dir, "values.yaml")) as f:
        defaults = yaml.safe_load(f)
    with open(args.values) as f:
        overrides = yaml.safe_load(f) or {}
    v = deep_merge(defaults, overrides)
    chart_name = "fiskil-token-refresher"
    if v["fullnameOverride"]:
        fullname = v["fullnameOverride"][:63].rstrip("-")
    else:
        name = v["nameOverride"] or chart_name
        fullname = args.release if name in args.release else f"{args.release}-{name}"
        fullname = fullname[:63].rstrip("-")
    cred = v["credentials"]
    exp = {
        "values": v,
        "fullname": fullname,
        "port": int(v["port"]),
        "args": {key: fmt_value(v[key]) for key, _ in TIMING_FLAGS},
        "extraArgs": v["extraArgs"],
        "credentialsSecret": cred["existingSecret"] or f"{fullname}-credentials",
        "clientIdKey": cred["clientIdKey"] if cred["existingSecret"] else "client_id",
        "clientSecretKey": cred["clientSecretKey"] if cred["existingSecret"] else "client_secret",
        "createCredentials": bool(not cred["existingSecret"] and cred["clientId"] and cred["clientSecret"]),
        "tokenSecret": v["tokenSecret"]["name"] or f"{fullname}-token",
        "tokenNamespace": v["tokenSecret"]["namespace"] or args.namespace,
        "tokenKey": v["tokenSecret"]["key"],
        "replicas": int(v["standalone"]["replicas"]) if v["leaderElection"]["enabled"] else 1,
        "leaderElection": ({"name": v["leaderElection"]["leaseName"] or fullname,
                            "duration": v["leaderElection"]["leaseDuration"]}
                           if v["leaderElection"]["enabled"] else None),
        "fanOut": bool(v["tokenSecret"]["targets"]),
        "events": bool(v["events"]["enabled"]),
        "serviceAccountCreated": v["serviceAccount"]["create"],
        "rbac": v["rbac"]["create"],
        "serviceMonitor": v["serviceMonitor"]["enabled"],
        "service": v["service"]["enabled"] or v["serviceMonitor"]["enabled"],
        "smInterval": v["serviceMonitor"]["interval"],
        "smTimeout": v["serviceMonitor"]["scrapeTimeout"],
        "smLabels": v["serviceMonitor"]["labels"] or {},
        "env": {},
    }
    default_name = v["tokenSecret"]["name"] or f"{fullname}-token"
    exp["targets"] = ([(t["namespace"], t.get("name") or default_name) for t in v["tokenSecret"]["targets"]]
                      if v["tokenSecret"]["targets"] else [(exp["tokenNamespace"], default_name)])
    if v["ca"]["configMap"] or v["ca"]["secret"]:
        exp["caFile"] = f"/etc/fiskil/ca/{v['ca']['key']}"
    if v["proxy"]["httpsProxy"]:
        exp["env"]["HTTPS_PROXY"] = v["proxy"]["httpsProxy"]
    if v["proxy"]["noProxy"]:
        exp["env"]["NO_PROXY"] = v["proxy"]["noProxy"]
    for e in v["extraEnv"]:
        if "value" in e:
            exp["env"][e["name"]] = e["value"]
    ctrl = v["controller"]
    exp["writer"] = bool(v["standalone"]["enabled"] and not ctrl["enabled"])
    exp["controller"] = dict(exp, replicas=int(ctrl["replicas"]), minAvailable=int(ctrl["pdb"]["minAvailable"]),
                             leaseName=f"{fullname}-controller"[:63].rstrip("-"),
                             leaseDuration=ctrl["leaderElection"]["leaseDuration"], extraArgs=ctrl["extraArgs"],
                             resources=ctrl["resources"]) if ctrl["enabled"] else None
    with open(args.values) as f:
        helm_args = next((line[len("# helm-args: "):].split() for line in f if line.startswith("# helm-args: ")), [])
    exp["crds"] = "--include-crds" in helm_args
    ex = v["example"]
    exp["example"] = dict(exp, tokenFile=ex["tokenFile"], tokenFormat=ex["tokenFormat"],
                          fileMode=str(ex["fileMode"]), appUid=ex["app"]["runAsUser"], appImage=ex["app"]["image"])
    return exp


def run_chart(ck, objs, args):
    exp = chart_expectations(args)
    v = exp["values"]
    # Which objects, exactly.
    want = []
    ctrl = exp["controller"]
    if exp["writer"] or ctrl:
        if v["serviceAccount"]["create"]:
            want.append(("ServiceAccount", v["serviceAccount"]["name"] or exp["fullname"]))
        if exp["service"]:
            want.append(("Service", exp["fullname"]))
        if exp["serviceMonitor"]:
            want.append(("ServiceMonitor", exp["fullname"]))
        if v["networkPolicy"]["enabled"]:
            want.append(("NetworkPolicy", exp["fullname"]))
    if ctrl:
        name = ctrl["leaseName"]
        want.append(("Deployment", name))
        if v["rbac"]["create"]:
            want += [("ClusterRole", name), ("ClusterRoleBinding", name),
                     ("Role", f"{name}-lease"), ("RoleBinding", f"{name}-lease")]
        if ctrl["replicas"] > 1:
            want.append(("PodDisruptionBudget", name))
    if exp["crds"]:
        want += [("CustomResourceDefinition", name) for name in CRDS]
    if exp["writer"]:
        want.append(("Deployment", exp["fullname"]))
        if v["rbac"]["create"]:
            for _ in sorted({ns for ns, _ in exp["targets"]}):
                want += [("Role", exp["fullname"]), ("RoleBinding", exp["fullname"])]
            if exp["leaderElection"]:
                want += [("Role", f"{exp['fullname']}-lease"), ("RoleBinding", f"{exp['fullname']}-lease")]
        if exp["replicas"] > 1:
            want.append(("PodDisruptionBudget", exp["fullname"]))
    if exp["events"] and v["rbac"]["create"] and (exp["writer"] or v["example"]["enabled"]):
        want += [("Role", f"{exp['fullname']}-events"), ("RoleBinding", f"{exp['fullname']}-events")]
    if v["example"]["enabled"]:
        want += [("Deployment", f"{exp['fullname']}-example"), ("ServiceAccount", f"{exp['fullname']}-example")]
    if exp["createCredentials"] and (exp["writer"] or v["example"]["enabled"]):
        want.append(("Secret", exp["credentialsSecret"]))
    if v["prometheusRule"]["enabled"]:
        want.append(("PrometheusRule", exp["fullname"]))
    if v["dashboard"]["enabled"]:
        want.append(("ConfigMap", f"{exp['fullname']}-dashboard"))
    if v["injection"]["enabled"]:
        want += [(kind, exp["fullname"]) for kind in INJECTION_KINDS]
    got = sorted((o["kind"], o["metadata"]["name"]) for o in objs)
    ck.check(f"renders exactly {len(want)} objects: {', '.join(k for k, _ in sorted(want))}",
             got == sorted(want), f"got {got}")

    for o in objs:
        if o["kind"] == "CustomResourceDefinition":
            continue  # from crds/, which Helm does not template: no release labels
        labels = o["metadata"].get("labels") or {}
        missing = [k for k in STANDARD_LABELS if k not in labels]
        ck.check(f"{o['kind']}/{o['metadata']['name']}: standard labels", not missing, f"missing {missing}")
        ck.check(f"{o['kind']}/{o['metadata']['name']}: managed-by Helm, instance {args.release}",
                 labels.get("app.kubernetes.io/managed-by") == "Helm"
                 and labels.get("app.kubernetes.io/instance") == args.release)
        if o["kind"] in CLUSTER_KINDS:
            ck.check(f"{o['kind']}/{o['metadata']['name']}: cluster-scoped, no namespace",
                     "namespace" not in o["metadata"])
        elif o["kind"] not in ("Role", "RoleBinding", "ServiceMonitor", "PrometheusRule", "ConfigMap") + INJECTION_KINDS:
            ck.check(f"{o['kind']}/{o['metadata']['name']}: in the release namespace {args.namespace}",
                     o["metadata"].get("namespace") == args.namespace)
        if o["kind"] == "Deployment":
            tl = o["spec"]["template"]["metadata"].get("labels") or {}
            ck.check(f"Deployment/{o['metadata']['name']}: pod template has the standard labels",
                     all(k in tl for k in STANDARD_LABELS))
            ck.check(f"Deployment/{o['metadata']['name']}: selector matches the pod template",
                     labels_subset(o["spec"]["selector"]["matchLabels"], tl))
            for k, val in (v["podLabels"] or {}).items():
                ck.check(f"Deployment/{o['metadata']['name']}: pod label {k}", tl.get(k) == val)
            ann = o["spec"]["template"]["metadata"].get("annotations") or {}
            for k, val in (v["podAnnotations"] or {}).items():
                ck.check(f"Deployment/{o['metadata']['name']}: pod annotation {k}", ann.get(k) == val)
            if v["metrics"]["scrapeAnnotations"]:
                ck.check(f"Deployment/{o['metadata']['name']}: prometheus.io scrape annotations",
                         ann.get("prometheus.io/scrape") == "true"
                         and ann.get("prometheus.io/port") == str(exp["port"])
                         and ann.get("prometheus.io/path") == "/metrics", str(ann))
            spec = pod_spec(o)
            for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName"):
                if v[key]:
                    ck.check(f"Deployment/{o['metadata']['name']}: {key} from values", spec.get(key) == v[key])
            if v["imagePullSecrets"]:
                ck.check(f"Deployment/{o['metadata']['name']}: imagePullSecrets",
                         spec.get("imagePullSecrets") == v["imagePullSecrets"])
            _, c = find_refresher(spec)
            if c is None:
                c = next((x for _, x in all_containers(spec) if x["name"] == CONTROLLER), None)
            if c is not None:
                img = v["image"]
                want_image = (f"{img['repository']}@{img['digest']}" if img["digest"]
                              else f"{img['repository']}:{img['tag'] or '0.1.0'}")
                ck.check(f"Deployment/{o['metadata']['name']}: image {want_image}", c.get("image") == want_image,
                         c.get("image"))
        if o["kind"] == "Secret":
            data = o.get("data") or {}
            ck.check(f"Secret/{o['metadata']['name']}: client_id and client_secret from values",
                     base64.b64decode(data.get("client_id", "")).decode() == v["credentials"]["clientId"]
                     and base64.b64decode(data.get("client_secret", "")).decode()
                     == v["credentials"]["clientSecret"])

    check_monitoring(ck, objs, exp, args)
    check_injection(ck, objs, exp)
    if exp["crds"]:
        check_crds(ck, objs)
    else:
        ck.check("no CustomResourceDefinition without --include-crds",
                 not [o for o in objs if o["kind"] == "CustomResourceDefinition"])

    workloads = [o for o in objs if pod_spec(o) is not None]
    ck.check("has at least one workload", bool(workloads))
    for o in workloads:
        check_restricted(ck, o)
    writers = [o for o in workloads if is_writer(o)]
    sidecars = [o for o in workloads if is_sidecar_workload(o)]
    controllers = [o for o in workloads if is_controller(o)]
    ck.check(f"{int(exp['writer'])} standalone writer(s)", len(writers) == int(exp["writer"]))
    ck.check(f"{int(bool(ctrl))} controller(s)", len(controllers) == int(bool(ctrl)))
    for c in controllers:
        check_controller(ck, objs, c, ctrl)
        if exp["service"]:
            check_service_monitor(ck, objs, c, exp)
        for policy in (o for o in objs if o["kind"] == "NetworkPolicy"):
            check_network_policy(ck, policy, c, v["networkPolicy"]["from"])
    ck.check(f"{int(v['example']['enabled'])} sidecar workload(s)", len(sidecars) == int(v["example"]["enabled"]))
    for w in writers:
        check_writer(ck, objs, w, exp)
        if exp["service"]:
            check_service_monitor(ck, objs, w, exp)
        for policy in (o for o in objs if o["kind"] == "NetworkPolicy"):
            check_network_policy(ck, policy, w, v["networkPolicy"]["from"])
    for s in sidecars:
        check_sidecar(ck, s, exp["example"], native=True)
        sa_name = pod_spec(s).get("serviceAccountName")
        sa = [o for o in objs if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == sa_name]
        ck.check(f"Deployment/{s['metadata']['name']}: its ServiceAccount exists with automount false",
                 len(sa) == 1 and sa[0].get("automountServiceAccountToken") is False)
        event_roles = [o for o in objs if o["kind"] == "Role" and rules_on(o, "events.k8s.io", "events")]
        bound = [r for r in event_roles if bindings_to(objs, r, sa_name, args.namespace)]
        if exp["events"] and v["rbac"]["create"]:
            ck.check(f"Deployment/{s['metadata']['name']}: ServiceAccount {sa_name} bound to the Events Role",
                     len(bound) == 1 and bound[0]["metadata"].get("namespace") == args.namespace)
        else:
            ck.check(f"Deployment/{s['metadata']['name']}: ServiceAccount {sa_name} bound to no Role",
                     not [b for b in objs if b["kind"] == "RoleBinding" and {"kind": "ServiceAccount",
                          "name": sa_name, "namespace": args.namespace} in (b.get("subjects") or [])])


def run_kustomize(ck, objs, name):
    workloads = [o for o in objs if pod_spec(o) is not None]
    ck.check("has at least one workload", bool(workloads))
    for o in workloads:
        check_restricted(ck, o)
    if name.startswith("controller"):
        run_kustomize_controller(ck, objs, workloads)
        return
    secrets = [o for o in objs if o["kind"] == "Secret"]
    ck.check("includes the credentials Secret (placeholder values)", len(secrets) == 1)
    cred_name = secrets[0]["metadata"]["name"] if secrets else None
    if secrets:
        sd = secrets[0].get("stringData") or {}
        ck.check(f"Secret/{cred_name}: keys client_id and client_secret", set(sd) == {"client_id", "client_secret"})
        ck.check(f"Secret/{cred_name}: values are placeholders",
                 all(str(x).startswith("REPLACE_WITH_") for x in sd.values()))
    nss = {o["metadata"].get("namespace") for o in objs}
    ck.check("every object has the same namespace", len(nss) == 1 and None not in nss, str(nss))
    base = {
        "port": 9847,
        "args": {"refreshRatio": "0.8", "refreshJitter": "0.05", "minRefreshInterval": "1s",
                 "backoffInitial": "1s", "backoffMax": "60s", "backoffMaxExpired": "8s",
                 "connectTimeout": "5s",
                 "requestTimeout": "30s", "credentialsPollInterval": "10s",
                 "tokenUrl": "https://api.fiskil.com/v1/token", "logFormat": "json", "logLevel": "info"},
        "credentialsSecret": cred_name,
        "clientIdKey": "client_id",
        "clientSecretKey": "client_secret",
    }
    writers = [o for o in workloads if is_writer(o)]
    sidecars = [o for o in workloads if is_sidecar_workload(o)]
    if name.startswith("standalone"):
        ck.check("one standalone writer, no sidecar workload", len(writers) == 1 and not sidecars)
        for w in writers:
            check_writer(ck, objs, w, dict(base, tokenKey="token", replicas=2, events=False,
                                           leaderElection={"name": "fiskil-token-refresher", "duration": "15s"}))
    else:
        ck.check("one sidecar workload, no standalone writer", len(sidecars) == 1 and not writers)
        ck.check("no RBAC objects", not [o for o in objs if o["kind"] in ("Role", "RoleBinding")])
        for s in sidecars:
            check_sidecar(ck, s, dict(base, tokenFile="/var/run/fiskil/token", tokenFormat="raw", fileMode="0640"),
                          native="pre-1.29" not in name)
            sa = [o for o in objs if o["kind"] == "ServiceAccount"
                  and o["metadata"]["name"] == pod_spec(s).get("serviceAccountName")]
            ck.check(f"Deployment/{s['metadata']['name']}: its ServiceAccount exists with automount false",
                     len(sa) == 1 and sa[0].get("automountServiceAccountToken") is False)


def run_kustomize_controller(ck, objs, workloads):
    """deploy/controller: the CustomResourceDefinitions, the controller and its RBAC, no
    credentials (each FiskilCredential names its own Secret)."""
    ck.check("no Secret (credentials come from FiskilCredentials)", not [o for o in objs if o["kind"] == "Secret"])
    namespaced = [o for o in objs if o["kind"] not in CLUSTER_KINDS]
    nss = {o["metadata"].get("namespace") for o in namespaced}
    ck.check("every namespaced object has the same namespace", len(nss) == 1 and None not in nss, str(nss))
    ck.check("cluster-scoped objects have no namespace",
             not [o for o in objs if o["kind"] in CLUSTER_KINDS and "namespace" in o["metadata"]])
    check_crds(ck, objs)
    controllers = [o for o in workloads if is_controller(o)]
    ck.check("one controller, no other workload", len(controllers) == 1 and len(workloads) == 1)
    expect = {
        "port": 9847, "replicas": 2, "minAvailable": 1,
        "leaseName": "fiskil-token-refresher-controller", "leaseDuration": "15s",
        "args": {"refreshRatio": "0.8", "refreshJitter": "0.05", "minRefreshInterval": "1s",
                 "backoffInitial": "1s", "backoffMax": "60s", "backoffMaxExpired": "8s", "connectTimeout": "5s",
                 "requestTimeout": "30s", "tokenUrl": "https://api.fiskil.com/v1/token", "logFormat": "json",
                 "logLevel": "info"},
    }
    for c in controllers:
        check_controller(ck, objs, c, expect)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["chart", "kustomize"])
    p.add_argument("name")
    p.add_argument("rendered")
    p.add_argument("--chart-dir")
    p.add_argument("--values")
    p.add_argument("--release", default="fiskil-token-refresher")
    p.add_argument("--namespace", default="fiskil")
    args = p.parse_args()
    with open(args.rendered) as f:
        objs = [d for d in yaml.safe_load_all(f) if d]
    ck = Checker(args.name)
    if args.mode == "chart":
        run_chart(ck, objs, args)
    else:
        run_kustomize(ck, objs, posixpath.basename(args.name))
    return 1 if ck.failed else 0


if __name__ == "__main__":
    sys.exit(main())
