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
# The node (FISKIL_CLUSTER_NODE=1): commands built from the same module, and
# the sandbox container's binary compiled from the module's C source.
NODE_KUBE_COMMANDS=(kubelet kube-scheduler kube-controller-manager)
PAUSE_BIN="${CLUSTER_BIN_DIR}/pause-${KUBE_VERSION}"
# Names the DIR whose node runs: one node per host (the kubelet uses fixed host paths).
NODE_OWNER_FILE=/run/fiskil-cluster-node.owner
# Directories the kubelet, containerd and the CNI plugins create at fixed
# places outside the directories they are given.
NODE_HOST_PATHS=(/var/lib/kubelet /var/log/containers /var/log/pods /run/containerd
    /var/lib/cni /run/netns /etc/cni /opt/cni /var/lib/containerd
    /usr/libexec/kubernetes /etc/kubernetes /run/kubernetes /run/runc /run/containerd-shims)
# Kernel settings the kubelet tunes at start (setupKernelTunables).
NODE_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
    kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

# kube_bin NAME: the cached binary of the k8s.io/kubernetes command NAME.
kube_bin() {
    printf '%s/%s-%s\n' "${CLUSTER_BIN_DIR}" "$1" "${KUBE_VERSION}"
}
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
