#!/usr/bin/env bash
# Start a throwaway control plane (etcd + kube-apiserver) on 127.0.0.1.
#
#   tests/cluster/up.sh DIR
#
# Leaves in DIR:
#   kubeconfig                admin kubeconfig (client cert, O=system:masters)
#   cluster.env               shell-sourceable: server URL, CA/cert/key paths, ports
#   pki/                      CA, serving cert, admin cert, service-account key pair
#   etcd.pid, etcd.log        etcd process
#   kube-apiserver.pid, kube-apiserver.log
#   etcd-data/
# With FISKIL_CLUSTER_NODE=1 it also starts a node (see node.sh and README.md):
#   node-name, host-ip        the node's name; the host's address on the pod network
#   containerd, kubelet, kube-scheduler, kube-controller-manager: .pid and .log
#   node/                     containerd's and the kubelet's state
# Every run starts a fresh cluster (state from an earlier run in DIR is wiped).
# Stop it with tests/cluster/down.sh DIR.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "${here}/common.sh"

[[ $# -eq 1 && -n $1 ]] || cluster_die "usage: $0 DIR"
mkdir -p "$1"
DIR="$(cd "$1" && pwd)"

READY_TIMEOUT="${FISKIL_CLUSTER_READY_TIMEOUT:-180}"
SERVICE_CIDR="${FISKIL_CLUSTER_SERVICE_CIDR:-10.96.0.0/16}"
SA_ISSUER="https://kubernetes.default.svc.cluster.local"

for name in etcd kube-apiserver kubelet containerd; do
    if [[ -f "${DIR}/${name}.pid" ]] && kill -0 "$(cat "${DIR}/${name}.pid")" 2>/dev/null; then
        cluster_die "${name} is already running from ${DIR} (pid $(cat "${DIR}/${name}.pid")); run down.sh ${DIR} first"
    fi
done

ensure_cmds openssl:openssl curl:curl setsid:util-linux base64:coreutils

NODE=0
[[ ${FISKIL_CLUSTER_NODE:-} == 1 ]] && NODE=1
if ((NODE)); then
    # shellcheck source-path=SCRIPTDIR source=node.sh
    source "${here}/node.sh"
    node_prerequisites
fi

FISKIL_CLUSTER_NODE="${NODE}" "${here}/build.sh" >&2
[[ -x ${ETCD_BIN} && -x ${KUBE_APISERVER_BIN} ]] || cluster_die "build.sh did not produce the binaries"

# ---------------------------------------------------------------- cleanup ---
started=0
on_exit() {
    local rc=$?
    if ((rc != 0 && started)); then
        cluster_log "start-up failed; stopping what was started"
        "${here}/down.sh" "${DIR}" || true
    fi
}
trap on_exit EXIT

tail_logs() {
    local f
    for f in "${DIR}/etcd.log" "${DIR}/kube-apiserver.log"; do
        [[ -f ${f} ]] || continue
        echo "----- last 40 lines of ${f} -----" >&2
        tail -n 40 "${f}" >&2
    done
}

# ------------------------------------------------------------------ ports ---
PICKED_PORTS=()
port_in_use() {
    # A listener answers the connect; a free loopback port refuses at once.
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
# pick_port VAR: a currently free port below the ephemeral range, stored in VAR.
pick_port() {
    local -n out="$1"
    local port i
    for ((i = 0; i < 500; i++)); do
        port=$((20000 + RANDOM % 12000))
        [[ " ${PICKED_PORTS[*]} " == *" ${port} "* ]] && continue
        port_in_use "${port}" && continue
        PICKED_PORTS+=("${port}")
        out="${port}"
        return 0
    done
    cluster_die "could not find a free port on 127.0.0.1"
}

# ------------------------------------------------------------------- PKI ---
make_pki() {
    local pki="${DIR}/pki"
    rm -rf "${pki}"
    mkdir -p "${pki}"
    chmod 700 "${pki}"
    (
        cd "${pki}"
        openssl req -x509 -new -nodes -newkey rsa:2048 -sha256 -days 30 \
            -keyout ca.key -out ca.crt -subj "/CN=fiskil-test-ca" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null

        cat >apiserver.ext <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EXT
        openssl req -new -nodes -newkey rsa:2048 -keyout apiserver.key \
            -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
        openssl x509 -req -sha256 -days 30 -in apiserver.csr -CA ca.crt -CAkey ca.key \
            -CAcreateserial -out apiserver.crt -extfile apiserver.ext 2>/dev/null

        cat >admin.ext <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EXT
        openssl req -new -nodes -newkey rsa:2048 -keyout admin.key \
            -out admin.csr -subj "/O=system:masters/CN=fiskil-admin" 2>/dev/null
        openssl x509 -req -sha256 -days 30 -in admin.csr -CA ca.crt -CAkey ca.key \
            -CAcreateserial -out admin.crt -extfile admin.ext 2>/dev/null

        # Service-account token signing key pair (TokenRequest API).
        openssl genrsa -out sa.key 2048 2>/dev/null
        openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
        rm -f ./*.csr ./*.ext ca.srl
        chmod 600 ./*.key
    )
}

write_kubeconfig() {
    local server="$1" pki="${DIR}/pki"
    umask 077
    cat >"${DIR}/kubeconfig" <<EOF_KC
apiVersion: v1
kind: Config
clusters:
- name: fiskil-test
  cluster:
    server: ${server}
    certificate-authority-data: $(base64 -w0 <"${pki}/ca.crt")
users:
- name: fiskil-admin
  user:
    client-certificate-data: $(base64 -w0 <"${pki}/admin.crt")
    client-key-data: $(base64 -w0 <"${pki}/admin.key")
contexts:
- name: fiskil-test
  context:
    cluster: fiskil-test
    user: fiskil-admin
current-context: fiskil-test
EOF_KC
    umask 022
}

# --------------------------------------------------------------- process ---
# start_daemon NAME BINARY ARGS...: run detached (own session), stdin closed,
# output to DIR/NAME.log, pid in DIR/NAME.pid.
start_daemon() {
    local name="$1"
    shift
    rm -f "${DIR}/${name}.pid"
    # The inner shell writes its own pid and execs the binary, so the pid file
    # names the daemon itself whether or not setsid had to fork.
    # shellcheck disable=SC2016 # expanded by the inner shell
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "${DIR}/${name}.pid" "$@" \
        </dev/null >>"${DIR}/${name}.log" 2>&1 &
    started=1
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -s "${DIR}/${name}.pid" ]] && return 0
        sleep 0.1
    done
    cluster_die "${name} did not start"
}

daemon_alive() {
    local pid
    pid="$(cat "${DIR}/$1.pid" 2>/dev/null)" || return 1
    kill -0 "${pid}" 2>/dev/null
}

# wait_until NAME DEADLINE_SECONDS CHECK_CMD...: poll CHECK_CMD; returns 0 when
# it succeeds, 2 when NAME died, 1 on timeout.
wait_until() {
    local name="$1" deadline=$((SECONDS + $2))
    shift 2
    while ((SECONDS < deadline)); do
        "$@" && return 0
        daemon_alive "${name}" || return 2
        sleep 0.5
    done
    return 1
}

etcd_healthy() {
    curl -fsS --max-time 2 "http://127.0.0.1:${ETCD_CLIENT_PORT}/health" 2>/dev/null |
        grep -q '"health":"true"'
}

apiserver_ready() {
    local pki="${DIR}/pki" out
    out="$(curl -sS --max-time 5 --cacert "${pki}/ca.crt" --cert "${pki}/admin.crt" \
        --key "${pki}/admin.key" "https://127.0.0.1:${APISERVER_PORT}/readyz" 2>/dev/null)" || return 1
    [[ ${out} == ok ]] || return 1
    # The bootstrap controller creates the "default" namespace right after.
    curl -fsS --max-time 5 -o /dev/null --cacert "${pki}/ca.crt" --cert "${pki}/admin.crt" \
        --key "${pki}/admin.key" "https://127.0.0.1:${APISERVER_PORT}/api/v1/namespaces/default" 2>/dev/null
}

address_in_use() {
    grep -qi 'address already in use' "${DIR}/$1.log" 2>/dev/null
}

start_etcd() {
    rm -rf "${DIR}/etcd-data"
    start_daemon etcd "${ETCD_BIN}" \
        --name fiskil-test \
        --data-dir "${DIR}/etcd-data" \
        --listen-client-urls "http://127.0.0.1:${ETCD_CLIENT_PORT}" \
        --advertise-client-urls "http://127.0.0.1:${ETCD_CLIENT_PORT}" \
        --listen-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
        --initial-cluster "fiskil-test=http://127.0.0.1:${ETCD_PEER_PORT}" \
        --initial-cluster-state new \
        --unsafe-no-fsync \
        --quota-backend-bytes 536870912 \
        --log-level warn
}

start_apiserver() {
    local pki="${DIR}/pki"
    start_daemon kube-apiserver "${KUBE_APISERVER_BIN}" \
        --etcd-servers "http://127.0.0.1:${ETCD_CLIENT_PORT}" \
        --bind-address 127.0.0.1 \
        --advertise-address 127.0.0.1 \
        --secure-port "${APISERVER_PORT}" \
        --cert-dir "${pki}" \
        --tls-cert-file "${pki}/apiserver.crt" \
        --tls-private-key-file "${pki}/apiserver.key" \
        --client-ca-file "${pki}/ca.crt" \
        --authorization-mode RBAC \
        --service-account-issuer "${SA_ISSUER}" \
        --service-account-key-file "${pki}/sa.pub" \
        --service-account-signing-key-file "${pki}/sa.key" \
        --api-audiences "${SA_ISSUER}" \
        --service-cluster-ip-range "${SERVICE_CIDR}" \
        --endpoint-reconciler-type none \
        --allow-privileged=false \
        --kubelet-client-certificate "${pki}/admin.crt" \
        --kubelet-client-key "${pki}/admin.key" \
        --profiling=false \
        --v 1
}

# ------------------------------------------------------------------- main ---
"${here}/down.sh" "${DIR}" >/dev/null 2>&1 || true
rm -f "${DIR}/etcd.log" "${DIR}/kube-apiserver.log" "${DIR}/kubeconfig" "${DIR}/cluster.env" \
    "${DIR}/containerd.log" "${DIR}/kubelet.log" "${DIR}/kube-scheduler.log" "${DIR}/kube-controller-manager.log"
make_pki

start_time=${SECONDS}
ok=0
for attempt in 1 2 3; do
    PICKED_PORTS=()
    pick_port ETCD_CLIENT_PORT
    pick_port ETCD_PEER_PORT
    pick_port APISERVER_PORT
    cluster_log "attempt ${attempt}: etcd on 127.0.0.1:${ETCD_CLIENT_PORT} (peer ${ETCD_PEER_PORT}), kube-apiserver on 127.0.0.1:${APISERVER_PORT}"

    start_etcd
    rc=0
    wait_until etcd 60 etcd_healthy || rc=$?
    if ((rc != 0)); then
        if ((rc == 2)) && address_in_use etcd && ((attempt < 3)); then
            cluster_log "etcd port was taken meanwhile; retrying with other ports"
            "${here}/down.sh" "${DIR}" >/dev/null 2>&1 || true
            continue
        fi
        tail_logs
        ((rc == 2)) && cluster_die "etcd exited during start-up (log: ${DIR}/etcd.log)"
        cluster_die "etcd not healthy after 60s (log: ${DIR}/etcd.log)"
    fi

    start_apiserver
    rc=0
    wait_until kube-apiserver "${READY_TIMEOUT}" apiserver_ready || rc=$?
    if ((rc != 0)); then
        if ((rc == 2)) && address_in_use kube-apiserver && ((attempt < 3)); then
            cluster_log "kube-apiserver port was taken meanwhile; retrying with other ports"
            "${here}/down.sh" "${DIR}" >/dev/null 2>&1 || true
            continue
        fi
        tail_logs
        ((rc == 2)) && cluster_die "kube-apiserver exited during start-up (log: ${DIR}/kube-apiserver.log)"
        cluster_die "timed out after ${READY_TIMEOUT}s waiting for https://127.0.0.1:${APISERVER_PORT}/readyz (log: ${DIR}/kube-apiserver.log; raise FISKIL_CLUSTER_READY_TIMEOUT if the machine is just slow)"
    fi
    ok=1
    break
done
((ok)) || cluster_die "could not start the control plane"

server="https://127.0.0.1:${APISERVER_PORT}"
write_kubeconfig "${server}"
cat >"${DIR}/cluster.env" <<EOF_ENV
# Written by tests/cluster/up.sh; source it from a shell.
FISKIL_CLUSTER_SERVER=${server}
FISKIL_CLUSTER_CA=${DIR}/pki/ca.crt
FISKIL_CLUSTER_ADMIN_CERT=${DIR}/pki/admin.crt
FISKIL_CLUSTER_ADMIN_KEY=${DIR}/pki/admin.key
FISKIL_CLUSTER_KUBECONFIG=${DIR}/kubeconfig
FISKIL_CLUSTER_SA_ISSUER=${SA_ISSUER}
FISKIL_CLUSTER_APISERVER_PORT=${APISERVER_PORT}
FISKIL_CLUSTER_ETCD_PORT=${ETCD_CLIENT_PORT}
FISKIL_CLUSTER_KUBE_VERSION=${KUBE_VERSION}
FISKIL_CLUSTER_ETCD_VERSION=${ETCD_VERSION}
EOF_ENV

((NODE)) && start_node

started=0
cluster_log "control plane ready at ${server} in $((SECONDS - start_time))s; kubeconfig: ${DIR}/kubeconfig"
echo "${DIR}/kubeconfig"
