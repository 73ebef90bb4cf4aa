#!/usr/bin/env bash
# Installs the Helm chart (standalone mode) into a real control plane, mints a token for the
# chart's ServiceAccount through the TokenRequest API, runs the daemon locally with that
# identity and the args of the chart's Deployment (pointed at the local HTTPS stand-in), and
# checks that it writes the chart's Secret and cannot touch any other.
#
#   tests/deploy/install.sh KUBECONFIG
#
# Builds the workspace (the daemon and the stand-in) first. Prints one line per check and
# "N passed, M failed".
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${here}/lib.sh"

admin_cluster_tools "$@"
(cd "${REPO_ROOT}" && cargo build --locked --workspace --quiet) || deploy_die "cargo build --workspace failed"
daemon_bin="${FISKIL_TEST_BINARY:-${REPO_ROOT}/target/debug/fiskil-token-refresher}"
stand_in_bin="${REPO_ROOT}/target/debug/fiskil-stand-in"

work="$(mktemp -d)"
namespace="fiskil-install-$$"
release=fiskil
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "${pid}" 2>/dev/null || true; done
    wait 2>/dev/null || true
    "${HELM}" uninstall "${release}" -n "${namespace}" >/dev/null 2>&1 || true
    rm -rf "${work}"
}
trap cleanup EXIT


client_id="install-client"
client_secret="install-secret-$$"
k create namespace "${namespace}" >/dev/null
# The chart's defaults elect a leader (--leader-elect). A binary built before leader election
# gets the single writer of before (leaderElection.enabled false, one replica).
leader_elect=true
install_values=()
if ! grep -q -- '--leader-elect' <<<"$("${daemon_bin}" --help)"; then
    leader_elect=false
    install_values=(--set leaderElection.enabled=false --set standalone.replicas=1)
    echo "note: ${daemon_bin} has no --leader-elect: installing with leaderElection.enabled=false"
fi
check "helm install of the chart (standalone, credentials from values, leader election ${leader_elect})" \
    "${HELM}" install "${release}" "${CHART_DIR}" -n "${namespace}" "${install_values[@]}" \
    --set credentials.clientId="${client_id}" --set credentials.clientSecret="${client_secret}"

deploy_json="$(k -n "${namespace}" get deployment -l app.kubernetes.io/instance="${release}" -o json)"
read_deploy() { python3 -c "import json,sys; d=json.load(sys.stdin)['items'][0]; print($1)" <<<"${deploy_json}"; }
sa="$(read_deploy "d['spec']['template']['spec']['serviceAccountName']")"
secret_name="$(read_deploy "[a for a in d['spec']['template']['spec']['containers'][0]['args'] if a.startswith('--secret-name=')][0].split('=',1)[1]")"
creds_secret="$(read_deploy "[v['secret']['secretName'] for v in d['spec']['template']['spec']['volumes'] if 'secret' in v][0]")"
echo "ServiceAccount ${sa}, target Secret ${secret_name}, credentials Secret ${creds_secret}"

# The credentials as the pod would see them: the chart's Secret, key by key.
mkdir -p "${work}/credentials"
for key in client_id client_secret; do
    k -n "${namespace}" get secret "${creds_secret}" -o "jsonpath={.data.${key}}" | base64 -d >"${work}/credentials/${key}"
done
same_credentials() { [[ $(cat "${work}/credentials/client_id") == "${client_id}" && $(cat "${work}/credentials/client_secret") == "${client_secret}" ]]; }
check "the chart's credentials Secret holds the values" same_credentials

# An identity for the chart's ServiceAccount, minted through the TokenRequest API.
token="$(k -n "${namespace}" create token "${sa}" --duration=1h)"
server="$(k config view --raw --minify -o 'jsonpath={.clusters[0].cluster.server}')"
k config view --raw --minify -o 'jsonpath={.clusters[0].cluster.certificate-authority-data}' | base64 -d >"${work}/cluster-ca.crt"
if [[ ! -s ${work}/cluster-ca.crt ]]; then
    cp "$(k config view --raw --minify -o 'jsonpath={.clusters[0].cluster.certificate-authority}')" "${work}/cluster-ca.crt"
fi
cat >"${work}/sa-kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "${server}", certificate-authority: "${work}/cluster-ca.crt"}}]
users: [{name: sa, user: {token: "${token}"}}]
contexts: [{name: sa, context: {cluster: test, user: sa, namespace: "${namespace}"}}]
current-context: sa
EOF

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"${stand_in_bin}" --listen "127.0.0.1:${port}" --ca-out "${work}/stand-in-ca.pem" --expires-in 3 \
    --client-id "${client_id}" --client-secret "${client_secret}" >"${work}/stand-in.log" 2>&1 &
pids+=($!)
sleep 0.5

# The Deployment's own args, with the endpoint, credential paths and listen address made local.
mapfile -t args < <(read_deploy "'\n'.join(a for a in d['spec']['template']['spec']['containers'][0]['args'] if not a.startswith(('--token-url=', '--ca-file=', '--client-id-file=', '--client-secret-file=', '--listen=')))")
echo "daemon args from the chart: ${args[*]}"
# The downward API's variables, as the pod gets them: the leader election identity and the
# Lease's namespace.
POD_NAME="${release}-writer-0" POD_NAMESPACE="${namespace}" KUBECONFIG="${work}/sa-kubeconfig" "${daemon_bin}" "${args[@]}" \
    --token-url "https://localhost:${port}/v1/token" --ca-file "${work}/stand-in-ca.pem" \
    --client-id-file "${work}/credentials/client_id" --client-secret-file "${work}/credentials/client_secret" \
    --listen 127.0.0.1:0 >"${work}/daemon.log" 2>&1 &
pids+=($!)

secret_holds_token() {
    local value start=${SECONDS}
    # With leader election a new install elects its first leader once the Lease has been
    # missing for the lease duration plus the 2 s takeover margin (17 s with the chart's 15 s).
    while ((SECONDS - start < 60)); do
        value="$(k -n "${namespace}" get secret "${secret_name}" -o 'jsonpath={.data.token}' 2>/dev/null | base64 -d 2>/dev/null || true)"
        if [[ ${value} == tok-* ]]; then
            echo "token in ${secret_name} after ~$((SECONDS - start)) s"
            return 0
        fi
        sleep 0.1
    done
    cat "${work}/daemon.log"
    return 1
}
check "the daemon, as the chart's ServiceAccount, writes the chart's Secret" secret_holds_token

first="$(k -n "${namespace}" get secret "${secret_name}" -o 'jsonpath={.data.token}' | base64 -d)"
secret_refreshed() {
    local i
    for i in $(seq 1 60); do
        [[ $(k -n "${namespace}" get secret "${secret_name}" -o 'jsonpath={.data.token}' | base64 -d) != "${first}" ]] && return 0
        sleep 0.1
    done
    return 1
}
check "the Secret is refreshed before the 3 s token expires" secret_refreshed
if [[ ${leader_elect} == true ]]; then
    lease_name="$(read_deploy "[a for a in d['spec']['template']['spec']['containers'][0]['args'] if a.startswith('--lease-name=')][0].split('=',1)[1]")"
    holds_lease() {
        local holder
        holder="$(k -n "${namespace}" get lease "${lease_name}" -o 'jsonpath={.spec.holderIdentity}')"
        echo "Lease ${lease_name} held by ${holder}"
        [[ ${holder} == "${release}-writer-0" ]]
    }
    check "the daemon, as the chart's ServiceAccount, holds the chart's Lease" holds_lease
fi

# The same identity against everything else: refused.
as_sa() { # as_sa METHOD PATH [BODY]: HTTP status as the chart's ServiceAccount
    local args=(-sS -o /dev/null -w '%{http_code}' -X "$1" --cacert "${work}/cluster-ca.crt" -H "Authorization: Bearer ${token}")
    [[ $# -lt 3 ]] || args+=(-H 'Content-Type: application/apply-patch+yaml' --data-binary "$3")
    curl "${args[@]}" "${server}$2"
}
apply_body() { printf '{"apiVersion":"v1","kind":"Secret","metadata":{"name":"%s"},"data":{"token":"eA=="}}' "$1"; }
expect() { # expect WANT METHOD PATH [BODY]
    local got
    got="$(as_sa "${@:2}")"
    echo "HTTP ${got}, want $1"
    [[ ${got} == "$1" ]]
}
k -n "${namespace}" create secret generic someone-elses --from-literal=key=value >/dev/null
ssa="?fieldManager=fiskil-token-refresher&force=true"
check "cannot apply another Secret (403)" expect 403 PATCH "/api/v1/namespaces/${namespace}/secrets/someone-elses${ssa}" "$(apply_body someone-elses)"
check "cannot create a new Secret by apply (403)" expect 403 PATCH "/api/v1/namespaces/${namespace}/secrets/new-one${ssa}" "$(apply_body new-one)"
check "cannot read another Secret (403)" expect 403 GET "/api/v1/namespaces/${namespace}/secrets/someone-elses"
check "cannot read the credentials Secret (403)" expect 403 GET "/api/v1/namespaces/${namespace}/secrets/${creds_secret}"
check "cannot list Secrets (403)" expect 403 GET "/api/v1/namespaces/${namespace}/secrets"
check "cannot touch Secrets in another namespace (403)" expect 403 PATCH "/api/v1/namespaces/default/secrets/${secret_name}${ssa}" "$(apply_body "${secret_name}")"
no_secret_in_logs() { ! grep -qE "${client_secret}|tok-[0-9]{4}-" "${work}/daemon.log"; }
check "the daemon's logs hold neither the client secret nor a token" no_secret_in_logs

# A token Secret that a Helm release created: the daemon's apply must leave Helm's ownership
# labels alone, so the release can still be upgraded and keeps owning it.
owner_chart="${work}/owner-chart"
mkdir -p "${owner_chart}/templates"
printf 'apiVersion: v2\nname: token-owner\nversion: 0.1.0\n' >"${owner_chart}/Chart.yaml"
cat >"${owner_chart}/templates/secret.yaml" <<'EOF'
apiVersion: v1
kind: Secret
metadata:
  name: helm-owned-token
  annotations:
    revision: {{ .Values.revision | quote }}
type: Opaque
EOF
check "a release that creates the token Secret installs" \
    "${HELM}" install owner "${owner_chart}" -n "${namespace}" --set revision=1
"${daemon_bin}" --once --secret-name helm-owned-token --secret-namespace "${namespace}" \
    --token-url "https://localhost:${port}/v1/token" --ca-file "${work}/stand-in-ca.pem" \
    --client-id-file "${work}/credentials/client_id" --client-secret-file "${work}/credentials/client_secret" \
    --listen 127.0.0.1:0 >"${work}/owner-daemon.log" 2>&1
helm_owns() {
    local labels
    labels="$(k -n "${namespace}" get secret helm-owned-token -o 'jsonpath={.metadata.labels.app\.kubernetes\.io/managed-by} {.metadata.annotations.meta\.helm\.sh/release-name}')"
    echo "managed-by and release: ${labels}"
    [[ ${labels} == "Helm owner" ]]
}
owned_token() { [[ $(k -n "${namespace}" get secret helm-owned-token -o 'jsonpath={.data.token}' | base64 -d) == tok-* ]]; }
check "the daemon wrote the token into the release's Secret" owned_token
check "Helm's ownership labels are untouched by the daemon's apply" helm_owns
check "helm upgrade of that release still succeeds" \
    "${HELM}" upgrade owner "${owner_chart}" -n "${namespace}" --set revision=2
check "after the upgrade Helm still owns the Secret" helm_owns
check "and the token key survived the upgrade" owned_token
"${HELM}" uninstall owner -n "${namespace}" >/dev/null 2>&1 || true

check_summary
