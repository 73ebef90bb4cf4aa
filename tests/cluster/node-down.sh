# shellcheck shell=bash
# Tear down the node started by node.sh (FISKIL_CLUSTER_NODE=1). Sourced by
# down.sh while the API server still runs; uses its DIR and stop(). Every step
# tolerates a node that only partly started, and anything already gone.

# node_api_delete_pods: ask the kubelet, through the API server, to stop every
# pod, so that it tears their sandboxes down (CNI DEL, volumes) itself.
node_api_delete_pods() {
    local env="${DIR}/cluster.env" pki="${DIR}/pki" port namespaces ns
    [[ -f ${env} ]] || return 0
    port="$(sed -n 's/^FISKIL_CLUSTER_APISERVER_PORT=//p' "${env}")"
    [[ -n ${port} ]] || return 0
    api() {
        curl -fsS --max-time 10 --cacert "${pki}/ca.crt" --cert "${pki}/admin.crt" \
            --key "${pki}/admin.key" "$@" 2>/dev/null
    }
    namespaces="$(api "https://127.0.0.1:${port}/api/v1/namespaces" | python3 -c '
import json, sys
for item in json.load(sys.stdin)["items"]:
    print(item["metadata"]["name"])' 2>/dev/null)" || return 0
    for ns in ${namespaces}; do
        api -X DELETE -H 'Content-Type: application/json' -d '{"gracePeriodSeconds":0}' \
            "https://127.0.0.1:${port}/api/v1/namespaces/${ns}/pods" >/dev/null || true
    done
}

# mounted_under PATH: whether a mount point is PATH or below it. Reads the
# whole table first: "grep -q" in a pipe could stop the reader early, and a
# failed pipe must never read as "nothing mounted" before an "rm -rf".
mounted_under() {
    local table
    table="$(awk '{ print $5 }' /proc/self/mountinfo)"
    grep -qE "^$(printf '%s' "$1" | sed 's/[][\.*^$+?(){}|]/\\&/g')(/|$)" <<<"${table}"
}

node_ctr() {
    ctr --address "${DIR}/node/containerd/containerd.sock" --namespace k8s.io "$@"
}

# node_wait_no_running_tasks SECONDS: until no container runs. (The kubelet
# removes stopped containers only at its next garbage collection, a minute
# apart; node_remove_containers does that.)
node_wait_no_running_tasks() {
    local deadline=$((SECONDS + $1)) tasks
    while ((SECONDS < deadline)); do
        tasks="$(node_ctr tasks list 2>/dev/null)" || return 0
        awk 'NR > 1 && $3 == "RUNNING" { found = 1 } END { exit !found }' <<<"${tasks}" || return 0
        sleep 1
    done
    return 1
}

# node_remove_containers: what the kubelet left, removed through containerd.
node_remove_containers() {
    local id
    for id in $(node_ctr tasks list -q 2>/dev/null); do
        node_ctr tasks kill --signal SIGKILL "${id}" >/dev/null 2>&1 || true
    done
    sleep 1
    for id in $(node_ctr tasks list -q 2>/dev/null); do
        node_ctr tasks delete --force "${id}" >/dev/null 2>&1 || true
    done
    for id in $(node_ctr containers list -q 2>/dev/null); do
        node_ctr containers delete "${id}" >/dev/null 2>&1 || true
    done
}

# node_pids_using PATTERN: pids of processes whose command line contains PATTERN.
node_pids_using() {
    local proc cmdline
    for proc in /proc/[0-9]*; do
        cmdline="$(tr '\0' ' ' 2>/dev/null <"${proc}/cmdline")" || continue
        [[ ${cmdline} == *"$1"* ]] && echo "${proc#/proc/}"
    done
    return 0
}

# node_kill_shims: containerd's shims (and their containers) outlive containerd.
node_kill_shims() {
    local pid pids
    pids="$(node_pids_using "${DIR}/node/containerd/")"
    [[ -z ${pids} ]] && return 0
    for pid in ${pids}; do
        [[ ${pid} == "$$" || ${pid} == "${BASHPID}" ]] && continue
        echo "down.sh: killing leftover process ${pid} ($(tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | cut -c1-80))" >&2
        kill -KILL "${pid}" 2>/dev/null || true
    done
    sleep 0.5
}

# node_unmount: every mount point under the node's directories, deepest first.
node_unmount() {
    local prefixes=("${DIR}/node/" /run/containerd/ /run/netns/ /var/lib/kubelet/)
    local target prefix pass
    for pass in 1 2 3; do
        local targets=()
        while read -r target; do
            target="$(printf '%b' "${target}")"
            for prefix in "${prefixes[@]}"; do
                [[ ${target}/ == "${prefix}"* ]] && targets+=("${target}")
            done
        done < <(awk '{ print $5 }' /proc/self/mountinfo)
        ((${#targets[@]} == 0)) && return 0
        while read -r target; do
            umount "${target}" 2>/dev/null || umount -l "${target}" 2>/dev/null || true
        done < <(printf '%s\n' "${targets[@]}" | awk '{ print length($0) "\t" $0 }' | sort -rn | cut -f2-)
        [[ ${pass} -lt 3 ]] || echo "down.sh: mounts left after unmounting: ${targets[*]}" >&2
    done
}

node_remove_network() {
    local bridge link
    bridge="$(cat "${DIR}/node/bridge" 2>/dev/null)" || return 0
    for netns in /run/netns/cni-*; do
        [[ -e ${netns} ]] && rm -f "${netns}"
    done
    ip link show "${bridge}" >/dev/null 2>&1 || return 0
    for link in $(ip -o link show master "${bridge}" 2>/dev/null | awk -F': ' '{ print $2 }' | cut -d@ -f1); do
        ip link delete "${link}" 2>/dev/null || true
    done
    ip link delete "${bridge}" 2>/dev/null || echo "down.sh: could not delete bridge ${bridge}" >&2
}

node_remove_cgroups() {
    local root hierarchy pass left
    root="$(cat "${DIR}/node/cgroup-root" 2>/dev/null)" || return 0
    [[ ${root} == /?* ]] || return 0
    for pass in 1 2 3 4 5; do
        left=0
        for hierarchy in /sys/fs/cgroup/*; do
            [[ -d ${hierarchy}${root} ]] || continue
            find "${hierarchy}${root}" -depth -type d -exec rmdir {} \; 2>/dev/null || true
            [[ -d ${hierarchy}${root} ]] && left=1
        done
        ((left)) || return 0
        sleep 1
    done
    echo "down.sh: cgroups left under ${root}" >&2
}

# node_remove_host_paths: the kubelet's fixed host directories that were not
# there before the node started.
node_remove_host_paths() {
    local before="${DIR}/node/host-paths-before" path
    [[ -f ${before} ]] || return 0
    for path in "${NODE_HOST_PATHS[@]}"; do
        grep -qxF "${path}" "${before}" && continue
        [[ -e ${path} || -L ${path} ]] || continue
        if mounted_under "${path}"; then
            echo "down.sh: ${path} still has mounts; not removing it" >&2
            continue
        fi
        rm -rf --one-file-system "${path}"
    done
}

node_restore_sysctls() {
    local line
    [[ -f "${DIR}/node/sysctl-before" ]] || return 0
    while IFS= read -r line; do
        [[ "$(sysctl -n "${line%%=*}" 2>/dev/null)" == "${line#*=}" ]] ||
            sysctl -q -w "${line}" >/dev/null 2>&1 || echo "down.sh: could not restore ${line}" >&2
    done <"${DIR}/node/sysctl-before"
}

stop_node() {
    [[ -d "${DIR}/node" ]] || return 0
    # The controllers would recreate deleted pods; stop them first.
    stop kube-scheduler
    stop kube-controller-manager
    if [[ -f "${DIR}/kubelet.pid" ]] && kill -0 "$(cat "${DIR}/kubelet.pid")" 2>/dev/null; then
        node_api_delete_pods
        node_wait_no_running_tasks 60 || echo "down.sh: containers still run after 60 s; killing them" >&2
    fi
    stop kubelet
    node_remove_containers
    stop containerd
    stop crane
    node_kill_shims
    node_unmount
    node_remove_network
    node_remove_cgroups
    node_remove_host_paths
    node_restore_sysctls
    if ! mounted_under "${DIR}/node"; then
        rm -rf --one-file-system "${DIR}/node"
    else
        echo "down.sh: mounts left under ${DIR}/node; not removing it" >&2
    fi
    if [[ "$(cat "${NODE_OWNER_FILE}" 2>/dev/null)" == "${DIR}" ]]; then
        rm -f "${NODE_OWNER_FILE}"
    fi
    rm -f "${DIR}/node-name" "${DIR}/host-ip"
    echo "down.sh: node stopped and removed" >&2
}
