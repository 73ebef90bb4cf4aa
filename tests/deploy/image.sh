#!/usr/bin/env bash
# The release image without a container engine: `cargo xtask image` twice from the static
# binary (tests/deploy/static-binary.sh), the same manifest digest and the same bytes both
# times, and the layout checked against the Dockerfile by check_image.py (which reads the
# Dockerfile with tests/cluster/oci_image.py's parser, not the Rust one), with negative controls.
#
#   tests/deploy/static-binary.sh && tests/deploy/image.sh
#
# Prints "SKIP:" and exits 0 when there is no static binary.
set -euo pipefail
# shellcheck source=tests/deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "${REPO_ROOT}"

static_binary_or_skip
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

commit="$(git rev-parse HEAD)"
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct HEAD)}"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"

start=${SECONDS}
first="$(cargo xtask image --out "${work}/a" --binary "${binary}")"
deploy_log "cargo xtask image took $((SECONDS - start))s: ${first}"
second="$(cargo xtask image --out "${work}/b" --binary "${binary}")"
check "two builds of commit ${commit:0:12} give the same manifest digest (${first})" test "${first}" = "${second}"
check "two builds give identical layouts, byte for byte" diff -r "${work}/a" "${work}/b"
check "index.json names the image by the printed digest" grep -qF "\"digest\":\"${first}\"" "${work}/a/index.json"

check_args=(--dockerfile Dockerfile --binary "${binary}" --commit "${commit}" --epoch "${epoch}" --version "${version}")
check "the layout matches the Dockerfile (files, owners, modes, user, entrypoint, port, labels, SBOM)" \
    python3 tests/deploy/check_image.py "${work}/a" "${check_args[@]}"
python3 tests/deploy/check_image.py "${work}/a" "${check_args[@]}" || true

# Negative controls: the checker catches a changed blob, a different binary and another commit.
tampered() {
    cp -a "${work}/a" "${work}/t"
    local manifest
    manifest="$(python3 -c 'import json,sys; m=[x for x in json.load(open(sys.argv[1]+"/index.json"))["manifests"] if "artifactType" not in x][0]; print(m["digest"][7:])' "${work}/t")"
    # Any byte changed in the image manifest: its digest no longer matches.
    printf ' ' >>"${work}/t/blobs/sha256/${manifest}"
    ! python3 tests/deploy/check_image.py "${work}/t" "${check_args[@]}"
}
check "negative control: a modified manifest blob is refused" tampered
other_commit() {
    ! python3 tests/deploy/check_image.py "${work}/a" --dockerfile Dockerfile --binary "${binary}" \
        --commit 0000000000000000000000000000000000000000 --epoch "${epoch}" --version "${version}"
}
check "negative control: another commit's revision label is refused" other_commit
other_binary() {
    printf 'not the binary' >"${work}/other"
    ! python3 tests/deploy/check_image.py "${work}/a" --dockerfile Dockerfile --binary "${work}/other" \
        --commit "${commit}" --epoch "${epoch}" --version "${version}"
}
check "negative control: a different binary is refused" other_binary
stale_binary() {
    ! cargo xtask image --out "${work}/d" --binary target/debug/fiskil-token-refresher
}
check "cargo xtask image refuses a debug build" stale_binary

size="$(du -sb "${work}/a/blobs" | cut -f1)"
deploy_log "image layout: $((size / 1024)) KiB of blobs"
check_summary
