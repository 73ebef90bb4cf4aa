# shellcheck shell=bash disable=SC2034 # the variables are used by the sourcing scripts
# Shared settings for tests/cluster/{build,up,down}.sh. Sourced, not executed.

# Versions of the control-plane binaries. Both are built from Go modules
# served by the Go module proxy (see build.sh).
KUBE_VERSION="${FISKIL_KUBE_VERSION:-v1.37.2}"
ETCD_VERSION="${FISKIL_ETCD_VERSION:-v3.6.16}"

# Cache directory for the built binaries (outside the repository).
CLUSTER_CACHE="${FISKIL_CLUSTER_CACHE:-${HOME}/.cache/fiskil-token-refresher/cluster}"
CLUSTER_BIN_DIR="${CLUSTER_CACHE}/bin"
KUBE_APISERVER_BIN="${CLUSTER_BIN_DIR}/kube-apiserver-${KUBE_VERSION}"
ETCD_BIN="${CLUSTER_BIN_DIR}/etcd-${ETCD_VERSION}"

cluster_log() {
    printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

cluster_die() {
    cluster_log "ERROR: $*"
    exit 1
}

# Install Debian packages if the given commands are missing.
# Usage: ensure_cmds cmd:package [cmd:package ...]
ensure_cmds() {
    local missing=() spec
    for spec in "$@"; do
        command -v "${spec%%:*}" >/dev/null 2>&1 || missing+=("${spec#*:}")
    done
    if ((${#missing[@]} > 0)); then
        command -v apt-get >/dev/null 2>&1 ||
            cluster_die "missing packages ${missing[*]} and no apt-get to install them"
        cluster_log "installing missing packages: ${missing[*]}"
        local sudo=()
        if [[ ${EUID} -ne 0 ]]; then sudo=(sudo); fi
        "${sudo[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}
