#!/usr/bin/env bash
# Print the path of a kustomize binary, building it once from the
# sigs.k8s.io/kustomize/kustomize/v5 Go module when the cache does not have it.
#
#   "$(tests/deploy/kustomize.sh)" build deploy/sidecar
#
# FISKIL_KUSTOMIZE_VERSION picks another release; FISKIL_TOOLS_CACHE another cache.
set -euo pipefail
# shellcheck source=tests/deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bin="${TOOLS_CACHE}/kustomize-${KUSTOMIZE_VERSION}/kustomize"

build_kustomize() {
    [[ -x ${bin} ]] && return 0
    command -v go >/dev/null 2>&1 || deploy_die "go is required to build kustomize"
    local start=${SECONDS}
    deploy_log "building kustomize ${KUSTOMIZE_VERSION} from the sigs.k8s.io/kustomize/kustomize/v5 Go module"
    mkdir -p "${bin%/*}.tmp"
    (cd "${TOOLS_CACHE}" &&
        CGO_ENABLED=0 GOBIN="${bin%/*}.tmp" nice -n "${FISKIL_BUILD_NICE:-19}" \
            go install -trimpath -ldflags "-s -w -X sigs.k8s.io/kustomize/api/provenance.version=${KUSTOMIZE_VERSION}" \
            "sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION}") >&2
    "${bin%/*}.tmp/kustomize" version >&2
    rm -rf "${bin%/*}"
    mv "${bin%/*}.tmp" "${bin%/*}"
    deploy_log "kustomize ${KUSTOMIZE_VERSION} built in $((SECONDS - start))s"
}

with_tool_lock kustomize build_kustomize
printf '%s\n' "${bin}"
