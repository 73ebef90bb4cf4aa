#!/usr/bin/env bash
# Print what a test node could leave behind on this host, one fact a line, so
# that two snapshots (before up.sh, after down.sh) can be compared with diff:
# mount points, network interfaces, cgroups, the kubelet's fixed host paths,
# kernel settings the kubelet tunes, the firewall rules, and processes of the
# node's programs. Reads only.
#
#   tests/cluster/host-state.sh >before; ...; tests/cluster/host-state.sh >after
#   diff before after
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "${here}/common.sh"

awk '{ print "mount " $5 }' /proc/self/mountinfo | sort
ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print "link " $2 }' | sort
for hierarchy in /sys/fs/cgroup/*; do
    [[ -d ${hierarchy} ]] || continue
    find "${hierarchy}" -mindepth 1 -maxdepth 1 -type d -printf 'cgroup %p\n' 2>/dev/null
done | sort
for path in "${NODE_HOST_PATHS[@]}" "${NODE_OWNER_FILE}"; do
    [[ -e ${path} || -L ${path} ]] && echo "path ${path}"
done
for name in "${NODE_SYSCTLS[@]}" net.ipv4.ip_forward net.ipv6.conf.all.forwarding; do
    echo "sysctl ${name}=$(sysctl -n "${name}" 2>/dev/null)"
done
for tool in iptables-save ip6tables-save; do
    if command -v "${tool}" >/dev/null 2>&1; then
        # Without comments and packet counters, which change by themselves.
        "${tool}" 2>/dev/null | grep -v '^#' | sed -e 's/ \[[0-9]*:[0-9]*\]$//' -e "s/^/${tool} /" || true
    fi
done
for proc in /proc/[0-9]*; do
    exe="$(readlink "${proc}/exe" 2>/dev/null)" || continue
    # The node's programs, and what runs in its containers (their executables
    # are seen at their paths inside the container).
    case "${exe}" in
    */containerd | */containerd-shim* | */runc | */kubelet-* | */kube-scheduler-* | \
        */kube-controller-manager-* | /pause | /fiskil-token-refresher | /bin/busybox)
        echo "process ${exe} $(tr '\0' ' ' 2>/dev/null <"${proc}/cmdline" | cut -c1-120)"
        ;;
    esac
done | sort
