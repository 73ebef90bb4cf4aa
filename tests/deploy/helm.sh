#!/usr/bin/env bash
# Print the path of a helm binary, building it once from the helm.sh/helm/v3
# Go module (through the Go module proxy) when the cache does not have it.
#
#   tests/deploy/helm.sh            # prints e.g. ~/.cache/fiskil-token-refresher/tools/helm-v3.22.0/helm
#   "$(tests/deploy/helm.sh)" lint charts/fiskil-token-refresher
#
# FISKIL_HELM_VERSION picks another release; FISKIL_TOOLS_CACHE another cache.
set -euo pipefail
# shellcheck source=tests/deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bin="${TOOLS_CACHE}/helm-${HELM_VERSION}/helm"

build_helm() {
    [[ -x ${bin} ]] && return 0
    command -v go >/dev/null 2>&1 || deploy_die "go is required to build helm"
    local start=${SECONDS} gomod client_go minor ldflags
    deploy_log "building helm ${HELM_VERSION} from the helm.sh/helm/v3 Go module"
    # Helm's own Makefile sets the default Kubernetes version that "helm
    # template" and "helm lint" assume from its client-go version (v0.N.x ->
    # 1.N); without it they assume 1.20. Do the same.
    gomod="$(cd "${TOOLS_CACHE}" && go mod download -json "helm.sh/helm/v3@${HELM_VERSION}" |
        sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
    [[ -f ${gomod} ]] || deploy_die "cannot find go.mod of helm.sh/helm/v3@${HELM_VERSION}"
    client_go="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "${gomod}")"
    minor="$(cut -d. -f2 <<<"${client_go}")"
    [[ ${minor} =~ ^[0-9]+$ ]] || deploy_die "cannot read the client-go version from ${gomod}"
    ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
    ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    local pkg
    for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        ldflags+=" -X ${pkg}.k8sVersionMajor=1 -X ${pkg}.k8sVersionMinor=${minor}"
    done
    mkdir -p "${bin%/*}.tmp"
    (cd "${TOOLS_CACHE}" &&
        CGO_ENABLED=0 GOBIN="${bin%/*}.tmp" nice -n "${FISKIL_BUILD_NICE:-19}" \
            go install -trimpath -ldflags "${ldflags}" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}") >&2
    "${bin%/*}.tmp/helm" version --short >&2
    rm -rf "${bin%/*}"
    mv "${bin%/*}.tmp" "${bin%/*}"
    deploy_log "helm ${HELM_VERSION} built in $((SECONDS - start))s (default Kubernetes version 1.${minor})"
}

with_tool_lock helm build_helm
printf '%s\n' "${bin}"
