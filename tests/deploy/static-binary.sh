#!/usr/bin/env bash
# Build the static musl binary exactly as the Dockerfile's builder stage does,
# from a copy of exactly the build context that .dockerignore lets through, and
# check it is what the image needs: statically linked, no OpenSSL, small, and
# runnable as UID 65532 in an empty root (as in distroless/static or scratch).
#
#   tests/deploy/static-binary.sh
#
# Exits 0 with a line starting "SKIP:" when this machine cannot build for
# x86_64-unknown-linux-musl (no rustup target, no musl-gcc), and says why.
# FISKIL_STATIC_TARGET_DIR: cargo target directory (default target/static-musl),
# kept between runs so that a rebuild only compiles what changed.
set -euo pipefail
# shellcheck source=tests/deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TARGET=x86_64-unknown-linux-musl
# The builder stage's command, word for word; checked against the Dockerfile.
CARGO_CMD=(cargo auditable build --release --locked --target "${TARGET}" -p fiskil-token-refresher)
# The size the project holds itself to with every feature in (README, Benchmarks): a sidecar's
# image is pulled onto every node that runs one.
MAX_BYTES=$((6 * 1000 * 1000))

skip() {
    printf 'SKIP: static musl binary not built: %s\n' "$*"
    exit 0
}

# ------------------------------------------------------------ toolchain ---
command -v cargo >/dev/null 2>&1 || skip "cargo is not installed"
if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed 2>/dev/null | grep -qx "${TARGET}"; then
        deploy_log "adding the Rust target ${TARGET} (rustup target add)"
        if ! timeout 300 rustup target add "${TARGET}" >&2; then
            skip "'rustup target add ${TARGET}' failed here (the Rust standard library for musl could not be downloaded)"
        fi
    fi
else
    rustc --print target-list 2>/dev/null | grep -qx "${TARGET}" ||
        skip "no rustup, and rustc does not know ${TARGET}"
fi
if ! command -v musl-gcc >/dev/null 2>&1; then
    if [[ ${EUID} -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        deploy_log "installing Debian's musl-tools (musl-gcc, for ring's C code)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools; } >&2 ||
            skip "musl-gcc is missing and 'apt-get install musl-tools' failed"
    else
        skip "musl-gcc is missing (install Debian's musl-tools)"
    fi
fi

# cargo-auditable (crates.io, pinned in lib.sh) embeds the dependency list.
auditable_bin="$("${DEPLOY_TESTS_DIR}/cargo-tool.sh" cargo-auditable)" ||
    deploy_die "cannot install cargo-auditable"
export PATH="${auditable_bin%/*}:${PATH}"

# ------------------------------------------------------- build context ---
# Copy what .dockerignore lets through. It is an allowlist: "*" then "!path".
context_dir="$(mktemp -d)"
root_dir=""
trap 'rm -rf "${context_dir}" ${root_dir:+"${root_dir}"}' EXIT
included=()
while IFS= read -r line || [[ -n ${line} ]]; do
    line="${line%%#*}"
    line="${line//[[:space:]]/}"
    [[ -z ${line} || ${line} == "*" ]] && continue
    [[ ${line} == !* ]] || deploy_die ".dockerignore: only '*' and '!path' lines are supported here, found '${line}'"
    included+=("${line#!}")
done <"${REPO_ROOT}/.dockerignore"
((${#included[@]} > 0)) || deploy_die ".dockerignore lets nothing through"
for path in "${included[@]}"; do
    path="${path%/}"
    [[ -e ${REPO_ROOT}/${path} ]] || deploy_die ".dockerignore names ${path}, which does not exist"
    mkdir -p "${context_dir}/$(dirname "${path}")"
    cp -a "${REPO_ROOT}/${path}" "${context_dir}/${path}"
done
# Never copy build output that sits inside an included directory.
find "${context_dir}" -name target -type d -prune -exec rm -rf {} +

dockerfile_has_cmd() {
    grep -qF -- "${CARGO_CMD[*]}" "${REPO_ROOT}/Dockerfile"
}
check "Dockerfile builds with: ${CARGO_CMD[*]}" dockerfile_has_cmd
dockerfile_pins_auditable() {
    grep -qx "ARG CARGO_AUDITABLE_VERSION=${CARGO_AUDITABLE_VERSION}" "${REPO_ROOT}/Dockerfile" &&
        grep -qx "ARG FISKIL_GIT_COMMIT=unknown" "${REPO_ROOT}/Dockerfile"
}
check "Dockerfile installs cargo-auditable ${CARGO_AUDITABLE_VERSION} and takes FISKIL_GIT_COMMIT" dockerfile_pins_auditable

# The context has no .git, as in a Docker build: pass the commit as the Dockerfile's build
# argument does.
git_commit="$(git -C "${REPO_ROOT}" rev-parse HEAD 2>/dev/null || echo unknown)"

# ---------------------------------------------------------------- build ---
target_dir="${FISKIL_STATIC_TARGET_DIR:-${REPO_ROOT}/target/static-musl}"
mkdir -p "${target_dir}"
deploy_log "building in a copy of the Docker build context: ${CARGO_CMD[*]}"
start=${SECONDS}
build_ok=1
(cd "${context_dir}" && FISKIL_GIT_COMMIT="${git_commit}" CARGO_TARGET_DIR="${target_dir}" nice -n "${FISKIL_BUILD_NICE:-10}" "${CARGO_CMD[@]}") >&2 || build_ok=0
deploy_log "cargo build took $((SECONDS - start))s"
binary="${target_dir}/${TARGET}/release/fiskil-token-refresher"
check "cargo build for ${TARGET} from the .dockerignore context" test "${build_ok}" -eq 1 -a -x "${binary}"
if ((build_ok == 0)); then
    check_summary || true
    exit 1
fi

# --------------------------------------------------------------- checks ---
# No PT_INTERP program header: nothing to load at run time (static or static-pie).
elf_static() {
    python3 - "${binary}" <<'PY'
import struct, sys
with open(sys.argv[1], "rb") as f:
    data = f.read()
assert data[:4] == b"\x7fELF" and data[4] == 2, "not a 64-bit ELF file"
phoff, = struct.unpack_from("<Q", data, 0x20)
phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
types = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
PT_INTERP = 3
sys.exit(1 if PT_INTERP in types else 0)
PY
}
check "binary is statically linked (no ELF interpreter)" elf_static

size=$(stat -c %s "${binary}")
check "binary is ${size} bytes (at most ${MAX_BYTES}; distroless/static adds about 2 MB)" test "${size}" -le "${MAX_BYTES}"

# cargo-auditable's section: the dependency list as zlib-compressed JSON.
has_dependency_list() {
    python3 - "${binary}" <<'PY'
import json, struct, sys, zlib
with open(sys.argv[1], "rb") as f:
    data = f.read()
shoff, = struct.unpack_from("<Q", data, 0x28)
shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
def section(i):
    name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
    return name, offset, size
_, str_off, _ = section(shstrndx)
for i in range(shnum):
    name, offset, size = section(i)
    if data[str_off + name:data.index(b"\0", str_off + name)] == b".dep-v0":
        deps = json.loads(zlib.decompress(data[offset:offset + size]))
        names = {p["name"] for p in deps["packages"]}
        assert {"fiskil-token-refresher", "rustls", "ring", "kube-client"} <= names, names
        print(len(deps["packages"]), "packages in .dep-v0")
        sys.exit(0)
sys.exit(".dep-v0 section not found")
PY
}
check "binary carries its dependency list (cargo auditable, .dep-v0)" has_dependency_list

version_names_commit() {
    local out
    out="$("${binary}" --version)" || return 1
    grep -qx "fiskil-token-refresher [0-9.]* (commit ${git_commit}, release build)" <<<"${out}"
}
check "--version names commit ${git_commit} and the release profile" version_names_commit

no_openssl() {
    local tree
    tree="$(cd "${context_dir}" && cargo tree --locked --offline -e normal,build \
        -p fiskil-token-refresher --target "${TARGET}" --prefix none 2>/dev/null)" || return 1
    grep -q '^ring ' <<<"${tree}" || return 1
    ! grep -qE '^(openssl|openssl-sys|native-tls|aws-lc-sys|aws-lc-rs) ' <<<"${tree}"
}
check "dependency tree has ring and no OpenSSL/native-tls/aws-lc" no_openssl

if [[ ${EUID} -eq 0 ]] && command -v chroot >/dev/null 2>&1; then
    # An empty root with only the binary: no libc, no shell, no CA store.
    root_dir="$(mktemp -d)"
    chmod 0755 "${root_dir}"
    install -m 0755 "${binary}" "${root_dir}/fiskil-token-refresher"
    run_in_empty_root() {
        local out
        out="$(chroot --userspec=65532:65532 "${root_dir}" /fiskil-token-refresher --version 2>&1)" || return 1
        grep -q '^fiskil-token-refresher ' <<<"${out}"
    }
    check "runs as 65532:65532 in an empty root (--version)" run_in_empty_root
    config_error_exits_2() {
        local rc=0
        chroot --userspec=65532:65532 "${root_dir}" /fiskil-token-refresher \
            --token-file /token --refresh-ratio 1.5 >/dev/null 2>&1 || rc=$?
        [[ ${rc} -eq 2 ]]
    }
    check "a configuration error exits 2 in an empty root" config_error_exits_2
else
    printf 'note: not root (or no chroot): the empty-root run checks were not made\n'
fi

check_summary
