#!/usr/bin/env bash
# Probe which namespaced Role lets a ServiceAccount server-side-apply ONE named
# Secret, against a control plane started by up.sh. Prints HTTP status codes.
#
#   tests/cluster/up.sh DIR && tests/cluster/rbac-probe.sh DIR; tests/cluster/down.sh DIR
#
# Needs only curl. Creates namespaces rbac-probe-<pid>-<n> and leaves them (there is
# no namespace controller to delete them; the cluster is throwaway anyway).
set -euo pipefail

[[ $# -eq 1 ]] || {
    echo "usage: $0 DIR" >&2
    exit 1
}
DIR="$(cd "$1" && pwd)"
# shellcheck source=/dev/null
source "${DIR}/cluster.env"

SERVER="${FISKIL_CLUSTER_SERVER}"
NAME=fiskil-token
OTHER=other-secret
# shellcheck disable=SC2034 # used through a nameref in req
admin=(--cacert "${FISKIL_CLUSTER_CA}" --cert "${FISKIL_CLUSTER_ADMIN_CERT}" --key "${FISKIL_CLUSTER_ADMIN_KEY}")

# req AUTH_ARRAY_NAME METHOD PATH [CONTENT_TYPE BODY]: prints the status code.
req() {
    local -n auth="$1"
    local method="$2" path="$3" ctype="${4:-}" body="${5:-}"
    local args=(-sS -o "${DIR}/probe-last.json" -w '%{http_code}' -X "${method}" "${auth[@]}")
    if [[ -n ${ctype} ]]; then args+=(-H "Content-Type: ${ctype}" --data-binary "${body}"); fi
    curl "${args[@]}" "${SERVER}${path}"
}

must() {
    local code
    code="$(req "$@")"
    [[ ${code} == 2* ]] || {
        echo "setup request $2 $3 failed with ${code}: $(cat "${DIR}/probe-last.json")" >&2
        exit 1
    }
}

apply_body() { # NS SECRET
    printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  namespace: %s\ntype: Opaque\ndata:\n  token: %s\n' "$2" "$1" "$(printf 't-%s' "${RANDOM}" | base64 -w0)"
}

n=0
probe() { # LABEL RULES_JSON
    local label="$1" rules="$2" ns token
    n=$((n + 1))
    ns="rbac-probe-$$-${n}"
    must admin POST /api/v1/namespaces application/json "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"${ns}\"}}"
    must admin POST "/api/v1/namespaces/${ns}/serviceaccounts" application/json '{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"refresher"}}'
    must admin POST "/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/roles" application/json \
        "{\"apiVersion\":\"rbac.authorization.k8s.io/v1\",\"kind\":\"Role\",\"metadata\":{\"name\":\"refresher\"},\"rules\":${rules}}"
    must admin POST "/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/rolebindings" application/json \
        "{\"apiVersion\":\"rbac.authorization.k8s.io/v1\",\"kind\":\"RoleBinding\",\"metadata\":{\"name\":\"refresher\"},\"roleRef\":{\"apiGroup\":\"rbac.authorization.k8s.io\",\"kind\":\"Role\",\"name\":\"refresher\"},\"subjects\":[{\"kind\":\"ServiceAccount\",\"name\":\"refresher\",\"namespace\":\"${ns}\"}]}"
    must admin POST "/api/v1/namespaces/${ns}/serviceaccounts/refresher/token" application/json \
        '{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":3600}}'
    token="$(tr -d ' \n' <"${DIR}/probe-last.json" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')"
    [[ -n ${token} ]] || {
        echo "no token in TokenRequest answer" >&2
        exit 1
    }
    # shellcheck disable=SC2034 # used through a nameref in req
    local sa=(--cacert "${FISKIL_CLUSTER_CA}" -H "Authorization: Bearer ${token}")
    local q="fieldManager=fiskil-token-refresher&force=true" ap="application/apply-patch+yaml"
    local s="/api/v1/namespaces/${ns}/secrets"

    echo "== ${label}"
    echo "   rules: ${rules}"
    echo "   apply-create ${NAME} (absent):   $(req sa PATCH "${s}/${NAME}?${q}" "${ap}" "$(apply_body "${ns}" "${NAME}")")"
    local c1
    c1="$(cat "${DIR}/probe-last.json")"
    if [[ ${c1} == *'"kind": "Status"'* ]]; then
        echo "      -> $(sed -n 's/^ *"message": "\(.*\)",$/\1/p' <<<"${c1}" | sed 's/\\"/"/g')"
    fi
    # make sure it exists for the update probe
    must admin PATCH "${s}/${NAME}?fieldManager=admin&force=true" "${ap}" "$(apply_body "${ns}" "${NAME}")"
    echo "   apply-update ${NAME} (exists):   $(req sa PATCH "${s}/${NAME}?${q}" "${ap}" "$(apply_body "${ns}" "${NAME}")")"
    echo "   GET ${NAME}:                     $(req sa GET "${s}/${NAME}")"
    must admin POST "${s}" application/json "{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"${OTHER}\"},\"stringData\":{\"x\":\"y\"}}"
    echo "   GET ${OTHER}:                  $(req sa GET "${s}/${OTHER}")"
    echo "   apply ${OTHER} (exists):       $(req sa PATCH "${s}/${OTHER}?${q}" "${ap}" "$(apply_body "${ns}" "${OTHER}")")"
    echo "   apply-create third (absent):     $(req sa PATCH "${s}/third?${q}" "${ap}" "$(apply_body "${ns}" third)")"
    echo "   POST create third:               $(req sa POST "${s}" application/json '{"apiVersion":"v1","kind":"Secret","metadata":{"name":"third"}}')"
    echo "   LIST secrets:                    $(req sa GET "${s}")"
    echo "   DELETE ${NAME}:                  $(req sa DELETE "${s}/${NAME}")"
    echo "   GET ${NAME} in another ns (default): $(req sa GET "/api/v1/namespaces/default/secrets/${NAME}")"
}

probe "patch, named" \
    "[{\"apiGroups\":[\"\"],\"resources\":[\"secrets\"],\"verbs\":[\"patch\"],\"resourceNames\":[\"${NAME}\"]}]"
probe "patch+create, both named" \
    "[{\"apiGroups\":[\"\"],\"resources\":[\"secrets\"],\"verbs\":[\"patch\",\"create\"],\"resourceNames\":[\"${NAME}\"]}]"
probe "patch named + create unnamed" \
    "[{\"apiGroups\":[\"\"],\"resources\":[\"secrets\"],\"verbs\":[\"patch\"],\"resourceNames\":[\"${NAME}\"]},{\"apiGroups\":[\"\"],\"resources\":[\"secrets\"],\"verbs\":[\"create\"]}]"
probe "create named only (no patch)" \
    "[{\"apiGroups\":[\"\"],\"resources\":[\"secrets\"],\"verbs\":[\"create\"],\"resourceNames\":[\"${NAME}\"]}]"
probe "get+patch+create, named" \
    "[{\"apiGroups\":[\"\"],\"resources\":[\"secrets\"],\"verbs\":[\"get\",\"patch\",\"create\"],\"resourceNames\":[\"${NAME}\"]}]"
