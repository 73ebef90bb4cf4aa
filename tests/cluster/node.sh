# shellcheck shell=bash disable=SC2154 # here, DIR, SERVICE_CIDR, APISERVER_PORT: from up.sh
# The node of the test cluster (FISKIL_CLUSTER_NODE=1): containerd, CNI,
# kube-scheduler, kube-controller-manager and a kubelet. Sourced by up.sh after
# the control plane is ready; uses up.sh's DIR, start_daemon, wait_until,
# pick_port and the variables of common.sh. tests/cluster/node-down.sh undoes
# all of it.
#
# What this leaves on the host while it runs, all removed by node-down.sh:
# the bridge NODE_BRIDGE with NODE_HOST_IP, the cgroup NODE_CGROUP_ROOT in every
# cgroup v1 hierarchy, pod network namespaces and mounts, the kubelet's fixed
# host directories (recorded in DIR/node/host-paths-before), the kernel
# settings the kubelet tunes (recorded in DIR/node/sysctl-before) and
# NODE_OWNER_FILE, which stops a second node from starting on the same host.

NODE_BRIDGE="${FISKIL_CLUSTER_BRIDGE:-fiskil0}"
NODE_POD_SUBNET="${FISKIL_CLUSTER_POD_SUBNET:-10.244.0.0/24}"
NODE_CGROUP_ROOT="/${FISKIL_CLUSTER_CGROUP_ROOT:-fiskil-node}"
NODE_SYNC_FREQUENCY="${FISKIL_CLUSTER_SYNC_FREQUENCY:-1m}"

# ------------------------------------------------------------- checks ---
node_prerequisites() {
    ensure_cmds containerd:containerd ctr:containerd runc:runc busybox:busybox-static \
        ip:iproute2 python3:python3 gcc:gcc
    [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] ||
        ensure_cmds /usr/lib/cni/bridge:containernetworking-plugins
    [[ ${EUID} -eq 0 ]] || cluster_die "the node needs root (containerd, mounts, cgroups, a bridge)"
    [[ -d /sys/fs/cgroup/memory && -d /sys/fs/cgroup/cpuset ]] ||
        cluster_die "the node expects cgroup v1 hierarchies under /sys/fs/cgroup"
    local addr
    addr="$(getent ahostsv4 "$(hostname)" | awk 'NR == 1 { print $1 }')"
    [[ ${addr} == 127.* ]] ||
        cluster_die "hostname $(hostname) resolves to '${addr}', not to loopback: the API server reaches the kubelet by that name (add '127.0.1.1 $(hostname)' to /etc/hosts)"
    if [[ -f ${NODE_OWNER_FILE} ]]; then
        local owner
        owner="$(cat "${NODE_OWNER_FILE}")"
        if [[ ${owner} != "${DIR}" && -d ${owner} ]] && [[ -f "${owner}/kubelet.pid" ]] &&
            kill -0 "$(cat "${owner}/kubelet.pid")" 2>/dev/null; then
            cluster_die "a node from ${owner} runs on this host; stop it with tests/cluster/down.sh ${owner} (one node per host: the kubelet uses fixed host paths)"
        fi
    fi
    ip link show "${NODE_BRIDGE}" >/dev/null 2>&1 &&
        cluster_die "network interface ${NODE_BRIDGE} already exists (set FISKIL_CLUSTER_BRIDGE, or run down.sh on the directory that made it)"
    return 0
}

# ----------------------------------------------------------- host state ---
node_record_host() {
    local node="${DIR}/node" path name
    echo "${DIR}" >"${NODE_OWNER_FILE}"
    : >"${node}/host-paths-before"
    for path in "${NODE_HOST_PATHS[@]}"; do
        [[ -e ${path} || -L ${path} ]] && echo "${path}" >>"${node}/host-paths-before"
    done
    : >"${node}/sysctl-before"
    for name in "${NODE_SYSCTLS[@]}"; do
        echo "${name}=$(sysctl -n "${name}")" >>"${node}/sysctl-before"
    done
    echo "${NODE_BRIDGE}" >"${node}/bridge"
    echo "${NODE_CGROUP_ROOT}" >"${node}/cgroup-root"
}

# The kubelet wants cgroupRoot to exist in every hierarchy; a new cpuset
# cgroup starts with no CPUs or memory nodes, so copy them from the root.
node_make_cgroups() {
    local hierarchy
    for hierarchy in /sys/fs/cgroup/*; do
        [[ ${hierarchy} == */unified ]] && continue
        mountpoint -q "${hierarchy}" || continue
        mkdir -p "${hierarchy}${NODE_CGROUP_ROOT}"
    done
    cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset${NODE_CGROUP_ROOT}/cpuset.cpus"
    cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset${NODE_CGROUP_ROOT}/cpuset.mems"
}

# The bridge carries the pod network. Its own address, in the pod subnet, is
# where the host (kubelet probes, test servers) meets the pods: no gateway, no
# forwarding, no NAT; pods get no default route.
node_make_bridge() {
    local prefix="${NODE_POD_SUBNET#*/}" base="${NODE_POD_SUBNET%/*}"
    NODE_HOST_IP="${base%.*}.$((${base##*.} + 1))"
    ip link add "${NODE_BRIDGE}" type bridge
    ip addr add "${NODE_HOST_IP}/${prefix}" dev "${NODE_BRIDGE}"
    ip link set "${NODE_BRIDGE}" up
}

# A stub for the firewall tools, first in the PATH of the kubelet, containerd
# and the CNI plugins: they must not change the host's firewall.
node_write_firewall_stub() {
    local bin="${DIR}/node/no-firewall-bin" tool
    mkdir -p "${bin}"
    cat >"${bin}/iptables" <<'EOF_STUB'
#!/bin/sh
echo "$(basename "$0"): disabled on this test node (the host firewall is left alone)" >&2
exit 1
EOF_STUB
    chmod 0755 "${bin}/iptables"
    for tool in ip6tables iptables-save iptables-restore ip6tables-save ip6tables-restore \
        iptables-legacy ip6tables-legacy iptables-nft ip6tables-nft nft; do
        ln -sf iptables "${bin}/${tool}"
    done
    NODE_PATH="${bin}:${PATH}"
}

# ------------------------------------------------------------ containerd ---
node_start_containerd() {
    local node="${DIR}/node" c="${DIR}/node/containerd"
    mkdir -p "${c}/root" "${c}/state" "${node}/cni/net.d" "${node}/cni/ipam" "${node}/cni/cache"
    cat >"${c}/config.toml" <<EOF_TOML
version = 2
root = "${c}/root"
state = "${c}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "${c}/containerd.sock"

[ttrpc]
  address = "${c}/containerd.sock.ttrpc"

[debug]
  address = ""

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "${NODE_PAUSE_IMAGE}"
    # Without CAP_SYS_RESOURCE a negative oom_score_adj cannot be written and
    # every sandbox fails ("can't get final child's PID from pipe: EOF").
    restrict_oom_score_adj = true
    disable_apparmor = true
    enable_selinux = false
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "${c}/certs.d"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "${node}/cni/net.d"
      max_conf_num = 1
  [plugins."io.containerd.internal.v1.opt"]
    path = "${c}/opt"
EOF_TOML
    cat >"${node}/cni/net.d/10-fiskil.conflist" <<EOF_CNI
{
  "cniVersion": "1.0.0",
  "name": "fiskil-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "${NODE_BRIDGE}",
      "isGateway": false,
      "isDefaultGateway": false,
      "ipMasq": false,
      "hairpinMode": false,
      "ipam": {
        "type": "host-local",
        "dataDir": "${node}/cni/ipam",
        "ranges": [[{ "subnet": "${NODE_POD_SUBNET}", "rangeStart": "${NODE_HOST_IP%.*}.10" }]]
      }
    },
    { "type": "loopback" }
  ]
}
EOF_CNI
    # The release registry on loopback speaks plain HTTP.
    mkdir -p "${c}/certs.d/${NODE_REGISTRY}"
    cat >"${c}/certs.d/${NODE_REGISTRY}/hosts.toml" <<EOF_HOSTS
server = "http://${NODE_REGISTRY}"

[host."http://${NODE_REGISTRY}"]
  capabilities = ["pull", "resolve"]
EOF_HOSTS
    PATH="${NODE_PATH}" start_daemon containerd containerd --config "${c}/config.toml" --log-level warn
    local rc=0
    wait_until containerd 60 containerd_answers || rc=$?
    ((rc == 0)) || node_fail containerd "containerd did not answer on ${c}/containerd.sock"
}

containerd_answers() {
    ctr_node version >/dev/null 2>&1
}

# ctr_node ARGS...: ctr against this node's containerd, in the CRI namespace.
ctr_node() {
    ctr --address "${DIR}/node/containerd/containerd.sock" --namespace k8s.io "$@"
}

# --------------------------------------------------------------- images ---
NODE_PAUSE_IMAGE="registry.k8s.io/pause:fiskil-e2e"
NODE_BUSYBOX_IMAGE="docker.io/library/busybox:e2e"
NODE_REPO="$(cd "${here}/../.." && pwd)"

# The static musl binary the Dockerfile's runtime stage ships
# (tests/deploy/static-binary.sh builds it exactly as the builder stage does).
node_static_binary() {
    local binary
    binary="${FISKIL_CLUSTER_IMAGE_BINARY:-${NODE_REPO}/target/static-musl/x86_64-unknown-linux-musl/release/fiskil-token-refresher}"
    if [[ ! -x ${binary} && -z ${FISKIL_CLUSTER_IMAGE_BINARY:-} ]]; then
        cluster_log "building the static binary for the image (tests/deploy/static-binary.sh)"
        "${NODE_REPO}/tests/deploy/static-binary.sh" >&2 || cluster_die "tests/deploy/static-binary.sh failed"
    fi
    [[ -x ${binary} ]] || cluster_die "no static binary at ${binary} (set FISKIL_CLUSTER_IMAGE_BINARY, or make tests/deploy/static-binary.sh able to build it)"
    printf '%s\n' "${binary}"
}

node_import_images() {
    local images="${DIR}/node/images"
    rm -rf "${images}"
    mkdir -p "${images}"
    python3 "${here}/oci_image.py" busybox --binary "$(command -v busybox)" \
        --name "${NODE_BUSYBOX_IMAGE}" --out "${images}/busybox.tar"
    python3 "${here}/oci_image.py" pause --binary "${PAUSE_BIN}" \
        --name "${NODE_PAUSE_IMAGE}" --out "${images}/pause.tar"
    local tar
    for tar in pause busybox; do
        ctr_node images import --snapshotter overlayfs "${images}/${tar}.tar" >&2 ||
            node_fail containerd "ctr images import ${tar}.tar failed"
    done
    rm -rf "${images}"
}

# ------------------------------------------------------------ registry ---
# The product reaches the node the way it reaches a user's cluster: released into an OCI
# registry (crane registry serve on 127.0.0.1) by `cargo xtask release`, signed, verified with
# cosign, and pulled by containerd by digest. The e2e suite installs the chart from the same
# registry (DIR/node/release/released names the image and the chart).
node_start_registry() {
    local crane port="" i
    crane="$("${NODE_REPO}/tests/deploy/go-tool.sh" crane)" || cluster_die "tests/deploy/go-tool.sh crane failed"
    # start_daemon appends to the log: an earlier run's port must not be read.
    : >"${DIR}/crane.log"
    start_daemon crane "${crane}" registry serve --address 127.0.0.1:0
    for ((i = 0; i < 100; i++)); do
        port="$(sed -n 's/.*serving on port \([0-9][0-9]*\).*/\1/p' "${DIR}/crane.log" | head -n 1)"
        [[ -n ${port} ]] && break
        daemon_alive crane || break
        sleep 0.1
    done
    [[ -n ${port} ]] || node_fail crane "crane registry serve did not start"
    NODE_REGISTRY="127.0.0.1:${port}"
}

# node_release: cargo xtask release into the registry with a key pair made here, then cosign
# verify of the image and the chart with the public key, as a user checks before installing.
node_release() {
    local out="${DIR}/node/release" binary cosign
    binary="$(node_static_binary)"
    mkdir -p "${out}/docker"
    CRANE="$("${NODE_REPO}/tests/deploy/go-tool.sh" crane)" || cluster_die "tests/deploy/go-tool.sh crane failed"
    COSIGN="$("${NODE_REPO}/tests/deploy/go-tool.sh" cosign)" || cluster_die "tests/deploy/go-tool.sh cosign failed"
    HELM="$("${NODE_REPO}/tests/deploy/helm.sh")" || cluster_die "tests/deploy/helm.sh failed"
    cosign="${COSIGN}"
    (
        export CRANE COSIGN HELM COSIGN_PASSWORD="" DOCKER_CONFIG="${out}/docker" \
            TUF_ROOT="${out}/tuf" SIGSTORE_NO_CACHE=true HELM_CACHE_HOME="${out}/helm/cache" \
            HELM_CONFIG_HOME="${out}/helm/config" HELM_DATA_HOME="${out}/helm/data" \
            HELM_REGISTRY_CONFIG="${out}/helm/registry.json"
        # errexit does not apply in a subshell on the left of ||: each step checks itself.
        cd "${out}" || exit 1
        "${cosign}" generate-key-pair --output-key-prefix release >/dev/null 2>&1 || exit 1
        cd "${NODE_REPO}" || exit 1
        cargo xtask release --registry "${NODE_REGISTRY}" --key "${out}/release.key" \
            --binary "${binary}" --out "${out}/artifacts" >"${out}/released" 2>"${out}/release.log" ||
            exit 1
        image="$(awk '$1 == "image" { print $2 }' "${out}/released")"
        chart="$(awk '$1 == "chart" { print $2 }' "${out}/released")"
        [[ -n ${image} && -n ${chart} ]] || exit 1
        for ref in "${image}" "${chart}"; do
            "${cosign}" verify --key "${out}/release.pub" --insecure-ignore-tlog=true \
                --allow-http-registry=true "${ref}" >>"${out}/verify.log" 2>&1 || exit 1
        done
    ) || {
        tail -n 20 "${out}/release.log" "${out}/verify.log" >&2 2>/dev/null || true
        node_fail crane "cargo xtask release into ${NODE_REGISTRY}, or cosign verify of it, failed"
    }
    cluster_log "released and verified: $(awk '$1 == "image" || $1 == "chart" { printf "%s ", $2 }' "${out}/released")"
}

# ------------------------------------------------------------- kubelet ---
node_write_kubelet_config() {
    local node="${DIR}/node"
    mkdir -p "${node}/kubelet" "${node}/pod-logs" "${node}/volume-plugins"
    cat >"${node}/kubelet-config.yaml" <<EOF_KUBELET
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 hosts are deprecated for the kubelet; this one is v1.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: ${NODE_CGROUP_ROOT}
containerRuntimeEndpoint: unix://${node}/containerd/containerd.sock
address: 127.0.0.1
port: ${KUBELET_PORT}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ${KUBELET_HEALTHZ_PORT}
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: ${DIR}/pki/ca.crt
authorization:
  mode: AlwaysAllow
# How often the kubelet syncs each pod; Secret volumes are updated on a sync.
syncFrequency: ${NODE_SYNC_FREQUENCY}
failSwapOn: false
podLogsDir: ${node}/pod-logs
volumePluginDir: ${node}/volume-plugins
evictionHard:
  memory.available: 1Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
maxPods: 50
EOF_KUBELET
}

node_start_kubelet() {
    local node="${DIR}/node"
    pick_port KUBELET_PORT
    pick_port KUBELET_HEALTHZ_PORT
    node_write_kubelet_config
    NODE_NAME="$(hostname | tr '[:upper:]' '[:lower:]')"
    PATH="${NODE_PATH}" start_daemon kubelet "$(kube_bin kubelet)" \
        --config "${node}/kubelet-config.yaml" \
        --kubeconfig "${DIR}/kubeconfig" \
        --root-dir "${node}/kubelet" \
        --cert-dir "${node}/kubelet/pki" \
        --node-ip "${NODE_HOST_IP}" \
        --hostname-override "${NODE_NAME}" \
        --v 1
}

# ---------------------------------------------------------- controllers ---
node_start_controllers() {
    start_daemon kube-controller-manager "$(kube_bin kube-controller-manager)" \
        --kubeconfig "${DIR}/kubeconfig" \
        --secure-port 0 \
        --leader-elect=false \
        --use-service-account-credentials=false \
        --root-ca-file "${DIR}/pki/ca.crt" \
        --service-account-private-key-file "${DIR}/pki/sa.key" \
        --service-cluster-ip-range "${SERVICE_CIDR}" \
        --v 1
    start_daemon kube-scheduler "$(kube_bin kube-scheduler)" \
        --kubeconfig "${DIR}/kubeconfig" \
        --secure-port 0 \
        --leader-elect=false \
        --v 1
}

# ---------------------------------------------------------------- waits ---
# api_get PATH: GET from the API server as the admin.
api_get() {
    local pki="${DIR}/pki"
    curl -fsS --max-time 5 --cacert "${pki}/ca.crt" --cert "${pki}/admin.crt" \
        --key "${pki}/admin.key" "https://127.0.0.1:${APISERVER_PORT}$1" 2>/dev/null
}

node_ready() {
    api_get "/api/v1/nodes/${NODE_NAME}" | python3 -c '
import json, sys
node = json.load(sys.stdin)
ready = [c for c in node.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
sys.exit(0 if ready and ready[0]["status"] == "True" else 1)' 2>/dev/null
}

default_service_account() {
    api_get /api/v1/namespaces/default/serviceaccounts/default >/dev/null &&
        api_get /api/v1/namespaces/default/configmaps/kube-root-ca.crt >/dev/null
}

# node_fail NAME MESSAGE: show NAME's log and stop.
node_fail() {
    local f="${DIR}/$1.log"
    if [[ -f ${f} ]]; then
        echo "----- last 40 lines of ${f} -----" >&2
        tail -n 40 "${f}" >&2
    fi
    cluster_die "$2 (log: ${f})"
}

# ----------------------------------------------------------------- main ---
start_node() {
    local node_start=${SECONDS} rc
    rm -rf "${DIR}/node"
    mkdir -p "${DIR}/node"
    node_record_host
    node_make_cgroups
    node_make_bridge
    node_write_firewall_stub
    node_start_registry
    node_start_containerd
    node_import_images
    node_release
    node_start_controllers
    node_start_kubelet

    rc=0
    wait_until kubelet "${READY_TIMEOUT}" node_ready || rc=$?
    ((rc == 0)) || node_fail kubelet "node ${NODE_NAME} did not become Ready"
    rc=0
    wait_until kube-controller-manager "${READY_TIMEOUT}" default_service_account || rc=$?
    ((rc == 0)) || node_fail kube-controller-manager "no default ServiceAccount / kube-root-ca.crt from kube-controller-manager"
    daemon_alive kube-scheduler || node_fail kube-scheduler "kube-scheduler exited"
    daemon_alive containerd || node_fail containerd "containerd exited"

    echo "${NODE_NAME}" >"${DIR}/node-name"
    echo "${NODE_HOST_IP}" >"${DIR}/host-ip"
    cat >>"${DIR}/cluster.env" <<EOF_ENV
FISKIL_CLUSTER_NODE_NAME=${NODE_NAME}
FISKIL_CLUSTER_REGISTRY=${NODE_REGISTRY}
FISKIL_CLUSTER_HOST_IP=${NODE_HOST_IP}
FISKIL_CLUSTER_POD_SUBNET=${NODE_POD_SUBNET}
FISKIL_CLUSTER_KUBELET_PORT=${KUBELET_PORT}
FISKIL_CLUSTER_SYNC_FREQUENCY=${NODE_SYNC_FREQUENCY}
FISKIL_CLUSTER_CONTAINERD_SOCKET=${DIR}/node/containerd/containerd.sock
EOF_ENV
    cluster_log "node ${NODE_NAME} Ready in $((SECONDS - node_start))s; pods reach the host at ${NODE_HOST_IP} (bridge ${NODE_BRIDGE}, pod subnet ${NODE_POD_SUBNET})"
}
