#!/usr/bin/env bash
# Print the path of a release tool, building it once from its Go module (through the Go module
# proxy) into the tools cache when the cache does not have it:
#
#   tests/deploy/go-tool.sh crane    # github.com/google/go-containerregistry/cmd/crane
#   tests/deploy/go-tool.sh cosign   # github.com/sigstore/cosign/v3/cmd/cosign
#   tests/deploy/go-tool.sh ct       # github.com/helm/chart-testing/v3/ct (chart-testing)
#   tests/deploy/go-tool.sh ct --module-dir   # where that module's files are (ct's etc/)
#
# Versions are pinned in lib.sh (FISKIL_CRANE_VERSION, FISKIL_COSIGN_VERSION, FISKIL_CT_VERSION);
# FISKIL_TOOLS_CACHE picks another cache. The build time is logged, cold builds only.
set -euo pipefail
# shellcheck source=tests/deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

name="${1:?usage: go-tool.sh crane|cosign|ct}"
case "${name}" in
crane)
    module=github.com/google/go-containerregistry
    package=${module}/cmd/crane
    version="${CRANE_VERSION}"
    ldflags="-s -w -X ${module}/cmd/crane/cmd.Version=${version}"
    ;;
cosign)
    module=github.com/sigstore/cosign/v3
    package=${module}/cmd/cosign
    version="${COSIGN_VERSION}"
    ldflags="-s -w -X sigs.k8s.io/release-utils/version.gitVersion=${version}"
    ldflags+=" -X sigs.k8s.io/release-utils/version.gitTreeState=clean"
    ;;
ct)
    module=github.com/helm/chart-testing/v3
    package=${module}/ct
    version="${CT_VERSION}"
    ldflags="-s -w -X ${module}/ct/cmd.Version=${version}"
    # The proxy serves v3.14.0 but refuses the module's version list, which "go install
    # pkg@version" reads (for deprecations): build inside the downloaded module instead.
    from_module_dir=1
    ;;
*) deploy_die "unknown tool ${name} (crane, cosign or ct)" ;;
esac

bin="${TOOLS_CACHE}/${name}-${version}/${name}"

# module_dir MODULE VERSION: the module's directory in the Go module cache (downloaded if needed).
module_dir() {
    local dir
    dir="$(cd "${TOOLS_CACHE}" && go mod download -json "$1@$2" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
    [[ -d ${dir} ]] || deploy_die "cannot download the Go module $1@$2"
    printf '%s\n' "${dir}"
}

build_tool() {
    [[ -x ${bin} ]] && return 0
    command -v go >/dev/null 2>&1 || deploy_die "go is required to build ${name}"
    local start=${SECONDS}
    deploy_log "building ${name} ${version} from the ${module} Go module"
    mkdir -p "${bin%/*}.tmp"
    if [[ -n ${from_module_dir:-} ]]; then
        local dir
        dir="$(module_dir "${module}" "${version}")"
        (cd "${dir}" &&
            CGO_ENABLED=0 nice -n "${FISKIL_BUILD_NICE:-19}" \
                go build -trimpath -ldflags "${ldflags}" -o "${bin%/*}.tmp/${name}" "./${package#"${module}"/}") >&2
    else
        (cd "${TOOLS_CACHE}" &&
            CGO_ENABLED=0 GOBIN="${bin%/*}.tmp" nice -n "${FISKIL_BUILD_NICE:-19}" \
                go install -trimpath -ldflags "${ldflags}" "${package}@${version}") >&2
    fi
    "${bin%/*}.tmp/${name}" version >&2 || deploy_die "the ${name} just built does not run"
    rm -rf "${bin%/*}"
    mv "${bin%/*}.tmp" "${bin%/*}"
    deploy_log "${name} ${version} built in $((SECONDS - start))s"
}

with_tool_lock "${name}" build_tool
if [[ ${2:-} == --module-dir ]]; then
    # The module's own files (ct's etc/chart_schema.yaml and etc/lintconf.yaml, say).
    module_dir "${module}" "${version}"
else
    printf '%s\n' "${bin}"
fi
