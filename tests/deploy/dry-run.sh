#!/usr/bin/env bash
# Server-side dry-run of every rendered chart manifest (each value set in
# tests/deploy/values/, with its "# helm-args:", so cluster mode's
# values/controller.yaml brings the CustomResourceDefinitions of crds/) and of
# every deploy/ kustomization (deploy/controller included), against a real
# kube-apiserver, in namespaces labelled pod-security.kubernetes.io/enforce=restricted.
#
#   tests/deploy/dry-run.sh KUBECONFIG
#
# e.g. with the throwaway control plane of tests/cluster:
#   tests/cluster/up.sh /tmp/fiskil-cluster-chart
#   tests/deploy/dry-run.sh /tmp/fiskil-cluster-chart/kubeconfig
#   tests/cluster/down.sh /tmp/fiskil-cluster-chart
#
# What it does to the cluster (meant for a throwaway one): creates the
# namespaces the manifests use (labelled restricted), ServiceMonitor and
# PrometheusRule CRD stand-ins, a PriorityClass, the ServiceAccounts (pods are admitted only with
# an existing ServiceAccount), cluster mode's CustomResourceDefinitions (created for
# real: a dry-run serves no API), and, for the RBAC check, the standalone writer's
# Role and RoleBinding in a namespace of its own.
#
# Checks:
# - "kubectl apply --dry-run=server" of each rendered file succeeds with no
#   PodSecurity warning (the namespaces also carry warn=restricted: a workload
#   object only gets warnings, never a rejection); the server keeps the
#   default writer's high-availability fields (the PodDisruptionBudget's
#   unhealthyPodEvictionPolicy, the spreading's matchLabelKeys, the rolling
#   update);
# - every pod template, submitted as a Pod ("kubectl create --dry-run=server"),
#   is admitted under enforce=restricted, and a deliberately non-compliant Pod
#   is rejected (so the enforcement is known to be on);
# - cluster mode: the CustomResourceDefinitions are established, the chart
#   README's FiskilCredential, ClusterFiskilCredential and FiskilToken are
#   accepted (server-side dry-run), and resources that break the schema's rules
#   are refused with the rule's message;
# - RBAC: impersonating the writer's ServiceAccount, a server-side apply of its
#   Secret (the PATCH the daemon sends) creates and then updates it with only
#   the Role's verbs, while other Secrets and other verbs are forbidden; and
#   "patch" alone is shown not to be enough to create it.
# - cluster mode's RBAC: as the controller's ServiceAccount (kubectl auth can-i
#   --as), exactly what the ClusterRole and the Lease Role allow: the custom
#   resources read and fiskiltokens/status patched, namespaces read, Secrets
#   read, created and patched but never updated or deleted, events.k8s.io
#   Events, its own Lease; nothing else.
# Prints one line per check and "N passed, M failed"; exits 1 on any failure.
set -euo pipefail
# shellcheck source=tests/deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -eq 1 && -f $1 ]] || {
    echo "usage: $0 KUBECONFIG" >&2
    exit 2
}
export KUBECONFIG
KUBECONFIG="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"

RELEASE=fiskil-token-refresher
NAMESPACE=fiskil
RBAC_NAMESPACE=fiskil-rbac

HELM="$("${DEPLOY_TESTS_DIR}/helm.sh")"
KUSTOMIZE="$("${DEPLOY_TESTS_DIR}/kustomize.sh")"
KUBECTL="$("${DEPLOY_TESTS_DIR}/kubectl.sh")"
PYTHON="$(with_tool_lock venv venv_python)"
command -v curl >/dev/null 2>&1 || deploy_die "curl is required"

out="$(mktemp -d)"
trap 'rm -rf "${out}"' EXIT
results="${out}/results.txt"
: >"${results}"

check() { # check NAME CMD...: run CMD (output to a log), one line.
    local name="$1" log
    shift
    log="${out}/log.txt"
    if "$@" >"${log}" 2>&1; then
        printf 'ok   %s\n' "${name}" | tee -a "${results}"
    else
        printf 'FAIL %s\n' "${name}" | tee -a "${results}"
        sed 's/^/     | /' "${log}" | tail -n 25
    fi
}
k() { "${KUBECTL}" "$@"; }

deploy_log "kubectl: ${KUBECTL} ($(k version --client 2>/dev/null | head -n 1))"
check "API server reachable" k get --raw /readyz
deploy_log "server: $(k version 2>/dev/null | grep -i '^server' || true)"

# --------------------------------------------------------------- render ---
mkdir -p "${out}/rendered"
for f in "${DEPLOY_TESTS_DIR}"/values/*.yaml; do
    name="chart-$(basename "${f}" .yaml)"
    # "# helm-args:" in a value set: what helm template needs (--api-versions) to render it.
    read -r -a extra <<<"$(sed -n 's/^# helm-args: //p' "${f}" | head -n 1)"
    "${HELM}" template "${RELEASE}" "${CHART_DIR}" --namespace "${NAMESPACE}" -f "${f}" "${extra[@]}" \
        >"${out}/rendered/${name}.yaml"
done
for dir in "${REPO_ROOT}"/deploy/*/; do
    dir="${dir%/}"
    [[ -f ${dir}/kustomization.yaml ]] || continue
    "${KUSTOMIZE}" build "${dir}" >"${out}/rendered/deploy-$(basename "${dir}").yaml"
done
deploy_log "rendered $(find "${out}/rendered" -name '*.yaml' | wc -l) manifest sets"

# Split helpers (PyYAML): namespaces used, ServiceAccounts, Pods from templates.
"${PYTHON}" - "${out}/rendered" "${out}" "${RBAC_NAMESPACE}" <<'PY'
import glob, os, sys, yaml
rendered, out, rbac_ns = sys.argv[1:4]
namespaces, sas = set([rbac_ns]), {}
os.makedirs(os.path.join(out, "pods"), exist_ok=True)
for path in sorted(glob.glob(os.path.join(rendered, "*.yaml"))):
    name = os.path.basename(path)[:-5]
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    pods = []
    for d in docs:
        ns = d["metadata"].get("namespace")
        if ns:
            namespaces.add(ns)
        if d["kind"] == "ServiceAccount":
            sas[(ns, d["metadata"]["name"])] = d
        tmpl = d.get("spec", {}).get("template")
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job") and tmpl:
            pods.append({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": d["metadata"]["name"][:50] + "-dryrun", "namespace": ns,
                             "labels": tmpl.get("metadata", {}).get("labels", {}),
                             "annotations": tmpl.get("metadata", {}).get("annotations", {})},
                "spec": tmpl["spec"]})
    with open(os.path.join(out, "pods", name + ".yaml"), "w") as f:
        yaml.safe_dump_all(pods, f)
with open(os.path.join(out, "namespaces.yaml"), "w") as f:
    yaml.safe_dump_all([{
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
            "pod-security.kubernetes.io/warn": "restricted",
            "pod-security.kubernetes.io/warn-version": "latest",
            "pod-security.kubernetes.io/audit": "restricted"}}} for ns in sorted(namespaces)], f)
# Each namespace's "default" ServiceAccount, which a controller-manager would
# create (a bare API server has none).
for ns in namespaces:
    sas.setdefault((ns, "default"), {"apiVersion": "v1", "kind": "ServiceAccount",
                                     "metadata": {"name": "default", "namespace": ns}})
with open(os.path.join(out, "serviceaccounts.yaml"), "w") as f:
    yaml.safe_dump_all(list(sas.values()), f)
PY

# ------------------------------------------------------------- fixtures ---
check "namespaces created, labelled enforce=restricted ($(grep -c '^kind: Namespace' "${out}/namespaces.yaml"))" \
    k apply -f "${out}/namespaces.yaml"
crd_ready() { # crd_ready FIXTURE PLURAL
    k apply -f "${DEPLOY_TESTS_DIR}/fixtures/$1" &&
        k wait --for condition=established --timeout=60s "crd/$2.monitoring.coreos.com" &&
        # Discovery may lag behind "established".
        for _ in $(seq 1 30); do
            k api-resources --api-group=monitoring.coreos.com 2>/dev/null | grep -qw "$2" && return 0
            sleep 1
        done
    return 1
}
check "fixture: ServiceMonitor CRD stand-in established" crd_ready servicemonitor-crd.yaml servicemonitors
check "fixture: PrometheusRule CRD stand-in established" crd_ready prometheusrule-crd.yaml prometheusrules
check "fixture: PriorityClass platform-critical" k apply -f "${DEPLOY_TESTS_DIR}/fixtures/priorityclass.yaml"
labels_ok() {
    local ns
    for ns in $(k get ns -l pod-security.kubernetes.io/enforce=restricted -o name); do echo "${ns}"; done
    [[ $(k get ns "${NAMESPACE}" -o jsonpath='{.metadata.labels.pod-security\.kubernetes\.io/enforce}') == restricted ]]
}
check "namespace ${NAMESPACE} enforces restricted" labels_ok

# ------------------------------------------------------ dry-run objects ---
dry_run_apply() { # dry_run_apply FILE: server dry-run, no warnings at all
    local errf="${out}/stderr.txt" rc=0
    k apply --dry-run=server -f "$1" 2>"${errf}" || rc=$?
    cat "${errf}"
    [[ ${rc} -eq 0 ]] && ! grep -qi 'warning' "${errf}"
}
for f in "${out}"/rendered/*.yaml; do
    name="$(basename "${f}" .yaml)"
    n="$(grep -c '^kind: ' "${f}" || true)"
    check "${name}: kubectl apply --dry-run=server (${n} objects), no warnings" dry_run_apply "${f}"
done

# The high-availability fields the API server could drop on an older version: it keeps them.
ha_fields_kept() {
    k apply --dry-run=server -f "${out}/rendered/chart-standalone-default.yaml" -o json >"${out}/applied.json" || return 1
    "${PYTHON}" - "${out}/applied.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
items = doc.get("items", [doc])
pdb = next(i for i in items if i["kind"] == "PodDisruptionBudget")
dep = next(i for i in items if i["kind"] == "Deployment")
spread = dep["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
print("PDB:", pdb["spec"])
print("spread:", spread)
print("strategy:", dep["spec"]["strategy"])
ok = (pdb["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow" and pdb["spec"].get("minAvailable") == 1
      and spread.get("matchLabelKeys") == ["pod-template-hash"] and spread.get("whenUnsatisfiable") == "ScheduleAnyway"
      and dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
sys.exit(0 if ok else 1)
PY
}
check "chart-standalone-default: the server keeps unhealthyPodEvictionPolicy, matchLabelKeys and the rolling update" ha_fields_kept

# ---------------------------------------------------- dry-run pods (PSS) ---
check "ServiceAccounts created (pods need them at admission)" k apply -f "${out}/serviceaccounts.yaml"
dry_run_pods() { # dry_run_pods FILE: each Pod admitted under enforce=restricted
    local errf="${out}/stderr.txt" rc=0
    k create --dry-run=server -f "$1" -o name 2>"${errf}" || rc=$?
    cat "${errf}"
    [[ ${rc} -eq 0 ]] && ! grep -qi 'warning\|forbidden\|violate' "${errf}"
}
for f in "${out}"/pods/*.yaml; do
    name="$(basename "${f}" .yaml)"
    n="$(grep -c '^kind: Pod' "${f}" || true)"
    ((n > 0)) || continue
    check "${name}: ${n} pod template(s) admitted as Pods under enforce=restricted" dry_run_pods "${f}"
done
negative_control() { # a pod that violates restricted must be rejected
    local msg rc=0
    msg="$(k create --dry-run=server -f - 2>&1 <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: not-restricted
  namespace: ${NAMESPACE}
spec:
  automountServiceAccountToken: false
  containers:
    - name: c
      image: busybox:1.37
      securityContext:
        allowPrivilegeEscalation: true
EOF
)" || rc=$?
    printf '%s\n' "${msg}"
    [[ ${rc} -ne 0 ]] && grep -q 'violates PodSecurity "restricted' <<<"${msg}"
}
check "negative control: a non-restricted Pod is rejected in ${NAMESPACE}" negative_control

# ------------------------------------------- custom resources (cluster mode) ---
crds_established() {
    # A client-side apply, as the fixtures: a second run's dry-run applies of the renders then
    # find the last-applied annotation (a server-side apply would leave it out, and kubectl
    # would warn).
    k apply -f "${REPO_ROOT}/deploy/controller/crds.yaml" &&
        k wait --for condition=established --timeout=60s \
            crd/fiskilcredentials.fiskil-token-refresher.io \
            crd/clusterfiskilcredentials.fiskil-token-refresher.io \
            crd/fiskiltokens.fiskil-token-refresher.io &&
        # Discovery may lag behind "established".
        for _ in $(seq 1 30); do
            k api-resources --api-group=fiskil-token-refresher.io 2>/dev/null | grep -qw fiskiltokens && return 0
            sleep 1
        done
    return 1
}
check "cluster mode: the CustomResourceDefinitions are created and established" crds_established
cr_accepted() { # cr_accepted FILE: server-side dry-run applied, no warning
    local errf="${out}/stderr.txt" rc=0
    k apply --dry-run=server -f "$1" 2>"${errf}" || rc=$?
    cat "${errf}"
    [[ ${rc} -eq 0 ]] && ! grep -qi 'warning' "${errf}"
}
cr_refused() { # cr_refused FILE MESSAGE: refused by the server, which says MESSAGE
    local msg rc=0
    msg="$(k apply --dry-run=server -f "$1" 2>&1)" || rc=$?
    printf '%s\n' "${msg}"
    [[ ${rc} -ne 0 ]] && grep -qF -- "$2" <<<"${msg}"
}
crs="${out}/custom-resources"
mkdir -p "${crs}"
cat >"${crs}/readme.yaml" <<EOF
apiVersion: fiskil-token-refresher.io/v1alpha1
kind: FiskilCredential
metadata:
  name: fiskil
  namespace: ${NAMESPACE}
spec:
  secretRef:
    name: fiskil-api
---
apiVersion: fiskil-token-refresher.io/v1alpha1
kind: ClusterFiskilCredential
metadata:
  name: fiskil-shared
spec:
  secretRef:
    namespace: ${NAMESPACE}
    name: fiskil-api
  allowedNamespaces:
    names: [payments]
    selector:
      matchLabels:
        fiskil-token-refresher.io/tokens: allowed
---
apiVersion: fiskil-token-refresher.io/v1alpha1
kind: FiskilToken
metadata:
  name: fiskil-token
  namespace: ${NAMESPACE}
spec:
  credentialRef:
    kind: FiskilCredential
    name: fiskil
  secretName: fiskil-token
  refreshRatio: 0.7
  refreshJitter: 0.1
EOF
cat >"${crs}/http-token-url.yaml" <<EOF
apiVersion: fiskil-token-refresher.io/v1alpha1
kind: FiskilCredential
metadata:
  name: plain-http
  namespace: ${NAMESPACE}
spec:
  secretRef:
    name: fiskil-api
  tokenURL: http://api.fiskil.com/v1/token
EOF
cat >"${crs}/no-namespace-allowed.yaml" <<EOF
apiVersion: fiskil-token-refresher.io/v1alpha1
kind: ClusterFiskilCredential
metadata:
  name: nobody
spec:
  secretRef:
    namespace: ${NAMESPACE}
    name: fiskil-api
  allowedNamespaces: {}
EOF
cat >"${crs}/jitter-not-below-ratio.yaml" <<EOF
apiVersion: fiskil-token-refresher.io/v1alpha1
kind: FiskilToken
metadata:
  name: jittery
  namespace: ${NAMESPACE}
spec:
  credentialRef:
    kind: FiskilCredential
    name: fiskil
  secretName: fiskil-token
  refreshJitter: 0.9
EOF
cat >"${crs}/credential-kind-secret.yaml" <<EOF
apiVersion: fiskil-token-refresher.io/v1alpha1
kind: FiskilToken
metadata:
  name: wrong-kind
  namespace: ${NAMESPACE}
spec:
  credentialRef:
    kind: Secret
    name: fiskil-api
  secretName: fiskil-token
EOF
check "cluster mode: the README's FiskilCredential, ClusterFiskilCredential and FiskilToken are accepted" \
    cr_accepted "${crs}/readme.yaml"
check "cluster mode: a FiskilCredential with an http:// tokenURL is refused" \
    cr_refused "${crs}/http-token-url.yaml" "tokenURL must be an https:// URL"
check "cluster mode: a ClusterFiskilCredential allowing no namespace is refused" \
    cr_refused "${crs}/no-namespace-allowed.yaml" "give names, selector or both"
check "cluster mode: a FiskilToken whose refreshJitter is not below the default refreshRatio is refused" \
    cr_refused "${crs}/jitter-not-below-ratio.yaml" "refreshJitter must be less than refreshRatio"
check "cluster mode: a FiskilToken naming another kind of credential is refused" \
    cr_refused "${crs}/credential-kind-secret.yaml" "Unsupported value"

# ------------------------------------------------------------------ RBAC ---
# The standalone writer's Role/RoleBinding (as the chart renders them) applied
# for real in ${RBAC_NAMESPACE}; then requests as its ServiceAccount.
rbac_file="${out}/rbac.yaml"
"${HELM}" template "${RELEASE}" "${CHART_DIR}" --namespace "${RBAC_NAMESPACE}" \
    --show-only templates/serviceaccount.yaml --show-only templates/role.yaml >"${rbac_file}"
check "RBAC: writer ServiceAccount, Role and RoleBinding applied in ${RBAC_NAMESPACE}" k apply -f "${rbac_file}"
read -r secret_name verbs < <("${PYTHON}" -c '
import sys, yaml
role = next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "Role")
rule = role["rules"][0]
print(rule["resourceNames"][0], ",".join(rule["verbs"]))' "${rbac_file}")
sa_user="system:serviceaccount:${RBAC_NAMESPACE}:${RELEASE}"
deploy_log "RBAC: Role verbs [${verbs}] on secrets/${secret_name}; acting as ${sa_user}"

# Client credentials from the kubeconfig (paths or embedded data).
tls_args() {
    local kc="${out}/kc" field value
    mkdir -p "${kc}"
    CURL_TLS=()
    for field in certificate-authority client-certificate client-key; do
        local jp_cluster=".clusters[0].cluster.${field}" jp_user=".users[0].user.${field}"
        local jp="${jp_user}"
        [[ ${field} == certificate-authority ]] && jp="${jp_cluster}"
        value="$(k config view --raw --minify -o "jsonpath={${jp}-data}")"
        if [[ -n ${value} ]]; then
            base64 -d <<<"${value}" >"${kc}/${field}"
        else
            value="$(k config view --raw --minify -o "jsonpath={${jp}}")"
            [[ -n ${value} ]] || return 1
            cp "${value}" "${kc}/${field}"
        fi
    done
    CURL_TLS=(--cacert "${kc}/certificate-authority" --cert "${kc}/client-certificate" --key "${kc}/client-key")
    SERVER="$(k config view --raw --minify -o 'jsonpath={.clusters[0].cluster.server}')"
}
CURL_TLS=()
SERVER=""
tls_args || deploy_die "cannot read the client certificate and CA from ${KUBECONFIG} (the RBAC check needs them)"

# as_sa METHOD PATH [CONTENT_TYPE BODY]: the HTTP status of a request made as
# the writer's ServiceAccount (admin credentials + impersonation headers).
as_sa() {
    local method="$1" path="$2" ctype="${3:-}" body="${4:-}"
    local args=(-sS -o "${out}/body.txt" -w '%{http_code}' -X "${method}" "${CURL_TLS[@]}"
        -H "Impersonate-User: ${sa_user}"
        -H "Impersonate-Group: system:serviceaccounts"
        -H "Impersonate-Group: system:serviceaccounts:${RBAC_NAMESPACE}"
        -H "Impersonate-Group: system:authenticated")
    if [[ -n ${ctype} ]]; then
        args+=(-H "Content-Type: ${ctype}" --data-binary "${body}")
    fi
    curl "${args[@]}" "${SERVER}${path}"
}
apply_body() { # the kind of body the daemon sends: only its keys, label, no read
    cat <<EOF
{"apiVersion":"v1","kind":"Secret","metadata":{"name":"$1","namespace":"${RBAC_NAMESPACE}"},"type":"Opaque","stringData":{"token":"$2","expires_at":"2030-01-01T00:00:00Z"}}
EOF
}
ssa_path() { echo "/api/v1/namespaces/${RBAC_NAMESPACE}/secrets/$1?fieldManager=fiskil-token-refresher"; }
expect_status() { # expect_status WANT CMD...: CMD prints an HTTP status
    local got
    got="$("${@:2}")" || true
    echo "HTTP ${got}, want $1"
    head -c 600 "${out}/body.txt" 2>/dev/null
    echo
    [[ ${got} == "$1" ]]
}
k -n "${RBAC_NAMESPACE}" delete secret "${secret_name}" --ignore-not-found >/dev/null
check "RBAC: server-side apply creates secrets/${secret_name} with verbs [${verbs}] (201)" \
    expect_status 201 as_sa PATCH "$(ssa_path "${secret_name}")" application/apply-patch+yaml "$(apply_body "${secret_name}" first)"
check "RBAC: server-side apply updates secrets/${secret_name} (200)" \
    expect_status 200 as_sa PATCH "$(ssa_path "${secret_name}")" application/apply-patch+yaml "$(apply_body "${secret_name}" second)"
stored_token() {
    local managers
    managers="$(k -n "${RBAC_NAMESPACE}" get secret "${secret_name}" --show-managed-fields \
        -o jsonpath='{range .metadata.managedFields[*]}{.manager}/{.operation} {end}')"
    echo "managers: ${managers}"
    [[ $(k -n "${RBAC_NAMESPACE}" get secret "${secret_name}" -o jsonpath='{.data.token}' | base64 -d) == second ]] &&
        [[ " ${managers} " == *" fiskil-token-refresher/Apply "* ]]
}
check "RBAC: the Secret holds the updated token, field manager fiskil-token-refresher" stored_token
check "RBAC: server-side apply of another Secret is forbidden (403)" \
    expect_status 403 as_sa PATCH "$(ssa_path other-secret)" application/apply-patch+yaml "$(apply_body other-secret x)"
check "RBAC: creating a Secret with POST is forbidden (403)" \
    expect_status 403 as_sa POST "/api/v1/namespaces/${RBAC_NAMESPACE}/secrets" application/json "$(apply_body posted x)"
check "RBAC: listing Secrets is forbidden (403)" \
    expect_status 403 as_sa GET "/api/v1/namespaces/${RBAC_NAMESPACE}/secrets"
check "RBAC: deleting its Secret is forbidden (403)" \
    expect_status 403 as_sa DELETE "/api/v1/namespaces/${RBAC_NAMESPACE}/secrets/${secret_name}"
if [[ ",${verbs}," == *,get,* ]]; then
    want_get=200
else
    want_get=403
fi
check "RBAC: reading its Secret gives ${want_get} (get is $([[ ${want_get} == 200 ]] || echo 'not ')among the verbs)" \
    expect_status "${want_get}" as_sa GET "/api/v1/namespaces/${RBAC_NAMESPACE}/secrets/${secret_name}"

# Why "create" is there: with "patch" alone, an apply that would create the
# Secret is refused (the API server authorizes it as a create).
patch_only_cannot_create() {
    local rc=0
    k -n "${RBAC_NAMESPACE}" delete secret "${secret_name}" --ignore-not-found &&
        k -n "${RBAC_NAMESPACE}" patch role "${RELEASE}" --type=json \
            -p '[{"op": "replace", "path": "/rules/0/verbs", "value": ["patch"]}]' || return 1
    expect_status 403 as_sa PATCH "$(ssa_path "${secret_name}")" application/apply-patch+yaml \
        "$(apply_body "${secret_name}" third)" || rc=$?
    k apply -f "${rbac_file}" || return 1
    grep -q 'cannot create resource' "${out}/body.txt" || return 1
    return "${rc}"
}
check "RBAC: with verbs [patch] alone, the apply that creates the Secret is forbidden (403)" patch_only_cannot_create

# ------------------------------------------------------ cluster mode's RBAC ---
# The controller's ServiceAccount, ClusterRole and Lease Role (as the chart renders them, release
# "ctrl" so that nothing of the writer's applies) bound for real; then SubjectAccessReviews as
# that ServiceAccount (kubectl auth can-i --as): what cluster mode needs, and nothing more.
ctrl_file="${out}/controller-rbac.yaml"
"${HELM}" template ctrl "${CHART_DIR}" --namespace "${RBAC_NAMESPACE}" --set controller.enabled=true \
    --show-only templates/serviceaccount.yaml --show-only templates/controller-clusterrole.yaml \
    --show-only templates/controller-lease-role.yaml >"${ctrl_file}"
check "cluster mode RBAC: the controller's ServiceAccount, ClusterRole, Lease Role and bindings applied" \
    k apply -f "${ctrl_file}"
ctrl_user="system:serviceaccount:${RBAC_NAMESPACE}:ctrl-fiskil-token-refresher"
ctrl_lease="ctrl-fiskil-token-refresher-controller"
can_i() { # can_i WANT ARGS...: "kubectl auth can-i ARGS" as the controller says WANT (yes or no)
    local got
    # stderr: kubectl warns that a cluster-scoped resource has no namespace.
    got="$(k auth can-i --as="${ctrl_user}" "${@:2}" 2>"${out}/can-i.err")" || true
    cat "${out}/can-i.err"
    echo "can-i ${*:2}: ${got}, want $1"
    [[ ${got} == "$1" ]]
}
crd_group=fiskil-token-refresher.io
while read -r want args; do
    [[ -n ${want} ]] || continue
    read -r -a words <<<"${args}"
    check "cluster mode RBAC: can-i ${args}: ${want}" can_i "${want}" "${words[@]}"
done <<EOF
yes list fiskiltokens.${crd_group} --all-namespaces
yes watch fiskilcredentials.${crd_group} -n team-a
yes get clusterfiskilcredentials.${crd_group}
yes patch fiskiltokens.${crd_group} --subresource=status -n team-a
no patch fiskiltokens.${crd_group} -n team-a
no update fiskiltokens.${crd_group} --subresource=status -n team-a
no create fiskiltokens.${crd_group} -n team-a
no delete fiskiltokens.${crd_group} -n team-a
no update fiskilcredentials.${crd_group} -n team-a
yes list namespaces
yes watch namespaces
no update namespaces
yes list secrets --all-namespaces
yes watch secrets -n team-a
yes get secrets -n team-a
yes create secrets -n team-a
yes patch secrets -n team-a
no update secrets -n team-a
no delete secrets -n team-a
no deletecollection secrets -n team-a
yes create events.events.k8s.io -n team-a
yes patch events.events.k8s.io -n team-a
no create events -n team-a
no get configmaps -n team-a
no list pods --all-namespaces
yes get leases/${ctrl_lease} -n ${RBAC_NAMESPACE}
yes update leases/${ctrl_lease} -n ${RBAC_NAMESPACE}
yes create leases -n ${RBAC_NAMESPACE}
no update leases/other-lease -n ${RBAC_NAMESPACE}
no delete leases/${ctrl_lease} -n ${RBAC_NAMESPACE}
no create leases -n team-a
EOF

# -------------------------------------------------------------- summary ---
passed="$(grep -c '^ok ' "${results}" || true)"
failed="$(grep -c '^FAIL ' "${results}" || true)"
printf '%d passed, %d failed\n' "${passed}" "${failed}"
((failed == 0))
