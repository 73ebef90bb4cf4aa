#!/usr/bin/env bash
# Stop the control plane started by tests/cluster/up.sh DIR, and its node if
# it has one (FISKIL_CLUSTER_NODE=1): pods, kubelet, containerd, controllers,
# then every mount, cgroup, network interface, host directory and kernel
# setting the node made or changed.
#
#   tests/cluster/down.sh DIR
#
# Safe to call twice, or when nothing runs. Leaves logs and certificates in DIR
# (remove DIR yourself when done).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "${here}/common.sh"
# shellcheck source-path=SCRIPTDIR source=node-down.sh
source "${here}/node-down.sh"

[[ $# -eq 1 && -n $1 ]] || {
    echo "usage: $0 DIR" >&2
    exit 1
}
DIR="$1"
[[ -d ${DIR} ]] || exit 0

# stop NAME: TERM the process named in DIR/NAME.pid (only if it still runs the
# expected binary), wait for it, KILL it after a grace period.
stop() {
    local name="$1" pidfile="${DIR}/$1.pid" pid exe i
    [[ -f ${pidfile} ]] || return 0
    pid="$(cat "${pidfile}" 2>/dev/null || true)"
    if [[ ! ${pid} =~ ^[0-9]+$ ]]; then
        rm -f "${pidfile}"
        return 0
    fi
    # Guard against a recycled pid: the process must run our binary
    # (".../bin/NAME-<version>", possibly " (deleted)" after a rebuild).
    exe="$(readlink "/proc/${pid}/exe" 2>/dev/null || true)"
    exe="${exe##*/}"
    if [[ ${exe} != "${name}"-* && ${exe} != "${name}" ]]; then
        rm -f "${pidfile}"
        return 0
    fi
    kill -TERM "${pid}" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "${pid}" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "${pid}" 2>/dev/null; then
        echo "down.sh: ${name} (pid ${pid}) ignored SIGTERM for 15s; killing it" >&2
        kill -KILL "${pid}" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "${pid}" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "${pidfile}"
    echo "down.sh: stopped ${name} (pid ${pid})" >&2
}

stop_node
stop kube-apiserver
stop etcd
