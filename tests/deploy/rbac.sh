#!/usr/bin/env bash
# Proves on a real API server what the standalone writer's ServiceAccount may do when the chart
# fans the token out to Secrets in three namespaces, with leader election and Events on: exactly
# create and patch on each target Secret, get, update and watch on its Lease (create on Leases), create
# and patch on Events in its own namespace, and nothing else in any namespace.
#
#   tests/deploy/rbac.sh KUBECONFIG
#
# KUBECONFIG is an admin kubeconfig (e.g. from tests/cluster/up.sh). It installs the chart into
# fresh namespaces (a release namespace, three target namespaces and a fourth, unrelated one) and
# then, with a token minted for the writer's ServiceAccount (TokenRequest API):
# - "kubectl auth can-i" for each verb that matters, yes or no, in every namespace;
# - "kubectl auth can-i --list" in every namespace, compared with the rules a ServiceAccount
#   without any binding gets (the cluster's defaults for every authenticated user): the
#   difference must be exactly the expected rules, with no "*" anywhere;
# - real requests: the server-side apply the daemon sends creates and updates each target
#   Secret, and is refused for any other name; the Lease is created, read and renewed by name,
#   and is refused for any other name; an Event is created;
# - the example sidecar's ServiceAccount (events.enabled gives it one) may create and patch
#   Events in the release namespace and nothing else;
# - a negative control: one verb added to one target's Role must make the comparison fail;
# - when the binary has --leader-elect: two writer processes with the Deployment's arguments and
#   the writer's token fill every target, hold the Lease and publish a LeaderElected Event, and
#   the sidecar with the example's arguments and token publishes CredentialsRejected, all without
#   a forbidden request.
# Prints one line per check and "N passed, M failed".
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${here}/lib.sh"

admin_cluster_tools "$@"
PYTHON="$(with_tool_lock venv venv_python)"

work="$(mktemp -d)"
cleanup() {
    "${HELM}" uninstall fleet -n "${release_ns}" >/dev/null 2>&1 || true
    rm -rf "${work}"
}
trap cleanup EXIT

suffix="$$"
release_ns="fiskil-fleet-${suffix}"
team_a="fiskil-team-a-${suffix}"
team_b="fiskil-team-b-${suffix}"
team_c="fiskil-team-c-${suffix}"
other_ns="fiskil-other-${suffix}"
lease=fleet-writer
# namespace/name of every target: two in team-a (one Role for both), one each in team-b and c.
targets=("${team_a}/fiskil-token" "${team_a}/second-token" "${team_b}/b-token" "${team_c}/fiskil-token")

for ns in "${release_ns}" "${team_a}" "${team_b}" "${team_c}" "${other_ns}"; do
    k create namespace "${ns}" >/dev/null
done
cat >"${work}/values.yaml" <<EOF
credentials:
  clientId: rbac-client
  clientSecret: rbac-secret-${suffix}
tokenSecret:
  name: fiskil-token
  targets:
    - namespace: ${team_a}
    - namespace: ${team_a}
      name: second-token
    - namespace: ${team_b}
      name: b-token
    - namespace: ${team_c}
leaderElection:
  leaseName: ${lease}
events:
  enabled: true
example:
  enabled: true
EOF
check "helm install: targets in 3 namespaces, leader election, Events, the example sidecar" \
    "${HELM}" install fleet "${CHART_DIR}" -n "${release_ns}" -f "${work}/values.yaml"

sa="$(k -n "${release_ns}" get deployment -l app.kubernetes.io/instance=fleet,app.kubernetes.io/component=secret-writer \
    -o jsonpath='{.items[0].spec.template.spec.serviceAccountName}')"
example_sa="$(k -n "${release_ns}" get deployment -l app.kubernetes.io/instance=fleet,app.kubernetes.io/component=example \
    -o jsonpath='{.items[0].spec.template.spec.serviceAccountName}')"
creds_secret="$(k -n "${release_ns}" get secret -l app.kubernetes.io/component=credentials \
    -o jsonpath='{.items[0].metadata.name}')"
# A ServiceAccount with no binding at all: what every ServiceAccount may do in this cluster.
k -n "${release_ns}" create serviceaccount rbac-baseline >/dev/null
echo "writer ServiceAccount ${release_ns}/${sa}; Lease ${lease}; credentials Secret ${creds_secret}"

server="$(k config view --raw --minify -o 'jsonpath={.clusters[0].cluster.server}')"
k config view --raw --minify -o 'jsonpath={.clusters[0].cluster.certificate-authority-data}' | base64 -d >"${work}/ca.crt"
if [[ ! -s ${work}/ca.crt ]]; then
    cp "$(k config view --raw --minify -o 'jsonpath={.clusters[0].cluster.certificate-authority}')" "${work}/ca.crt"
fi
sa_kubeconfig() { # sa_kubeconfig NAME FILE: a kubeconfig with a token minted for NAME
    local token
    token="$(k -n "${release_ns}" create token "$1" --duration=1h)"
    printf '%s' "${token}" >"$2.token"
    cat >"$2" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "${server}", certificate-authority: "${work}/ca.crt"}}]
users: [{name: sa, user: {token: "${token}"}}]
contexts: [{name: sa, context: {cluster: test, user: sa, namespace: "${release_ns}"}}]
current-context: sa
EOF
}
sa_kubeconfig "${sa}" "${work}/writer.kubeconfig"
sa_kubeconfig "${example_sa}" "${work}/example.kubeconfig"
sa_kubeconfig rbac-baseline "${work}/baseline.kubeconfig"
as_writer() { KUBECONFIG="${work}/writer.kubeconfig" "${KUBECTL}" "$@"; }
as_baseline() { KUBECONFIG="${work}/baseline.kubeconfig" "${KUBECTL}" "$@"; }
as_example() { KUBECONFIG="${work}/example.kubeconfig" "${KUBECTL}" "$@"; }

whoami_is_writer() {
    local who
    who="$(as_writer auth whoami -o jsonpath='{.status.userInfo.username}')"
    echo "${who}"
    [[ ${who} == "system:serviceaccount:${release_ns}:${sa}" ]]
}
check "the minted token authenticates as system:serviceaccount:${release_ns}:${sa}" whoami_is_writer

# ------------------------------------------------------------- auth can-i ---
can() { # can yes|no NAMESPACE VERB RESOURCE[/NAME]: the writer's answer
    local want="$1" ns="$2" got
    shift 2
    got="$(as_writer auth can-i -n "${ns}" "$@" 2>&1 || true)"
    echo "can-i -n ${ns} $*: ${got}, want ${want}"
    [[ ${got} == "${want}" ]]
}
expect_can() { check "can-i $1: $3 $4 in ${2%-"${suffix}"}" can "$@"; }

for target in "${targets[@]}"; do
    ns="${target%%/*}"
    name="${target#*/}"
    expect_can yes "${ns}" create "secrets/${name}"
    expect_can yes "${ns}" patch "secrets/${name}"
    for verb in get update delete; do
        expect_can no "${ns}" "${verb}" "secrets/${name}"
    done
done
for ns in "${team_a}" "${team_b}" "${team_c}"; do
    for verb in list watch create deletecollection; do
        expect_can no "${ns}" "${verb}" secrets
    done
    expect_can no "${ns}" patch secrets/not-a-target
    expect_can no "${ns}" create secrets/not-a-target
    expect_can no "${ns}" get "leases.coordination.k8s.io/${lease}"
    expect_can no "${ns}" create leases.coordination.k8s.io
    expect_can no "${ns}" create events.events.k8s.io
    expect_can no "${ns}" '*' '*'
done
expect_can no "${team_b}" patch secrets/fiskil-token       # team-a's and team-c's name, not team-b's
expect_can no "${team_c}" patch secrets/second-token       # team-a's only
for name in fiskil-token second-token b-token "${creds_secret}"; do
    expect_can no "${other_ns}" patch "secrets/${name}"
    expect_can no "${other_ns}" create "secrets/${name}"
done
for verb in get update create; do
    expect_can no "${other_ns}" "${verb}" "leases.coordination.k8s.io/${lease}"
done
expect_can no "${other_ns}" create events.events.k8s.io
expect_can no "${other_ns}" '*' '*'
# The release namespace: the Lease by name, Lease create, Events; no Secret at all.
expect_can yes "${release_ns}" get "leases.coordination.k8s.io/${lease}"
expect_can yes "${release_ns}" update "leases.coordination.k8s.io/${lease}"
expect_can yes "${release_ns}" watch "leases.coordination.k8s.io/${lease}"
expect_can yes "${release_ns}" create leases.coordination.k8s.io
for verb in patch delete; do
    expect_can no "${release_ns}" "${verb}" "leases.coordination.k8s.io/${lease}"
done
for verb in get update; do
    expect_can no "${release_ns}" "${verb}" leases.coordination.k8s.io/another-lease
done
for verb in list watch; do
    expect_can no "${release_ns}" "${verb}" leases.coordination.k8s.io
done
expect_can yes "${release_ns}" create events.events.k8s.io
expect_can yes "${release_ns}" patch events.events.k8s.io
for verb in get list watch delete update; do
    expect_can no "${release_ns}" "${verb}" events.events.k8s.io
done
expect_can no "${release_ns}" create events
expect_can no "${release_ns}" get "secrets/${creds_secret}"
expect_can no "${release_ns}" patch "secrets/${creds_secret}"
expect_can no "${release_ns}" create secrets/fiskil-token
expect_can no "${release_ns}" list secrets
expect_can no "${release_ns}" '*' '*'
expect_can no "${release_ns}" create pods
expect_can no "${release_ns}" create serviceaccounts/token

# ------------------------------------------------------- auth can-i --list ---
# Rules as "RESOURCE NON-RESOURCE-URLS [NAMES] [VERBS]", names and verbs sorted.
rules_list() { # rules_list as_writer|as_baseline NAMESPACE
    "$1" auth can-i --list -n "$2" | "${PYTHON}" -c '
import re, sys
lines = sys.stdin.read().splitlines()
assert lines and lines[0].split()[:1] == ["Resources"], lines[:1]
for line in lines[1:]:
    m = re.match(r"^\s*(\S*)\s+(\[[^\]]*\])\s+(\[[^\]]*\])\s+(\[[^\]]*\])\s*$", line)
    assert m, line
    def items(s):
        return "[" + " ".join(sorted(s[1:-1].split())) + "]"
    print(" ".join([m.group(1) or "-", items(m.group(2)), items(m.group(3)), items(m.group(4))]))' | sort -u
}
declare -A expected_rules=(
    ["${release_ns}"]="leases.coordination.k8s.io [] [${lease}] [get update watch]
leases.coordination.k8s.io [] [] [create]
events.events.k8s.io [] [] [create patch]"
    ["${team_a}"]="secrets [] [fiskil-token] [create patch]
secrets [] [second-token] [create patch]"
    ["${team_b}"]="secrets [] [b-token] [create patch]"
    ["${team_c}"]="secrets [] [fiskil-token] [create patch]"
    ["${other_ns}"]=""
)
# The example sidecar's ServiceAccount: Events in the release namespace, nothing else.
declare -A example_rules=(["${release_ns}"]="events.events.k8s.io [] [] [create patch]")
rules_are_exactly() { # rules_are_exactly as_writer|as_example NAMESPACE: its rules = baseline + expected
    local who="$1" ns="$2" extra missing
    rules_list as_baseline "${ns}" >"${work}/baseline.txt"
    rules_list "${who}" "${ns}" >"${work}/writer.txt"
    if [[ ${who} == as_example ]]; then
        printf '%s\n' "${example_rules[${ns}]:-}"
    else
        printf '%s\n' "${expected_rules[${ns}]}"
    fi | sed '/^$/d' | sort -u >"${work}/expected.txt"
    extra="$(comm -23 "${work}/writer.txt" "${work}/baseline.txt")"
    missing="$(comm -13 "${work}/writer.txt" "${work}/baseline.txt")"
    echo "baseline ($(wc -l <"${work}/baseline.txt") rules, any ServiceAccount):"
    sed 's/^/  /' "${work}/baseline.txt"
    echo "${who#as_}'s beyond the baseline:"
    printf '%s\n' "${extra}" | sed '/^$/d; s/^/  /'
    echo "expected beyond the baseline:"
    sed 's/^/  /' "${work}/expected.txt"
    [[ -z ${missing} ]] || { echo "baseline rules ${who#as_} lacks: ${missing}"; return 1; }
    # The baseline itself grants nothing on Secrets, Leases or Events, no "*" resource or verb.
    ! grep -E '^(secrets|leases|events|\*)|\*[^]]*\]$' "${work}/baseline.txt" || return 1
    # Nor the rules beyond it: no "*" anywhere.
    ! grep -F '*' <<<"${extra}" || return 1
    diff <(printf '%s\n' "${extra}" | sed '/^$/d') "${work}/expected.txt"
}
for ns in "${release_ns}" "${team_a}" "${team_b}" "${team_c}" "${other_ns}"; do
    case "${ns}" in
        "${release_ns}") what="the Lease by name, Lease create, Events create/patch, nothing else" ;;
        "${other_ns}") what="nothing beyond what any ServiceAccount may do" ;;
        *) what="create/patch on its target Secret(s) by name, nothing else" ;;
    esac
    check "can-i --list in ${ns%-"${suffix}"}: ${what}" rules_are_exactly as_writer "${ns}"
done
for ns in "${release_ns}" "${team_a}" "${team_b}" "${team_c}" "${other_ns}"; do
    if [[ ${ns} == "${release_ns}" ]]; then what="Events create/patch, nothing else"; else what="nothing"; fi
    check "can-i --list in ${ns%-"${suffix}"} as the example sidecar: ${what}" rules_are_exactly as_example "${ns}"
done

# The comparison can fail: one more verb on team-b's Role must show.
widened_role_caught() {
    local rc=0
    k -n "${team_b}" patch role fleet-fiskil-token-refresher --type=json \
        -p '[{"op": "add", "path": "/rules/0/verbs/-", "value": "get"}]' >/dev/null || return 1
    rules_are_exactly as_writer "${team_b}" || rc=$?
    k -n "${team_b}" patch role fleet-fiskil-token-refresher --type=json \
        -p '[{"op": "remove", "path": "/rules/0/verbs/2"}]' >/dev/null || return 1
    [[ ${rc} -ne 0 ]] && rules_are_exactly as_writer "${team_b}" >/dev/null
}
check "negative control: get added to team-b's Role is caught, and the Role is restored" widened_role_caught

# ---------------------------------------------------------- real requests ---
# The requests the daemon makes, made with the writer's token.
status_of() { # status_of METHOD PATH [CONTENT_TYPE BODY]: the HTTP status
    local args=(-sS -o "${work}/body.txt" -w '%{http_code}' -X "$1" --cacert "${work}/ca.crt"
        -H "Authorization: Bearer $(cat "${work}/writer.kubeconfig.token")")
    [[ $# -lt 4 ]] || args+=(-H "Content-Type: $3" --data-binary "$4")
    curl "${args[@]}" "${server}$2"
}
expect_status() { # expect_status WANT METHOD PATH [CONTENT_TYPE BODY]
    local got
    got="$(status_of "${@:2}")" || true
    echo "HTTP ${got}, want $1"
    head -c 400 "${work}/body.txt"
    echo
    [[ ${got} == "$1" ]]
}
apply_secret() { # apply_secret NAMESPACE NAME TOKEN: the daemon's server-side apply
    expect_status "$4" PATCH "/api/v1/namespaces/$1/secrets/$2?fieldManager=fiskil-token-refresher&force=true" \
        application/apply-patch+yaml \
        "{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"$2\",\"namespace\":\"$1\"},\"type\":\"Opaque\",\"data\":{\"token\":\"$(printf '%s' "$3" | base64 -w0)\"}}"
}
for target in "${targets[@]}"; do
    ns="${target%%/*}"
    name="${target#*/}"
    check "apply creates ${ns%-"${suffix}"}/${name} (201)" apply_secret "${ns}" "${name}" first 201
    check "apply updates ${ns%-"${suffix}"}/${name} (200)" apply_secret "${ns}" "${name}" second 200
    check "apply of another Secret in ${ns%-"${suffix}"} is forbidden (403)" apply_secret "${ns}" other-secret x 403
done
check "apply of a target's name in the unrelated namespace is forbidden (403)" \
    apply_secret "${other_ns}" fiskil-token x 403
check "reading the credentials Secret is forbidden (403)" \
    expect_status 403 GET "/api/v1/namespaces/${release_ns}/secrets/${creds_secret}"

lease_path="/apis/coordination.k8s.io/v1/namespaces/${release_ns}/leases"
lease_body() { # lease_body NAME HOLDER [RESOURCE_VERSION]
    printf '{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"%s"%s},"spec":{"holderIdentity":"%s","leaseDurationSeconds":15,"leaseTransitions":0}}' \
        "$1" "${3:+,\"resourceVersion\":\"$3\"}" "$2"
}
check "Lease ${lease}: create (201)" expect_status 201 POST "${lease_path}" application/json "$(lease_body "${lease}" writer-0)"
check "Lease ${lease}: get (200)" expect_status 200 GET "${lease_path}/${lease}"
renew_lease() {
    local version
    version="$(k -n "${release_ns}" get lease "${lease}" -o jsonpath='{.metadata.resourceVersion}')"
    expect_status 200 PUT "${lease_path}/${lease}" application/json "$(lease_body "${lease}" writer-1 "${version}")" &&
        [[ $(k -n "${release_ns}" get lease "${lease}" -o jsonpath='{.spec.holderIdentity}') == writer-1 ]]
}
check "Lease ${lease}: update (200), the new holder stored" renew_lease
check "Lease ${lease}: delete is forbidden (403)" expect_status 403 DELETE "${lease_path}/${lease}"
k -n "${release_ns}" create -f - >/dev/null <<EOF
$(lease_body someone-elses-lease other-controller)
EOF
check "another Lease: get is forbidden (403)" expect_status 403 GET "${lease_path}/someone-elses-lease"
check "another Lease: update is forbidden (403)" \
    expect_status 403 PUT "${lease_path}/someone-elses-lease" application/json "$(lease_body someone-elses-lease writer-0)"
check "Leases: list is forbidden (403)" expect_status 403 GET "${lease_path}"
check "a Lease in another namespace: create is forbidden (403)" \
    expect_status 403 POST "/apis/coordination.k8s.io/v1/namespaces/${team_a}/leases" application/json "$(lease_body "${lease}" writer-0)"
event_body() {
    printf '{"apiVersion":"events.k8s.io/v1","kind":"Event","metadata":{"name":"writer-0.%s"},"eventTime":"%s","reportingController":"fiskil-token-refresher","reportingInstance":"writer-0","action":"Refresh","reason":"TokenRefreshed","type":"Normal","note":"rbac test","regarding":{"kind":"Pod","namespace":"%s","name":"writer-0"}}' \
        "$1" "$(date -u +%Y-%m-%dT%H:%M:%S.000000Z)" "$2"
}
check "Event in the release namespace: create (201)" \
    expect_status 201 POST "/apis/events.k8s.io/v1/namespaces/${release_ns}/events" application/json "$(event_body a "${release_ns}")"
check "Event in the release namespace: patch (200)" \
    expect_status 200 PATCH "/apis/events.k8s.io/v1/namespaces/${release_ns}/events/writer-0.a" \
    application/merge-patch+json '{"series":{"count":2,"lastObservedTime":"'"$(date -u +%Y-%m-%dT%H:%M:%S.000000Z)"'"}}'
check "Event in a target namespace: create is forbidden (403)" \
    expect_status 403 POST "/apis/events.k8s.io/v1/namespaces/${team_a}/events" application/json "$(event_body b "${team_a}")"

# ------------------------------------------------- the daemon, with exactly these rights ---
# Two writer processes with the args of the chart's Deployment and the writer's token, against
# the HTTPS stand-in: one leads and fills every target, Events appear, nothing is forbidden.
(cd "${REPO_ROOT}" && cargo build --locked --workspace --quiet) || deploy_die "cargo build --workspace failed"
daemon_bin="${FISKIL_TEST_BINARY:-${REPO_ROOT}/target/debug/fiskil-token-refresher}"
stand_in_bin="${REPO_ROOT}/target/debug/fiskil-stand-in"
if ! grep -q -- '--leader-elect' <<<"$("${daemon_bin}" --help)"; then
    echo "note: ${daemon_bin} has no --leader-elect yet: the daemon part is not run"
    check_summary
    exit $?
fi
pids=()
stop_daemons() {
    local pid
    for pid in "${pids[@]}"; do kill "${pid}" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap 'stop_daemons; cleanup' EXIT
mkdir -p "${work}/credentials"
printf 'rbac-client' >"${work}/credentials/client_id"
printf 'rbac-secret-%s' "${suffix}" >"${work}/credentials/client_secret"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"${stand_in_bin}" --listen "127.0.0.1:${port}" --ca-out "${work}/stand-in-ca.pem" --expires-in 600 \
    --client-id rbac-client --client-secret "rbac-secret-${suffix}" >"${work}/stand-in.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do [[ -s ${work}/stand-in-ca.pem ]] && break; sleep 0.1; done
mapfile -t args < <(k -n "${release_ns}" get deployment -l app.kubernetes.io/instance=fleet -o json | python3 -c '
import json, sys
d = json.load(sys.stdin)["items"][0]
skip = ("--token-url=", "--ca-file=", "--client-id-file=", "--client-secret-file=", "--listen=")
print("\n".join(a for a in d["spec"]["template"]["spec"]["containers"][0]["args"] if not a.startswith(skip)))')
echo "daemon args from the chart: ${args[*]}"
# The Lease and the Secrets the requests above made: start from nothing, as a new release does.
k -n "${release_ns}" delete lease "${lease}" >/dev/null
for target in "${targets[@]}"; do k -n "${target%%/*}" delete secret "${target#*/}" >/dev/null; done
for i in 0 1; do
    POD_NAME="writer-${i}" POD_NAMESPACE="${release_ns}" POD_UID="00000000-0000-0000-0000-00000000000${i}" \
        KUBECONFIG="${work}/writer.kubeconfig" "${daemon_bin}" "${args[@]}" \
        --token-url "https://localhost:${port}/v1/token" --ca-file "${work}/stand-in-ca.pem" \
        --client-id-file "${work}/credentials/client_id" --client-secret-file "${work}/credentials/client_secret" \
        --listen 127.0.0.1:0 >"${work}/writer-${i}.log" 2>&1 &
    pids+=($!)
done
every_target_filled() {
    local target value missing
    for _ in $(seq 1 300); do
        missing=()
        for target in "${targets[@]}"; do
            value="$(k -n "${target%%/*}" get secret "${target#*/}" -o 'jsonpath={.data.token}' 2>/dev/null | base64 -d 2>/dev/null || true)"
            [[ ${value} == tok-* ]] || missing+=("${target}")
        done
        ((${#missing[@]} == 0)) && return 0
        sleep 0.1
    done
    echo "no token in: ${missing[*]}"
    tail -n 20 "${work}"/writer-*.log
    return 1
}
check "the daemon (2 writers, the writer's token) fills all 4 targets in 3 namespaces" every_target_filled
lease_held() {
    local holder
    holder="$(k -n "${release_ns}" get lease "${lease}" -o 'jsonpath={.spec.holderIdentity}')"
    echo "Lease ${lease} held by ${holder}"
    [[ ${holder} == writer-0 || ${holder} == writer-1 ]]
}
check "one of them holds the Lease ${lease}" lease_held
event_about() { # event_about REASON TYPE POD...: such an Event about one of the pods appears
    local reason="$1" type="$2"
    shift 2
    for _ in $(seq 1 150); do
        k -n "${release_ns}" get events.events.k8s.io -o json >"${work}/events.json"
        python3 - "${work}/events.json" "${reason}" "${type}" "$@" <<'PY' && return 0
import json, sys
events = json.load(open(sys.argv[1]))["items"]
reason, kind, pods = sys.argv[2], sys.argv[3], sys.argv[4:]
print([(e.get("reason"), e.get("type"), e.get("regarding", {}).get("name")) for e in events])
sys.exit(0 if any(e.get("reason") == reason and e.get("type") == kind and e.get("regarding", {}).get("kind") == "Pod"
                  and e["regarding"].get("name") in pods for e in events) else 1)
PY
        sleep 0.2
    done
    return 1
}
check "a LeaderElected Event about the leader's pod, in the release namespace" event_about LeaderElected Normal writer-0 writer-1
nothing_forbidden() {
    ! grep -iE 'forbidden|" 403|status: 403|cannot publish' "${work}"/writer-*.log
}
check "the writers' logs report nothing forbidden" nothing_forbidden
no_secret_in_logs() { ! grep -qE "rbac-secret-${suffix}|tok-[0-9]{4}-" "${work}"/writer-*.log; }
check "the writers' logs hold neither the client secret nor a token" no_secret_in_logs

# The example sidecar, as its own ServiceAccount with the args of the chart's example and
# credentials the stand-in rejects: a CredentialsRejected Event about its pod.
mapfile -t sidecar_args < <(k -n "${release_ns}" get deployment -l app.kubernetes.io/instance=fleet,app.kubernetes.io/component=example -o json | python3 -c '
import json, sys
d = json.load(sys.stdin)["items"][0]
skip = ("--token-url=", "--ca-file=", "--client-id-file=", "--client-secret-file=", "--listen=", "--token-file=")
c = next(c for c in d["spec"]["template"]["spec"]["initContainers"] if c["name"] == "token-refresher")
print("\n".join(a for a in c["args"] if not a.startswith(skip)))')
echo "sidecar args from the chart: ${sidecar_args[*]}"
mkdir -p "${work}/wrong" "${work}/sidecar"
printf 'rbac-client' >"${work}/wrong/client_id"
printf 'not-the-secret' >"${work}/wrong/client_secret"
POD_NAME=example-0 POD_NAMESPACE="${release_ns}" POD_UID=00000000-0000-0000-0000-0000000000e0 \
    KUBECONFIG="${work}/example.kubeconfig" "${daemon_bin}" "${sidecar_args[@]}" \
    --token-file "${work}/sidecar/token" \
    --token-url "https://localhost:${port}/v1/token" --ca-file "${work}/stand-in-ca.pem" \
    --client-id-file "${work}/wrong/client_id" --client-secret-file "${work}/wrong/client_secret" \
    --listen 127.0.0.1:0 >"${work}/example.log" 2>&1 &
pids+=($!)
check "the example sidecar (--events, its own ServiceAccount): a CredentialsRejected Warning about its pod" \
    event_about CredentialsRejected Warning example-0
example_nothing_forbidden() { ! grep -iE 'forbidden|" 403|status: 403|cannot publish' "${work}/example.log"; }
check "the sidecar's log reports nothing forbidden" example_nothing_forbidden

check_summary
