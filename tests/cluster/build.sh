#!/usr/bin/env bash
# Build (once) and cache kube-apiserver and etcd from Go modules.
#
#   tests/cluster/build.sh                       # build whatever is missing from the cache
#   FISKIL_CLUSTER_NODE=1 tests/cluster/build.sh # also kubelet, kube-scheduler,
#                                                # kube-controller-manager and pause
#
# Binaries land in ${FISKIL_CLUSTER_CACHE:-$HOME/.cache/fiskil-token-refresher/cluster}/bin
# as NAME-<version>; when they exist nothing is built. The throwaway Go modules
# used for the build live in the cache directory too.
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

# build_kube NAME...: build the named k8s.io/kubernetes commands (cmd/NAME)
# from one throwaway module, so that they share the download and the compile.
build_kube() {
    local version="${KUBE_VERSION}"
    local minor_patch="${version#v1.}" # 37.2
    local staging_version="v0.${minor_patch}"
    local dir="${CLUSTER_CACHE}/build/kube-${version}"
    local start=${SECONDS}

    cluster_log "building $* ${version} in ${dir} (staging modules ${staging_version})"
    new_build_module "${dir}" fiskil.local/cluster-build/kube
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
    local pkgs=() name
    for name in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/${name}"); done
    write_tools_file "${dir}" "${pkgs[@]}"
    "${NICE[@]}" go mod tidy

    local pkg=k8s.io/component-base/version
    local ldflags="-s -w"
    ldflags+=" -X ${pkg}.gitVersion=${version}"
    ldflags+=" -X ${pkg}.gitMajor=1"
    ldflags+=" -X ${pkg}.gitMinor=${minor_patch%%.*}"
    ldflags+=" -X ${pkg}.gitTreeState=clean"
    ldflags+=" -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
    rm -rf "${dir}/out"
    mkdir -p "${dir}/out"
    "${NICE[@]}" go build -trimpath -buildvcs=false -ldflags "${ldflags}" -o "${dir}/out/" "${pkgs[@]}"
    for name in "$@"; do
        "${dir}/out/${name}" --version >&2
        mv -f "${dir}/out/${name}" "$(kube_bin "${name}")"
    done
    cluster_log "$* ${version} built in $((SECONDS - start))s"
}

# build_pause: the sandbox ("pause") container's binary, compiled statically
# from the C source that ships in the k8s.io/kubernetes module.
build_pause() {
    local src
    src="$(go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')/build/pause/linux/pause.c"
    [[ -f ${src} ]] || cluster_die "cannot find ${src} in the k8s.io/kubernetes module"
    command -v gcc >/dev/null 2>&1 || cluster_die "gcc is required to build the pause binary"
    gcc -Os -Wall -Werror -static -DVERSION="${KUBE_VERSION}-fiskil" -o "${PAUSE_BIN}.tmp" "${src}"
    strip "${PAUSE_BIN}.tmp"
    mv -f "${PAUSE_BIN}.tmp" "${PAUSE_BIN}"
    cluster_log "pause built from ${src}"
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
    local out
    # Read all of the output first: "grep -q" stops reading at the first
    # match, and under pipefail the writer's SIGPIPE would fail the check.
    [[ -x ${ETCD_BIN} ]] && out="$("${ETCD_BIN}" --version 2>/dev/null)" &&
        grep -qx "etcd Version: ${ETCD_VERSION#v}" <<<"${out}"
}
kube_cached() {
    local bin
    bin="$(kube_bin "$1")"
    [[ -x ${bin} ]] && [[ "$("${bin}" --version 2>/dev/null)" == "Kubernetes ${KUBE_VERSION}" ]]
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
kube_wanted=(kube-apiserver)
if [[ ${FISKIL_CLUSTER_NODE:-} == 1 ]]; then
    kube_wanted+=("${NODE_KUBE_COMMANDS[@]}")
fi
kube_missing=()
for name in "${kube_wanted[@]}"; do
    kube_cached "${name}" || kube_missing+=("${name}")
done
if ((${#kube_missing[@]} > 0)); then
    (build_kube "${kube_missing[@]}")
    for name in "${kube_missing[@]}"; do
        kube_cached "${name}" || cluster_die "built $(kube_bin "${name}") does not report version ${KUBE_VERSION}"
    done
    built=1
fi
if [[ ${FISKIL_CLUSTER_NODE:-} == 1 && ! -x ${PAUSE_BIN} ]]; then
    (build_pause)
    built=1
fi
if ((built)); then
    cluster_log "build finished in $((SECONDS - total_start))s"
else
    cluster_log "using cached ${ETCD_BIN##*/} and ${kube_wanted[*]} ${KUBE_VERSION} from ${CLUSTER_BIN_DIR}"
fi
