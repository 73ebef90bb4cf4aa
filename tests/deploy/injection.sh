#!/usr/bin/env bash
# Sidecar injection by the chart's admission policies (injection.enabled), against a real
# kube-apiserver: what "kubectl create --dry-run=server" of pods shows once the chart is installed.
#
#   tests/deploy/injection.sh KUBECONFIG
#   FISKIL_UPDATE_README=1 tests/deploy/injection.sh KUBECONFIG   # rewrite the README's example
#
# Checks:
# - helm install with injection.enabled=true: the API server accepts the policies (it compiles
#   their CEL), and a copy of the chart with a broken expression is refused at install;
# - the README's example ("Add the sidecar with one label"): its pod, created with
#   --dry-run=server, comes back exactly as the README shows it;
# - the injected sidecar and volumes equal the chart example's hand-written ones (same values);
# - pods without the label, pods in namespaces the binding does not select, and pods that already
#   have the sidecar come back unchanged;
# - the annotations (token path, containers, token endpoint and proxy ports, credentials Secret)
#   and the fsGroup rule; a bad annotation value is refused with a message naming it;
# - the sidecar goes first among existing init containers; the pods pass enforce=restricted.
# What it does to the cluster (meant for a throwaway one): installs two releases (removed at
# the end), creates namespaces and ServiceAccounts. Prints one line per check and
# "N passed, M failed".
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${here}/lib.sh"

admin_cluster_tools "$@"
PYTHON="$(with_tool_lock venv venv_python)"

release=fiskil-token-refresher
release_ns=fiskil-injection
ns=payments          # selected by the binding (the README's example lives here)
other_ns=unselected  # not selected
work="$(mktemp -d)"
cleanup() {
    "${HELM}" uninstall "${release}" -n "${release_ns}" >/dev/null 2>&1 || true
    "${HELM}" uninstall broken -n "${release_ns}" >/dev/null 2>&1 || true
    rm -rf "${work}"
}
trap cleanup EXIT
started=${SECONDS}

for n in "${release_ns}" "${ns}" "${other_ns}"; do
    k create namespace "${n}" >/dev/null
    # A bare API server has no controllers: each namespace's default ServiceAccount by hand.
    k -n "${n}" create serviceaccount default >/dev/null
    # The chart example's ServiceAccount, for its pod template.
    k -n "${n}" create serviceaccount "${release}-example" >/dev/null
done
for n in "${ns}" "${other_ns}"; do
    k label namespace "${n}" pod-security.kubernetes.io/enforce=restricted \
        pod-security.kubernetes.io/warn=restricted >/dev/null
done
k label namespace "${ns}" fiskil-token-refresher.io/injection=enabled >/dev/null

# ------------------------------------------------------------- install ---
check "helm install with injection.enabled=true (the API server compiles the policies' CEL)" \
    "${HELM}" install "${release}" "${CHART_DIR}" -n "${release_ns}" \
    --set injection.enabled=true --set standalone.enabled=false
installed_objects() {
    "${HELM}" get manifest "${release}" -n "${release_ns}" | grep '^kind:' | sort | tee "${work}/kinds"
    [[ $(tr '\n' ' ' <"${work}/kinds") == "kind: MutatingAdmissionPolicy kind: MutatingAdmissionPolicyBinding kind: ValidatingAdmissionPolicy kind: ValidatingAdmissionPolicyBinding " ]] &&
        [[ -z $(k get mutatingwebhookconfigurations -o name) ]]
}
check "the release is the four policy objects: no webhook configuration, no injector workload" installed_objects

broken_cel_refused() {
    local copy="${work}/broken-chart" msg rc=0
    cp -r "${CHART_DIR}" "${copy}"
    # One expression with a syntax error.
    sed -i 's/!has(object.spec.initContainers) || !object/!has(object.spec.initContainers) ||| !object/' \
        "${copy}/templates/injection.yaml"
    grep -qF '||| !object' "${copy}/templates/injection.yaml" || return 1
    msg="$("${HELM}" install broken "${copy}" -n "${release_ns}" --set injection.enabled=true \
        --set standalone.enabled=false --set fullnameOverride=broken \
        --set injection.namespaceSelector.matchLabels.selects=nothing 2>&1)" || rc=$?
    printf '%s\n' "${msg}"
    # A failed install keeps what it created before the refusal: remove it at once.
    "${HELM}" uninstall broken -n "${release_ns}" >/dev/null 2>&1 || true
    [[ ${rc} -ne 0 ]] && grep -q 'MutatingAdmissionPolicy' <<<"${msg}" &&
        grep -qi 'compil\|syntax' <<<"${msg}" && ! k get mutatingadmissionpolicy broken >/dev/null 2>&1
}
check "a policy with a broken CEL expression is refused by the API server at install" broken_cel_refused

# dry_run FILE OUT: kubectl create --dry-run=server -o yaml (stderr to OUT.err).
dry_run() { k create --dry-run=server -o yaml -f "$1" >"$2" 2>"$2.err"; }
pod() { # pod NAME NAMESPACE [LABELLED] [ANNOTATIONS_JSON] [EXTRA_SPEC_JSON]: a restricted Pod as JSON
    "${PYTHON}" - "$@" <<'PY'
import json, sys
name, ns = sys.argv[1], sys.argv[2]
labelled = len(sys.argv) > 3 and sys.argv[3] == "yes"
meta = {"name": name, "namespace": ns}
if labelled:
    meta["labels"] = {"fiskil-token-refresher.io/inject": "true"}
if len(sys.argv) > 4 and sys.argv[4]:
    meta["annotations"] = json.loads(sys.argv[4])
app = lambda n: {"name": n, "image": "registry.example.com/app:1", "securityContext": {
    "runAsUser": 10001, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]}}}
spec = {"automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [app("app"), app("worker")]}
if len(sys.argv) > 5 and sys.argv[5]:
    for k, v in json.loads(sys.argv[5]).items():
        spec[k] = v if k != "initContainers" else [dict(app(c["name"]), **c) for c in v]
print(json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}))
PY
}
# query FILE EXPR: a Python expression on the dry-run Pod p (parsed YAML); prints it, true/false.
query() {
    "${PYTHON}" - "$1" "$2" <<'PY'
import sys, yaml
p = yaml.safe_load(open(sys.argv[1]))
spec = p["spec"]
init = spec.get("initContainers") or []
side = next((c for c in init if c["name"] == "token-refresher"), None)
def cont(n): return next(c for c in spec["containers"] if c["name"] == n)
def mounts(n): return {m["name"]: m for m in cont(n).get("volumeMounts") or []}
def arg(flag): return [a.split("=", 1)[1] for a in (side or {}).get("args", []) if a.startswith(flag + "=")]
vols = {v["name"]: v for v in spec.get("volumes") or []}
result = eval(sys.argv[2])
print(result)
sys.exit(0 if result is True else 1)
PY
}

# The policy is active once the API server's informers have it: wait for the first injection.
pod probe "${ns}" yes >"${work}/probe.json"
injected_soon() {
    local i
    for i in $(seq 1 60); do
        if dry_run "${work}/probe.json" "${work}/probe.out" && grep -q 'name: token-refresher' "${work}/probe.out"; then
            echo "injecting after ~$((i / 2)) s"
            return 0
        fi
        sleep 0.5
    done
    cat "${work}/probe.out" "${work}/probe.out.err"
    return 1
}
check "a labelled pod gets the sidecar (policy active)" injected_soon

# ------------------------------------------------------------- README ---
readme_example() {
    "${PYTHON}" - "${REPO_ROOT}/README.md" "$1" "$2" <<'PY'
import re, sys, yaml
readme = open(sys.argv[1]).read()
def block(marker):
    m = re.search(r"<!-- " + marker + r"\b[^>]*-->\s*```yaml\n(.*?)```", readme, re.S)
    if not m:
        sys.exit(f"README.md has no yaml block after <!-- {marker} ... -->")
    return m
mode, path = sys.argv[2], sys.argv[3]
if mode == "input":
    open(path, "w").write(block("injection-example-pod").group(1))
    sys.exit(0)
live = yaml.safe_load(open(path))
for key in ("uid", "creationTimestamp", "resourceVersion", "generation"):
    live["metadata"].pop(key, None)
live.pop("status", None)
m = block("injection-example-result")
text = yaml.safe_dump(live, sort_keys=False, default_flow_style=False, width=1000)
if mode == "update":
    open(sys.argv[1], "w").write(readme[:m.start(1)] + text + readme[m.end(1):])
    print("README.md example updated")
    sys.exit(0)
shown = yaml.safe_load(m.group(1))
if shown != live:
    import difflib
    print("".join(difflib.unified_diff(m.group(1).splitlines(True), text.splitlines(True), "README.md", "live dry-run")))
    print("update it with: FISKIL_UPDATE_README=1 tests/deploy/injection.sh KUBECONFIG")
    sys.exit(1)
print("README example matches the live dry-run")
PY
}
readme_matches() {
    readme_example input "${work}/readme-pod.yaml" || return 1
    dry_run "${work}/readme-pod.yaml" "${work}/readme-result.yaml" || { cat "${work}/readme-result.yaml.err"; return 1; }
    cat "${work}/readme-result.yaml.err"
    ! grep -qi warning "${work}/readme-result.yaml.err" || return 1
    if [[ -n ${FISKIL_UPDATE_README:-} ]]; then
        readme_example update "${work}/readme-result.yaml"
    else
        readme_example check "${work}/readme-result.yaml"
    fi
}
check "README's injection example = kubectl create --dry-run=server -o yaml of its pod (restricted, no warning)" readme_matches

# ------------------------------------------- same as the hand-written sidecar ---
same_as_example() {
    "${HELM}" template "${release}" "${CHART_DIR}" -n "${ns}" --set example.enabled=true \
        --set standalone.enabled=false --show-only templates/example.yaml >"${work}/example.yaml" || return 1
    # The example's pod template as a Pod (without its sidecar and volumes), labelled.
    "${PYTHON}" - "${work}/example.yaml" "${ns}" "${work}" <<'PY' || return 1
import json, sys, yaml
dep = next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "Deployment")
spec = dep["spec"]["template"]["spec"]
hand = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hand-written", "namespace": sys.argv[2]}, "spec": spec}
json.dump(hand, open(f"{sys.argv[3]}/hand.json", "w"))
bare = json.loads(json.dumps(spec))
bare.pop("initContainers")
bare["volumes"] = []
bare["securityContext"].pop("fsGroup")
for c in bare["containers"]:
    c.pop("volumeMounts")
labelled = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "labelled", "namespace": sys.argv[2],
            "labels": {"fiskil-token-refresher.io/inject": "true"}}, "spec": bare}
json.dump(labelled, open(f"{sys.argv[3]}/labelled.json", "w"))
PY
    # The hand-written pod, in the namespace without the policy; the labelled one in the other.
    sed -i "s/\"namespace\": \"${ns}\"/\"namespace\": \"${other_ns}\"/" "${work}/hand.json"
    dry_run "${work}/hand.json" "${work}/hand.out" || { cat "${work}/hand.out.err"; return 1; }
    dry_run "${work}/labelled.json" "${work}/labelled.out" || { cat "${work}/labelled.out.err"; return 1; }
    "${PYTHON}" - "${work}/hand.out" "${work}/labelled.out" <<'PY'
import sys, yaml
hand, inj = (yaml.safe_load(open(f))["spec"] for f in sys.argv[1:3])
ok = True
def same(what, a, b):
    global ok
    if a != b:
        ok = False
        print(f"{what} differs:\n  hand-written: {a}\n  injected:     {b}")
same("initContainers", hand["initContainers"], inj["initContainers"])
same("volumes", sorted(hand["volumes"], key=lambda v: v["name"]), sorted(inj["volumes"], key=lambda v: v["name"]))
same("app volumeMounts", hand["containers"][0]["volumeMounts"], inj["containers"][0]["volumeMounts"])
same("pod securityContext", hand["securityContext"], inj["securityContext"])
print("same sidecar, volumes, mounts and fsGroup" if ok else "")
sys.exit(0 if ok else 1)
PY
}
check "the injected sidecar, volumes and mount equal the chart example's hand-written ones" same_as_example

# ------------------------------------------------------ left unchanged ---
unchanged() { # unchanged NAME NS LABELLED: the dry-run equals that of the same pod without the label
    pod "$1" "$2" "$3" >"${work}/$1.json"
    pod "$1" "${other_ns}" no >"${work}/$1-plain.json"
    dry_run "${work}/$1.json" "${work}/$1.out" || { cat "${work}/$1.out.err"; return 1; }
    dry_run "${work}/$1-plain.json" "${work}/$1-plain.out" || return 1
    "${PYTHON}" - "${work}/$1.out" "${work}/$1-plain.out" <<'PY'
import sys, yaml
a, b = (yaml.safe_load(open(f))["spec"] for f in sys.argv[1:3])
print("spec unchanged" if a == b else f"changed:\n{a}\nvs\n{b}")
sys.exit(0 if a == b else 1)
PY
}
check "a pod without the label is not changed" unchanged plain "${ns}" no
check "a labelled pod in a namespace the binding does not select is not changed" unchanged elsewhere "${other_ns}" yes
already_there() {
    sed 's/"name": "hand-written"/"name": "hand-written-labelled"/; s/"metadata": {/"metadata": {"labels": {"fiskil-token-refresher.io\/inject": "true"}, /' \
        "${work}/hand.json" | sed "s/\"namespace\": \"${other_ns}\"/\"namespace\": \"${ns}\"/" >"${work}/again.json"
    grep -q '"namespace": "'"${ns}"'"' "${work}/again.json" || return 1
    dry_run "${work}/again.json" "${work}/again.out" || { cat "${work}/again.out.err"; return 1; }
    "${PYTHON}" - "${work}/again.out" "${work}/hand.out" <<'PY'
import sys, yaml
a, b = (yaml.safe_load(open(f))["spec"] for f in sys.argv[1:3])
print("spec unchanged" if a == b else f"changed:\n{a}\nvs\n{b}")
sys.exit(0 if a == b else 1)
PY
}
check "a labelled pod that already has the sidecar (the hand-written example) is not changed" already_there

# ----------------------------------------------------------- annotations ---
annotated() { # annotated NAME ANNOTATIONS_JSON EXTRA_SPEC_JSON EXPR
    pod "$1" "${ns}" yes "$2" "$3" >"${work}/$1.json"
    dry_run "${work}/$1.json" "${work}/$1.out" || { cat "${work}/$1.out.err"; return 1; }
    ! grep -qi warning "${work}/$1.out.err" || { cat "${work}/$1.out.err"; return 1; }
    query "${work}/$1.out" "$4"
}
check "defaults: the sidecar is the only init container, native, with a startupProbe on /readyz; both app containers mount the token directory read-only; fsGroup 65532" \
    annotated defaults '' '' \
    '[c["name"] for c in init] == ["token-refresher"] and side["restartPolicy"] == "Always" and side["startupProbe"]["httpGet"]["path"] == "/readyz" and arg("--token-file") == ["/var/run/fiskil/token"] and all(mounts(n)["fiskil-token"] == {"name": "fiskil-token", "mountPath": "/var/run/fiskil", "readOnly": True} for n in ("app", "worker")) and vols["fiskil-credentials"]["secret"]["secretName"] == "fiskil-token-refresher-credentials" and vols["fiskil-token"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Mi"} and spec["securityContext"]["fsGroup"] == 65532'
check "annotations: credentials Secret, token file, only the named container, token endpoint and proxy ports, upstream" \
    annotated annotated '{"fiskil-token-refresher.io/credentials-secret": "team-creds", "fiskil-token-refresher.io/token-file": "/data/fiskil/api-token", "fiskil-token-refresher.io/containers": "worker", "fiskil-token-refresher.io/token-endpoint-port": "8100", "fiskil-token-refresher.io/proxy-port": "8101", "fiskil-token-refresher.io/proxy-upstream": "https://api.example.com"}' '' \
    'vols["fiskil-credentials"]["secret"]["secretName"] == "team-creds" and arg("--token-file") == ["/data/fiskil/api-token"] and arg("--token-listen") == ["127.0.0.1:8100"] and arg("--proxy-listen") == ["127.0.0.1:8101"] and arg("--proxy-upstream") == ["https://api.example.com"] and "fiskil-token" not in mounts("app") and mounts("worker")["fiskil-token"]["mountPath"] == "/data/fiskil" and {m["mountPath"] for m in side["volumeMounts"]} >= {"/data/fiskil"}'
check "a pod's own fsGroup is kept" \
    annotated own-fsgroup '' '{"securityContext": {"runAsNonRoot": true, "fsGroup": 3000, "seccompProfile": {"type": "RuntimeDefault"}}}' \
    'spec["securityContext"]["fsGroup"] == 3000 and side is not None'
check "the sidecar goes before the pod's own init containers" \
    annotated with-init '' '{"initContainers": [{"name": "migrate"}]}' \
    '[c["name"] for c in init] == ["token-refresher", "migrate"] and "fiskil-token" not in {m["name"] for m in init[1].get("volumeMounts") or []}'

refused() { # refused NAME ANNOTATIONS_JSON ANNOTATION: create refused, the message names ANNOTATION
    local rc=0
    pod "$1" "${ns}" yes "$2" >"${work}/$1.json"
    dry_run "${work}/$1.json" "${work}/$1.out" || rc=$?
    cat "${work}/$1.out.err"
    [[ ${rc} -ne 0 ]] && grep -qF "annotation fiskil-token-refresher.io/$3 " "${work}/$1.out.err" &&
        grep -qF "ValidatingAdmissionPolicy" "${work}/$1.out.err"
}
check "refused, naming the annotation: a relative token-file" refused bad-path '{"fiskil-token-refresher.io/token-file": "token"}' token-file
check "refused, naming the annotation: a token-file with .." refused bad-dots '{"fiskil-token-refresher.io/token-file": "/var/../etc/token"}' token-file
check "refused, naming the annotation: a credentials-secret that is no Secret name" refused bad-secret '{"fiskil-token-refresher.io/credentials-secret": "Team_Creds"}' credentials-secret
check "refused, naming the annotation: containers naming no container" refused bad-containers '{"fiskil-token-refresher.io/containers": "app,nope"}' containers
check "refused, naming the annotation: token-endpoint-port = the metrics port" refused bad-port '{"fiskil-token-refresher.io/token-endpoint-port": "9847"}' token-endpoint-port
check "refused, naming the annotation: proxy-port = token-endpoint-port" refused bad-proxy '{"fiskil-token-refresher.io/token-endpoint-port": "8100", "fiskil-token-refresher.io/proxy-port": "8100"}' proxy-port
check "refused, naming the annotation: proxy-upstream without proxy-port" refused bad-upstream '{"fiskil-token-refresher.io/proxy-upstream": "https://api.example.com"}' proxy-upstream

uninstalled() {
    "${HELM}" uninstall "${release}" -n "${release_ns}" || return 1
    [[ -z $(k get mutatingadmissionpolicies,mutatingadmissionpolicybindings,validatingadmissionpolicies,validatingadmissionpolicybindings -o name 2>/dev/null) ]] || return 1
    # Informers catch up: the next labelled pod is not changed.
    local i
    for i in $(seq 1 60); do
        dry_run "${work}/probe.json" "${work}/probe.out" && ! grep -q 'name: token-refresher' "${work}/probe.out" && return 0
        sleep 0.5
    done
    return 1
}
check "helm uninstall removes the policies; labelled pods are then left alone" uninstalled
deploy_log "injection checks took $((SECONDS - started)) s"
check_summary
