#!/usr/bin/env bash
# Lint and render the Helm chart and the deploy/ kustomizations, and check what
# they render.
#
#   tests/deploy/chart.sh
#
# - helm lint --strict with the defaults and with every value set in
#   tests/deploy/values/;
# - helm template with each value set, checked by check_manifests.py (restricted
#   securityContext on every container, Role resourceNames = the Secret name,
#   the values' timings in the arguments, the native sidecar's restartPolicy
#   Always and startupProbe, ...);
# - every value set in tests/deploy/values-bad/ must FAIL, with the error its
#   "# expect:" line names (schema validation or a template check);
# - check_manifests.py must catch deliberately broken renders;
# - cluster mode (values/controller*.yaml): the controller, its ClusterRole
#   rule for rule, no delete verb, the PodDisruptionBudget, and the
#   CustomResourceDefinitions from crds/ (helm template --include-crds);
# - kustomize build of deploy/sidecar, deploy/sidecar-pre-1.29,
#   deploy/standalone and deploy/controller, checked the same way; the RBAC
#   rules of deploy/ and of the chart agree.
# Prints one line per check and ends with "N passed, M failed"; exits 1 if any
# check failed. Rendered output is kept in $FISKIL_DEPLOY_OUT (default: a
# temporary directory, removed at exit).
set -euo pipefail
# shellcheck source=tests/deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RELEASE=fiskil-token-refresher
NAMESPACE=fiskil

HELM="$("${DEPLOY_TESTS_DIR}/helm.sh")"
KUSTOMIZE="$("${DEPLOY_TESTS_DIR}/kustomize.sh")"
PYTHON="$(with_tool_lock venv venv_python)"

if [[ -n ${FISKIL_DEPLOY_OUT:-} ]]; then
    out="${FISKIL_DEPLOY_OUT}"
    rm -rf "${out}"
    mkdir -p "${out}"
else
    out="$(mktemp -d)"
    trap 'rm -rf "${out}"' EXIT
fi
results="${out}/results.txt"
: >"${results}"

# check NAME CMD...: run CMD quietly (its output goes to ${out}/logs), one line.
check() {
    local name="$1" log
    shift
    mkdir -p "${out}/logs"
    log="${out}/logs/$(printf '%s' "${name}" | tr -c 'A-Za-z0-9._-' '_' | cut -c1-120).log"
    if "$@" >"${log}" 2>&1; then
        printf 'ok   %s\n' "${name}" | tee -a "${results}"
    else
        printf 'FAIL %s\n' "${name}" | tee -a "${results}"
        sed 's/^/     | /' "${log}" | tail -n 20
    fi
}

# run_checker ARGS...: check_manifests.py, whose lines count as checks.
run_checker() {
    local rc=0
    "${PYTHON}" "${DEPLOY_TESTS_DIR}/check_manifests.py" "$@" >"${out}/checker.txt" 2>&1 || rc=$?
    tee -a "${results}" <"${out}/checker.txt"
    if ! grep -qE '^(ok|FAIL) ' "${out}/checker.txt"; then
        printf 'FAIL check_manifests.py %s printed no checks (exit %d)\n' "$*" "${rc}" | tee -a "${results}"
        sed 's/^/     | /' "${out}/checker.txt" | tail -n 20
    fi
    return "${rc}"
}

summary_of() { # summary_of NAME: "NAME: P passed, F failed" from the checker's last run
    printf '     %s: %d checks passed, %d failed\n' "$1" \
        "$(grep -c '^ok ' "${out}/checker.txt" || true)" "$(grep -c '^FAIL ' "${out}/checker.txt" || true)"
}

deploy_log "$("${HELM}" version --short), $("${KUSTOMIZE}" version)"

# helm_args_of VALUES: the words of its "# helm-args:" line, what "helm template" needs to render
# it (--api-versions: what a cluster's discovery gives helm install).
helm_args_of() { sed -n 's/^# helm-args: //p' "$1" | head -n 1; }

# ----------------------------------------------------------------- lint ---
check "helm lint --strict (default values)" "${HELM}" lint --strict "${CHART_DIR}"
for f in "${DEPLOY_TESTS_DIR}"/values/*.yaml; do
    set_name="$(basename "${f}" .yaml)"
    check "helm lint --strict -f values/${set_name}.yaml" "${HELM}" lint --strict "${CHART_DIR}" -f "${f}"
done

# ------------------------------------------------------ good value sets ---
mkdir -p "${out}/chart"
for f in "${DEPLOY_TESTS_DIR}"/values/*.yaml; do
    set_name="$(basename "${f}" .yaml)"
    rendered="${out}/chart/${set_name}.yaml"
    render() { # render VALUES OUT: with the value set's "# helm-args:" (e.g. --api-versions)
        local extra
        read -r -a extra <<<"$(helm_args_of "$1")"
        "${HELM}" template "${RELEASE}" "${CHART_DIR}" --namespace "${NAMESPACE}" -f "$1" "${extra[@]}" >"$2"
    }
    check "helm template -f values/${set_name}.yaml" render "${f}" "${rendered}"
    [[ -s ${rendered} ]] || continue
    run_checker chart "chart/${set_name}" "${rendered}" --chart-dir "${CHART_DIR}" --values "${f}" \
        --release "${RELEASE}" --namespace "${NAMESPACE}" || true
    summary_of "chart/${set_name}"
done

# The NOTES render and name the Secret the writer fills. "helm install
# --dry-run" needs a cluster, so render NOTES.txt through tpl in a copy.
notes_name_the_secret() {
    local copy="${out}/notes-chart"
    rm -rf "${copy}"
    cp -r "${CHART_DIR}" "${copy}"
    cp "${copy}/templates/NOTES.txt" "${copy}/notes-under-test.txt"
    printf '%s\n' 'notes: {{ tpl (.Files.Get "notes-under-test.txt") . | toJson }}' \
        >"${copy}/templates/zz-notes-under-test.yaml"
    "${HELM}" template "${RELEASE}" "${copy}" --namespace "${NAMESPACE}" \
        --show-only templates/zz-notes-under-test.yaml -f "${DEPLOY_TESTS_DIR}/values/custom-namespace.yaml" |
        "${PYTHON}" -c 'import sys, yaml; print(yaml.safe_load(sys.stdin)["notes"])' >"${out}/notes.txt"
    cat "${out}/notes.txt"
    grep -qF 'key "bearer"' "${out}/notes.txt" &&
        grep -qF 'Secret "fiskil-api-token" in namespace "shared-tokens"' "${out}/notes.txt" &&
        grep -qF 'get lease fiskil-token-refresher ' "${out}/notes.txt" &&
        grep -qF "create secret generic ${RELEASE}-credentials" "${out}/notes.txt"
}
check "NOTES.txt names the token Secret, its namespace and key, and the Lease" notes_name_the_secret

# unhealthyPodEvictionPolicy only where the API server knows it (1.27 and later).
eviction_policy_follows_the_cluster() {
    local v
    for v in 1.26.5 1.27.0 1.37.2; do
        "${HELM}" template "${RELEASE}" "${CHART_DIR}" --namespace "${NAMESPACE}" --kube-version "${v}" \
            --show-only templates/poddisruptionbudget.yaml >"${out}/pdb-${v}.yaml" || return 1
        echo "${v}: $(grep -c 'unhealthyPodEvictionPolicy: AlwaysAllow' "${out}/pdb-${v}.yaml")"
    done
    ! grep -q unhealthyPodEvictionPolicy "${out}/pdb-1.26.5.yaml" &&
        grep -q 'unhealthyPodEvictionPolicy: AlwaysAllow' "${out}/pdb-1.27.0.yaml" &&
        grep -q 'unhealthyPodEvictionPolicy: AlwaysAllow' "${out}/pdb-1.37.2.yaml"
}
check "PodDisruptionBudget: unhealthyPodEvictionPolicy from Kubernetes 1.27 on, not before" eviction_policy_follows_the_cluster

# The README's values table names every value, and only values that exist.
readme_documents_values() {
    "${PYTHON}" - "${CHART_DIR}" <<'PY'
import re, sys, yaml
chart = sys.argv[1]
values = yaml.safe_load(open(f"{chart}/values.yaml"))
readme = open(f"{chart}/README.md").read()
# The rows of the "## Values" section's tables (other tables, such as the annotations', are not values).
section = readme.split("\n## Values\n", 1)[1].split("\n## ", 1)[0]
rows = set(re.findall(r"^\| `([^`]+)` \|", section, re.M))
missing, seen = [], set()
def walk(d, prefix=""):
    for k, v in d.items():
        path = prefix + k
        if path in rows:
            seen.add(path)
        elif isinstance(v, dict) and v:
            walk(v, path + ".")
        else:
            missing.append(path)
walk(values)
unknown = sorted(rows - seen)
print("not in the README table:", missing)
print("in the table but not a value:", unknown)
sys.exit(1 if missing or unknown else 0)
PY
}
check "chart README.md documents every value (and no other)" readme_documents_values

# ------------------------------------------------------- bad value sets ---
for f in "${DEPLOY_TESTS_DIR}"/values-bad/*.yaml; do
    set_name="$(basename "${f}" .yaml)"
    expect="$(sed -n 's/^# expect: //p' "${f}" | head -n 1)"
    if [[ -z ${expect} ]]; then
        printf 'FAIL values-bad/%s.yaml has no "# expect:" line\n' "${set_name}" | tee -a "${results}"
        continue
    fi
    rejected() { # rejected FILE EXPECT: helm template fails, and says EXPECT
        local msg rc=0
        msg="$("${HELM}" template "${RELEASE}" "${CHART_DIR}" --namespace "${NAMESPACE}" -f "$1" 2>&1)" || rc=$?
        printf '%s\n' "${msg}"
        [[ ${rc} -ne 0 ]] && grep -qF -- "$2" <<<"${msg}"
    }
    check "values-bad/${set_name}.yaml is rejected (${expect})" rejected "${f}" "${expect}"
    # helm lint only logs a template's "fail"; it does fail on schema errors.
    if grep -q '^# rejected-by: values.schema.json' "${f}"; then
        lint_fails() { ! "${HELM}" lint --strict "${CHART_DIR}" -f "$1"; }
        check "helm lint --strict fails with values-bad/${set_name}.yaml" lint_fails "${f}"
    fi
done

# ------------------------------------ the checker catches broken renders ---
# Each mutation breaks one property of a good render; the checker must fail.
mutant_caught() { # mutant_caught SET PYTHON_EXPR_ON_DOCS
    local set_name="$1" expr="$2" src mutant
    src="${out}/chart/${set_name}.yaml"
    mutant="${out}/mutant.yaml"
    "${PYTHON}" - "${src}" "${mutant}" "${expr}" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
def deployments(): return [d for d in docs if d["kind"] == "Deployment"]
def refresher(d):
    s = d["spec"]["template"]["spec"]
    return next(c for c in (s.get("initContainers") or []) + s["containers"] if c["name"] == "token-refresher")
exec(sys.argv[3])
yaml.safe_dump_all(docs, open(sys.argv[2], "w"))
PY
    local rc=0 report
    report="$("${PYTHON}" "${DEPLOY_TESTS_DIR}/check_manifests.py" chart "mutant/${set_name}" "${mutant}" \
        --chart-dir "${CHART_DIR}" --values "${DEPLOY_TESTS_DIR}/values/${set_name}.yaml" \
        --release "${RELEASE}" --namespace "${NAMESPACE}" 2>&1)" || rc=$?
    # Caught: the checker exits 1 with FAIL lines (not a crash).
    grep '^FAIL ' <<<"${report}"
    [[ ${rc} -eq 1 ]] && grep -q '^FAIL ' <<<"${report}"
}
check "checker catches readOnlyRootFilesystem: false" mutant_caught standalone-default \
    'refresher(deployments()[0])["securityContext"]["readOnlyRootFilesystem"] = False'
check "checker catches a missing capabilities drop" mutant_caught example \
    'deployments()[-1]["spec"]["template"]["spec"]["containers"][0]["securityContext"].pop("capabilities")'
check "checker catches a Role resourceNames that is not the Secret" mutant_caught standalone-default \
    'next(d for d in docs if d["kind"] == "Role")["rules"][0]["resourceNames"] = ["other"]'
check "checker catches a Role with list/watch" mutant_caught standalone-default \
    'next(d for d in docs if d["kind"] == "Role")["rules"][0]["verbs"] += ["list", "watch"]'
check "checker catches a refresh ratio that is not the value" mutant_caught example \
    'a = refresher(deployments()[0])["args"]; a[:] = ["--refresh-ratio=0.8" if x.startswith("--refresh-ratio=") else x for x in a]'
check "checker catches a sidecar without restartPolicy Always" mutant_caught example \
    'refresher(next(d for d in deployments() if d["metadata"]["name"].endswith("-example"))).pop("restartPolicy")'
check "checker catches a sidecar without startupProbe" mutant_caught example \
    'refresher(next(d for d in deployments() if d["metadata"]["name"].endswith("-example"))).pop("startupProbe")'
check "checker catches a token volume on disk instead of in memory" mutant_caught example \
    'next(d for d in deployments() if d["metadata"]["name"].endswith("-example"))["spec"]["template"]["spec"]["volumes"][-1]["emptyDir"].pop("medium")'
check "checker catches strategy RollingUpdate without leader election" mutant_caught single-writer \
    'deployments()[0]["spec"]["strategy"]["type"] = "RollingUpdate"'
check "checker catches strategy Recreate with leader election" mutant_caught standalone-default \
    'deployments()[0]["spec"]["strategy"] = {"type": "Recreate"}'
check "checker catches 1 replica where standalone.replicas is 2" mutant_caught standalone-default \
    'deployments()[0]["spec"]["replicas"] = 1'
check "checker catches a missing --leader-elect" mutant_caught standalone-default \
    'a = refresher(deployments()[0])["args"]; a.remove("--leader-elect")'
check "checker catches --leader-elect without leader election" mutant_caught single-writer \
    'refresher(deployments()[0])["args"].append("--leader-elect")'
check "checker catches a --lease-duration that is not the value" mutant_caught fleet \
    'a = refresher(deployments()[0])["args"]; a[:] = ["--lease-duration=15s" if x.startswith("--lease-duration=") else x for x in a]'
check "checker catches a missing POD_NAME" mutant_caught standalone-default \
    'c = refresher(deployments()[0]); c["env"] = [e for e in c["env"] if e["name"] != "POD_NAME"]'
check "checker catches a missing PodDisruptionBudget" mutant_caught standalone-default \
    'docs[:] = [d for d in docs if d["kind"] != "PodDisruptionBudget"]'
check "checker catches a PodDisruptionBudget with minAvailable 2" mutant_caught fleet \
    'next(d for d in docs if d["kind"] == "PodDisruptionBudget")["spec"]["minAvailable"] = 2'
check "checker catches a PodDisruptionBudget without unhealthyPodEvictionPolicy" mutant_caught standalone-default \
    'next(d for d in docs if d["kind"] == "PodDisruptionBudget")["spec"].pop("unhealthyPodEvictionPolicy")'
check "checker catches a PodDisruptionBudget for one replica" mutant_caught one-replica-leader \
    'docs.append({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "fiskil-token-refresher", "namespace": "fiskil", "labels": docs[0]["metadata"]["labels"]}, "spec": {"minAvailable": 1}})'
check "checker catches hard spreading (DoNotSchedule)" mutant_caught standalone-default \
    'pod = deployments()[0]["spec"]["template"]["spec"]; pod["topologySpreadConstraints"][0]["whenUnsatisfiable"] = "DoNotSchedule"'
check "checker catches a Lease Role whose get/update is not limited by name" mutant_caught standalone-default \
    'r = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("-lease")); r["rules"][0].pop("resourceNames")'
check "checker catches a Lease Role with delete" mutant_caught fleet \
    'r = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("-lease")); r["rules"][1]["verbs"].append("delete")'
check "checker catches a Lease Role with a wildcard verb" mutant_caught standalone-default \
    'r = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("-lease")); r["rules"][0]["verbs"] = ["*"]'
check "checker catches a missing Lease RoleBinding" mutant_caught standalone-default \
    'docs[:] = [d for d in docs if not (d["kind"] == "RoleBinding" and d["metadata"]["name"].endswith("-lease"))]'
check "checker catches a target namespace without its Role" mutant_caught fleet \
    'docs[:] = [d for d in docs if not (d["kind"] == "Role" and d["metadata"]["namespace"] == "team-b")]'
check "checker catches a target Role that names another target's Secret" mutant_caught fleet \
    'next(d for d in docs if d["kind"] == "Role" and d["metadata"]["namespace"] == "team-b")["rules"][0]["resourceNames"] = ["fiskil-token"]'
check "checker catches a target RoleBinding whose subject is in the target namespace" mutant_caught fleet \
    'next(d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["namespace"] == "team-c")["subjects"][0]["namespace"] = "team-c"'
check "checker catches a missing --secret target" mutant_caught fleet \
    'a = refresher(deployments()[0])["args"]; a.remove("--secret=team-b/b-token")'
check "checker catches --secret-name next to the fan-out" mutant_caught fleet \
    'refresher(deployments()[0])["args"].append("--secret-name=fiskil-token")'
check "checker catches a Secret Role in the release namespace under fan-out" mutant_caught fleet \
    'r = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["namespace"] == "team-c"); docs.append(dict(r, metadata=dict(r["metadata"], namespace="fiskil")))'
check "checker catches a missing --events" mutant_caught fleet \
    'a = refresher(deployments()[0])["args"]; a.remove("--events")'
check "checker catches an Events Role on core events" mutant_caught fleet \
    'next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("-events"))["rules"][0]["apiGroups"] = [""]'
check "checker catches an Events Role with get" mutant_caught fleet \
    'next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("-events"))["rules"][0]["verbs"].append("get")'
check "checker catches an example sidecar not bound to the Events Role" mutant_caught example-events \
    'docs[:] = [d for d in docs if d["kind"] != "RoleBinding"]'
check "checker catches an example sidecar publishing Events without a ServiceAccount token" mutant_caught example-events \
    'next(d for d in deployments() if d["metadata"]["name"].endswith("-example"))["spec"]["template"]["spec"]["automountServiceAccountToken"] = False'
check "checker catches a dashboard ConfigMap without the sidecar label" mutant_caught monitoring \
    'next(d for d in docs if d["kind"] == "ConfigMap")["metadata"]["labels"].pop("grafana_dashboard")'
check "checker catches missing leader alerts when leaderElection.enabled" mutant_caught monitoring \
    'r = next(d for d in docs if d["kind"] == "PrometheusRule")["spec"]["groups"][0]; r["rules"] = [x for x in r["rules"] if "Leader" not in x["alert"]]'
check "checker catches an alert that ignores prometheusRule.selector" mutant_caught monitoring \
    'r = next(d for d in docs if d["kind"] == "PrometheusRule")["spec"]["groups"][0]["rules"][0]; r["expr"] = r["expr"].replace("namespace=\"payments\", ", "")'
check "checker catches a NetworkPolicy rule open to every peer" mutant_caught network-policy \
    'next(d for d in docs if d["kind"] == "NetworkPolicy")["spec"]["ingress"][0].pop("from")'
check "checker catches a NetworkPolicy on other pods" mutant_caught network-policy \
    'next(d for d in docs if d["kind"] == "NetworkPolicy")["spec"]["podSelector"] = {}'
check "checker catches an extra object" mutant_caught standalone-default \
    'docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "fiskil", "labels": {}}})'
# Cluster mode.
check "checker catches a controller with 1 replica where controller.replicas is 2" mutant_caught controller \
    'deployments()[0]["spec"]["replicas"] = 1'
check "checker catches controller args without the subcommand first" mutant_caught controller \
    'a = deployments()[0]["spec"]["template"]["spec"]["containers"][0]["args"]; a.append(a.pop(0))'
check "checker catches a controller without --leader-elect" mutant_caught controller \
    'deployments()[0]["spec"]["template"]["spec"]["containers"][0]["args"].remove("--leader-elect")'
check "checker catches a controller with the writer's --client-id-file" mutant_caught controller \
    'deployments()[0]["spec"]["template"]["spec"]["containers"][0]["args"].append("--client-id-file=/x")'
check "checker catches a controller without POD_NAMESPACE" mutant_caught controller \
    'c = deployments()[0]["spec"]["template"]["spec"]["containers"][0]; c["env"] = [e for e in c["env"] if e["name"] != "POD_NAMESPACE"]'
check "checker catches a ClusterRole that may delete Secrets" mutant_caught controller \
    'next(d for d in docs if d["kind"] == "ClusterRole")["rules"][3]["verbs"].append("delete")'
check "checker catches a ClusterRole with update on fiskiltokens" mutant_caught controller \
    'next(d for d in docs if d["kind"] == "ClusterRole")["rules"][0]["verbs"].append("update")'
check "checker catches a ClusterRole without the namespaces rule" mutant_caught controller \
    'r = next(d for d in docs if d["kind"] == "ClusterRole"); r["rules"] = [x for x in r["rules"] if x["resources"] != ["namespaces"]]'
check "checker catches a ClusterRole with a wildcard resource" mutant_caught controller \
    'next(d for d in docs if d["kind"] == "ClusterRole")["rules"][0]["resources"] = ["*"]'
check "checker catches a ClusterRoleBinding to a ServiceAccount of another namespace" mutant_caught controller \
    'next(d for d in docs if d["kind"] == "ClusterRoleBinding")["subjects"][0]["namespace"] = "kube-system"'
check "checker catches a controller Lease Role naming the writer's Lease" mutant_caught controller \
    'next(d for d in docs if d["kind"] == "Role")["rules"][0]["resourceNames"] = ["fiskil-token-refresher"]'
check "checker catches a controller PodDisruptionBudget with minAvailable 2" mutant_caught controller \
    'next(d for d in docs if d["kind"] == "PodDisruptionBudget")["spec"]["minAvailable"] = 2'
check "checker catches a missing CustomResourceDefinition" mutant_caught controller \
    'docs[:] = [d for d in docs if d["metadata"]["name"] != "fiskiltokens.fiskil-token-refresher.io"]'
check "checker catches a FiskilToken definition without the status subresource" mutant_caught controller \
    'next(d for d in docs if d["metadata"]["name"] == "fiskiltokens.fiskil-token-refresher.io")["spec"]["versions"][0].pop("subresources")'
check "checker catches the writer's Deployment in controller mode" mutant_caught controller \
    'docs.append(next(d for d in yaml.safe_load_all(open(sys.argv[1].replace("/controller.yaml", "/standalone-default.yaml"))) if d and d["kind"] == "Deployment"))'

# ------------------------------------------------------------- deploy/ ---
mkdir -p "${out}/deploy"
for dir in sidecar sidecar-pre-1.29 standalone controller; do
    rendered="${out}/deploy/${dir}.yaml"
    kbuild() { "${KUSTOMIZE}" build "$1" >"$2"; }
    check "kustomize build deploy/${dir}" kbuild "${REPO_ROOT}/deploy/${dir}" "${rendered}"
    [[ -s ${rendered} ]] || continue
    run_checker kustomize "deploy/${dir}" "${rendered}" || true
    summary_of "deploy/${dir}"
done
rules_of() { # rules_of FILE RESOURCE [KIND]: each rule of a KIND (default Role) on RESOURCE as "group resource names? verbs", sorted
    "${PYTHON}" - "$1" "$2" "${3:-Role}" <<'PY'
import sys, yaml
out = []
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == sys.argv[3]:
        for r in d.get("rules") or []:
            if sys.argv[2] in r.get("resources", []):
                out.append(f'{r["apiGroups"]} {r["resources"]} named={bool(r.get("resourceNames"))} {sorted(r["verbs"])}')
print("; ".join(sorted(out)))
PY
}
roles_agree() { # roles_agree RESOURCE [VALUES DEPLOY KIND]: the rules on RESOURCE in deploy/DEPLOY and in the chart are the same
    local chart_rules deploy_rules
    chart_rules="$(rules_of "${out}/chart/${2:-standalone-default}.yaml" "$1" "${4:-Role}")"
    deploy_rules="$(rules_of "${out}/deploy/${3:-standalone}.yaml" "$1" "${4:-Role}")"
    echo "chart: ${chart_rules}"
    echo "deploy: ${deploy_rules}"
    [[ -n ${chart_rules} && ${chart_rules} == "${deploy_rules}" ]]
}
check "deploy/standalone Role verbs on secrets equal the chart's secretVerbs" roles_agree secrets
check "deploy/standalone Lease rules equal the chart's leaseRules" roles_agree leases
for resource in fiskiltokens fiskiltokens/status namespaces secrets events; do
    check "deploy/controller ClusterRole rules on ${resource} equal the chart's controllerRules" \
        roles_agree "${resource}" controller controller ClusterRole
done
check "deploy/controller Lease rules equal the chart's" roles_agree leases controller controller
same_crds() { cmp "${CHART_DIR}/crds/fiskil-token-refresher.io.yaml" "${REPO_ROOT}/deploy/controller/crds.yaml"; }
check "the chart's crds/ and deploy/controller/crds.yaml are the same (cargo xtask crds)" same_crds

# -------------------------------------------------------------- summary ---
passed="$(grep -c '^ok ' "${results}" || true)"
failed="$(grep -c '^FAIL ' "${results}" || true)"
printf '%d passed, %d failed\n' "${passed}" "${failed}"
((failed == 0))
