#!/usr/bin/env bash
# Build (once) and cache kube-apiserver and etcd from Go modules.
#
#   tests/cluster/build.sh          # build whatever is missing from the cache
#
# Binaries land in ${FISKIL_CLUSTER_CACHE:-$HOME/.cache/fiskil-token-refresher/cluster}/bin
# as kube-apiserver-<version> and etcd-<version>; when they exist nothing is built.
# The throwaway Go modules used for the build live in the cache directory too.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "${here}/common.sh"

command -v go >/dev/null 2>&1 || cluster_die "go is required to build kube-apiserver and etcd"

# Compile at low priority: other builds usually share this machine.
NICE=(nice -n "${FISKIL_CLUSTER_BUILD_NICE:-19}")
export CGO_ENABLED=0

mkdir -p "${CLUSTER_BIN_DIR}"

# new_build_module DIR MODULE_PATH: fresh throwaway module in DIR.
new_build_module() {
    local dir="$1"
    rm -rf "${dir}"
    mkdir -p "${dir}"
    (cd "${dir}" && go mod init "$2" >/dev/null 2>&1)
    # The go directive must be at least what the dependencies need; "go mod
    # tidy" raises it as required.
}

# write_tools_file DIR PACKAGE...: a never-compiled file importing the commands
# so that "go mod tidy" records every dependency they need.
write_tools_file() {
    local dir="$1" pkg
    shift
    {
        echo '//go:build tools'
        echo
        echo 'package tools'
        echo
        echo 'import ('
        for pkg in "$@"; do echo "	_ \"${pkg}\""; done
        echo ')'
    } >"${dir}/tools.go"
}

build_kube_apiserver() {
    local version="${KUBE_VERSION}"
    local minor_patch="${version#v1.}" # 37.2
    local staging_version="v0.${minor_patch}"
    local dir="${CLUSTER_CACHE}/build/kube-apiserver-${version}"
    local start=${SECONDS}

    cluster_log "building kube-apiserver ${version} in ${dir} (staging modules ${staging_version})"
    new_build_module "${dir}" fiskil.local/cluster-build/kube-apiserver
    cd "${dir}"

    # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them
    # with directories of its own tree; those replace directives are ignored for
    # a dependency, so pin each staging module to its published v0.<minor>.<patch>.
    go mod download "k8s.io/kubernetes@${version}"
    local kube_gomod
    kube_gomod="$(go mod download -json "k8s.io/kubernetes@${version}" |
        sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
    [[ -f ${kube_gomod} ]] || cluster_die "cannot find go.mod of k8s.io/kubernetes@${version}"

    local staging=()
    mapfile -t staging < <(awk '
        /^replace[[:space:]]*\(/ { inblock = 1; next }
        inblock && /^\)/ { inblock = 0; next }
        inblock && $2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }
        /^replace[[:space:]]+k8s\.io\/[^[:space:]]+[[:space:]]+=>[[:space:]]+\.\/staging\// { print $2 }
    ' "${kube_gomod}")
    ((${#staging[@]} > 0)) || cluster_die "no staging replace directives found in ${kube_gomod}"

    local edits=(-require="k8s.io/kubernetes@${version}")
    local m
    for m in "${staging[@]}"; do
        edits+=(-replace="${m}=${m}@${staging_version}")
    done
    go mod edit "${edits[@]}"
    write_tools_file "${dir}" k8s.io/kubernetes/cmd/kube-apiserver
    "${NICE[@]}" go mod tidy

    local pkg=k8s.io/component-base/version
    local ldflags="-s -w"
    ldflags+=" -X ${pkg}.gitVersion=${version}"
    ldflags+=" -X ${pkg}.gitMajor=1"
    ldflags+=" -X ${pkg}.gitMinor=${minor_patch%%.*}"
    ldflags+=" -X ${pkg}.gitTreeState=clean"
    ldflags+=" -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
    "${NICE[@]}" go build -trimpath -buildvcs=false -ldflags "${ldflags}" \
        -o "${KUBE_APISERVER_BIN}.tmp" k8s.io/kubernetes/cmd/kube-apiserver
    "${KUBE_APISERVER_BIN}.tmp" --version >&2
    mv -f "${KUBE_APISERVER_BIN}.tmp" "${KUBE_APISERVER_BIN}"
    cluster_log "kube-apiserver ${version} built in $((SECONDS - start))s"
}

build_etcd() {
    local version="${ETCD_VERSION}"
    local dir="${CLUSTER_CACHE}/build/etcd-${version}"
    local start=${SECONDS}

    cluster_log "building etcd ${version} in ${dir}"
    new_build_module "${dir}" fiskil.local/cluster-build/etcd
    cd "${dir}"
    # go.etcd.io/etcd/server/v3 is the etcd main package; its go.mod replaces
    # the sibling etcd modules with local paths, so "go install pkg@version"
    # refuses it: build it as a dependency instead.
    go mod edit -require="go.etcd.io/etcd/server/v3@${version}"
    write_tools_file "${dir}" go.etcd.io/etcd/server/v3
    "${NICE[@]}" go mod tidy
    "${NICE[@]}" go build -trimpath -buildvcs=false -ldflags "-s -w" -o "${ETCD_BIN}.tmp" go.etcd.io/etcd/server/v3
    "${ETCD_BIN}.tmp" --version >&2
    mv -f "${ETCD_BIN}.tmp" "${ETCD_BIN}"
    cluster_log "etcd ${version} built in $((SECONDS - start))s"
}

# A cached binary counts only if it runs and reports the expected version.
etcd_cached() {
    [[ -x ${ETCD_BIN} ]] &&
        "${ETCD_BIN}" --version 2>/dev/null | grep -qx "etcd Version: ${ETCD_VERSION#v}"
}
kube_apiserver_cached() {
    [[ -x ${KUBE_APISERVER_BIN} ]] &&
        [[ "$("${KUBE_APISERVER_BIN}" --version 2>/dev/null)" == "Kubernetes ${KUBE_VERSION}" ]]
}

# Serialise concurrent builds (two test runs starting at once on a cold cache).
if command -v flock >/dev/null 2>&1; then
    exec 9>"${CLUSTER_CACHE}/build.lock"
    if ! flock -n 9; then
        cluster_log "another build.sh holds ${CLUSTER_CACHE}/build.lock; waiting for it"
        flock 9
    fi
fi

total_start=${SECONDS}
built=0
if ! etcd_cached; then
    (build_etcd)
    etcd_cached || cluster_die "built ${ETCD_BIN} does not report version ${ETCD_VERSION}"
    built=1
fi
if ! kube_apiserver_cached; then
    (build_kube_apiserver)
    kube_apiserver_cached || cluster_die "built ${KUBE_APISERVER_BIN} does not report version ${KUBE_VERSION}"
    built=1
fi
if ((built)); then
    cluster_log "build finished in $((SECONDS - total_start))s"
else
    cluster_log "using cached ${KUBE_APISERVER_BIN##*/} and ${ETCD_BIN##*/} from ${CLUSTER_BIN_DIR}"
fi
