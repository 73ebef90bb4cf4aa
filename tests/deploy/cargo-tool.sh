#!/usr/bin/env bash
# Print the path of a cargo subcommand from crates.io, installing it once with
# `cargo install --locked` (its own lock file) into the tools cache.
#
#   tests/deploy/cargo-tool.sh cargo-deny        # prints e.g. ~/.cache/fiskil-token-refresher/tools/cargo-deny-0.20.2/bin/cargo-deny
#   "$(tests/deploy/cargo-tool.sh cargo-deny)" deny check
#
# Known tools and their pinned versions (lib.sh): cargo-deny, cargo-auditable.
# FISKIL_CARGO_DENY_VERSION / FISKIL_CARGO_AUDITABLE_VERSION pick others;
# FISKIL_TOOLS_CACHE another cache.
set -euo pipefail
# shellcheck source=tests/deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

name="${1:?usage: cargo-tool.sh cargo-deny|cargo-auditable}"
case "${name}" in
cargo-deny) version="${CARGO_DENY_VERSION}" ;;
cargo-auditable) version="${CARGO_AUDITABLE_VERSION}" ;;
*) deploy_die "unknown tool ${name}" ;;
esac
root="${TOOLS_CACHE}/${name}-${version}"
bin="${root}/bin/${name}"

install_tool() {
    [[ -x ${bin} ]] && return 0
    command -v cargo >/dev/null 2>&1 || deploy_die "cargo is required to install ${name}"
    local start=${SECONDS} build="${TOOLS_CACHE}/build/${name}-${version}"
    deploy_log "installing ${name} ${version} from crates.io (cargo install --locked)"
    rm -rf "${root}.tmp"
    # A target directory of its own, outside the repository, so the project's
    # own build cache and flags play no part. These tools run for seconds on a
    # few hundred crates: a quick optimised build without LTO (their release
    # profiles ask for fat LTO and one codegen unit) is ample and takes a
    # fraction of the time.
    CARGO_TARGET_DIR="${build}" CARGO_PROFILE_RELEASE_LTO=false \
        CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
        CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_INCREMENTAL=false \
        nice -n "${FISKIL_BUILD_NICE:-19}" cargo install --locked --quiet --root "${root}.tmp" "${name}@${version}" >&2
    rm -rf "${root}" "${build}"
    mv "${root}.tmp" "${root}"
    rm -f "${root}/.crates.toml" "${root}/.crates2.json"
    deploy_log "${name} ${version} installed in $((SECONDS - start))s"
}

with_tool_lock "${name}" install_tool
printf '%s\n' "${bin}"
