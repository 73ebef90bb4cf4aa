#!/usr/bin/env bash
# A release into a real OCI registry on 127.0.0.1 (crane registry serve), made by the one
# command a maintainer runs, `cargo xtask release`, then checked as a user would before
# installing: cosign verify of the image and of the chart, cosign verify-attestation of the
# CycloneDX SBOM and of the SLSA provenance, helm pull of the chart by version. Negative controls:
# the signed tag moved to a modified image, a key that did not sign, a signature made with
# another key, an attestation type that was not made.
#
#   tests/deploy/static-binary.sh && tests/deploy/release.sh
#
# Offline: key-pair signatures with no transparency log (a test key made here); see the README's
# "Releases" for what a real release adds (keyless signing, Rekor). Prints "SKIP:" and exits 0
# when there is no static binary.
set -euo pipefail
# shellcheck source=tests/deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "${REPO_ROOT}"

static_binary_or_skip

start=${SECONDS}
CRANE="$("${DEPLOY_TESTS_DIR}/go-tool.sh" crane)"
COSIGN="$("${DEPLOY_TESTS_DIR}/go-tool.sh" cosign)"
HELM="$("${DEPLOY_TESTS_DIR}/helm.sh")"
export CRANE COSIGN HELM
deploy_log "tools ready in $((SECONDS - start))s: crane, cosign, helm"

work="$(mktemp -d)"
registry_pid=""
cleanup() {
    [[ -z ${registry_pid} ]] || kill "${registry_pid}" 2>/dev/null || true
    rm -rf "${work}"
}
trap cleanup EXIT
# Nothing of the user's: no docker credentials, no Sigstore TUF cache, no helm registry logins.
export DOCKER_CONFIG="${work}/docker" TUF_ROOT="${work}/tuf" SIGSTORE_NO_CACHE=true
export HELM_CACHE_HOME="${work}/helm/cache" HELM_CONFIG_HOME="${work}/helm/config"
export HELM_DATA_HOME="${work}/helm/data" HELM_REGISTRY_CONFIG="${work}/helm/registry.json"
mkdir -p "${DOCKER_CONFIG}"

# ------------------------------------------------------------ the registry ---
"${CRANE}" registry serve --address 127.0.0.1:0 >"${work}/registry.log" 2>&1 &
registry_pid=$!
port=""
for _ in $(seq 100); do
    port="$(sed -n 's/.*serving on port \([0-9][0-9]*\).*/\1/p' "${work}/registry.log" | head -n 1)"
    [[ -n ${port} ]] && break
    kill -0 "${registry_pid}" 2>/dev/null || break
    sleep 0.1
done
[[ -n ${port} ]] || { cat "${work}/registry.log" >&2; deploy_die "crane registry serve did not start"; }
registry="127.0.0.1:${port}"
deploy_log "registry on ${registry} (pid ${registry_pid})"

# ------------------------------------------------------------ keys ---
export COSIGN_PASSWORD=""
(cd "${work}" && "${COSIGN}" generate-key-pair --output-key-prefix release >/dev/null 2>&1)
(cd "${work}" && "${COSIGN}" generate-key-pair --output-key-prefix other >/dev/null 2>&1)
[[ -s ${work}/release.key && -s ${work}/release.pub && -s ${work}/other.pub ]] ||
    deploy_die "cosign generate-key-pair made no key"

# ------------------------------------------------------------ the release ---
release_start=${SECONDS}
if ! cargo xtask release --registry "${registry}" --key "${work}/release.key" \
    --binary "${binary}" --out "${work}/out" >"${work}/released" 2>"${work}/release.log"; then
    tail -n 40 "${work}/release.log" >&2
    deploy_die "cargo xtask release failed"
fi
deploy_log "cargo xtask release took $((SECONDS - release_start))s"
image="$(awk '$1 == "image" { print $2 }' "${work}/released")"
chart="$(awk '$1 == "chart" { print $2 }' "${work}/released")"
sbom_referrer="$(awk '$1 == "sbom-referrer" { print $2 }' "${work}/released")"
[[ ${image} == "${registry}/"*@sha256:* && ${chart} == "${registry}/charts/"*@sha256:* ]] ||
    deploy_die "cargo xtask release printed no image and chart references: $(cat "${work}/released")"
digest="${image#*@}"
chart_digest="${chart#*@}"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
chart_version="$(sed -n 's/^version: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "${CHART_DIR}/Chart.yaml")"
# The commit the binary says it was built from: the provenance must name it.
commit="$("${binary}" --version | sed -n 's/.*(commit \([0-9a-f]*\), .*/\1/p')"
deploy_log "image ${image}"
deploy_log "chart ${chart}"

# fails_with MESSAGE CMD...: CMD fails, and says MESSAGE (not some other error).
fails_with() {
    local message="$1"
    shift
    if "$@" >"${work}/fails.log" 2>&1; then
        echo "succeeded: $*"
        return 1
    fi
    grep -F -- "${message}" "${work}/fails.log" || { tail -n 5 "${work}/fails.log"; return 1; }
}
verify() { "${COSIGN}" verify --key "$1" --insecure-ignore-tlog=true --allow-http-registry=true "${@:2}"; }
verify_attestation() {
    "${COSIGN}" verify-attestation --key "$1" --insecure-ignore-tlog=true --allow-http-registry=true "${@:2}"
}

# ------------------------------------------------------------ what the registry holds ---
check "the tag ${version} names the digest cargo xtask image printed" \
    test "$("${CRANE}" digest "${registry}/fiskil-token-refresher:${version}")" = "${digest}"
same_manifest() {
    "${CRANE}" manifest "${image}" >"${work}/manifest.json"
    cmp "${work}/manifest.json" "${work}/out/image/blobs/sha256/${digest#sha256:}"
}
check "the registry serves the layout's manifest, byte for byte" same_manifest
# crane registry serve has no referrers API; crane push keeps the OCI 1.1 fallback: an index
# tagged sha256-<image digest> that lists the referrers.
referrer_listed() {
    "${CRANE}" manifest "${registry}/fiskil-token-refresher:sha256-${digest#sha256:}" >"${work}/referrers.json"
    python3 - "${work}/referrers.json" "${sbom_referrer#*@}" <<'PY'
import json, sys
index = json.load(open(sys.argv[1]))
assert any(m["digest"] == sys.argv[2] and m.get("artifactType") == "application/vnd.cyclonedx+json"
           for m in index["manifests"]), index
PY
}
check "the SBOM is an OCI referrer of the image digest (referrers tag sha256-...)" referrer_listed
pull_chart() {
    (cd "${work}" && "${HELM}" pull "oci://${registry}/charts/fiskil-token-refresher" \
        --version "${chart_version}" --plain-http) >"${work}/pull.log" 2>&1
    grep -qF "Digest: ${chart_digest}" "${work}/pull.log" &&
        cmp "${work}/fiskil-token-refresher-${chart_version}.tgz" \
            "${work}/out/fiskil-token-refresher-${chart_version}.tgz"
}
check "helm pull oci://${registry}/charts/fiskil-token-refresher --version ${chart_version}: the signed digest, the packaged bytes" \
    pull_chart

# ------------------------------------------------------------ verified as a user would ---
verified_image() {
    verify "${work}/release.pub" "${image}" >"${work}/verify.json"
    grep -qF "\"docker-manifest-digest\":\"${digest}\"" "${work}/verify.json"
}
check "cosign verify --key release.pub the image digest" verified_image
check "cosign verify --key release.pub the chart digest" verify "${work}/release.pub" "${chart}"
check "cosign verify --key release.pub the tag, before it moves" \
    verify "${work}/release.pub" "${registry}/fiskil-token-refresher:${version}"

# predicate_of TYPE PREDICATE_TYPE FILE: subject and predicate of the verified attestation of
# that predicate type, as JSON.
predicate_of() {
    verify_attestation "${work}/release.pub" --type "$1" "${image}" >"${work}/att.$1" 2>"${work}/att.$1.log" &&
        python3 - "${work}/att.$1" "$2" >"$3" <<'PY'
import base64, json, sys
for line in open(sys.argv[1]):
    statement = json.loads(base64.b64decode(json.loads(line)["payload"]))
    if statement["predicateType"] == sys.argv[2]:
        print(json.dumps({"subject": statement["subject"], "predicate": statement["predicate"]}))
        break
else:
    sys.exit(f"no verified attestation of type {sys.argv[2]}")
PY
}
sbom_attested() {
    predicate_of cyclonedx https://cyclonedx.org/bom "${work}/sbom-att.json" &&
        python3 - "${work}/sbom-att.json" "${work}/out/sbom.cdx.json" "${digest}" <<'PY'
import json, sys
att = json.load(open(sys.argv[1])); sbom = json.load(open(sys.argv[2]))
assert att["predicate"] == sbom, "the attested SBOM is not the image's SBOM"
assert [s["digest"]["sha256"] for s in att["subject"]] == [sys.argv[3][7:]], att["subject"]
print(len(sbom["components"]), "components")
PY
}
check "cosign verify-attestation --type cyclonedx: the image's SBOM, about this digest" sbom_attested
provenance_attested() {
    predicate_of slsaprovenance1 https://slsa.dev/provenance/v1 "${work}/prov-att.json" &&
        python3 - "${work}/prov-att.json" "${commit}" "${digest}" "${binary}" <<'PY'
import hashlib, json, sys
att = json.load(open(sys.argv[1]))
p = att["predicate"]
deps = p["buildDefinition"]["resolvedDependencies"]
assert deps[0]["digest"]["gitCommit"] == sys.argv[2], deps[0]
binary = hashlib.sha256(open(sys.argv[4], "rb").read()).hexdigest()
assert any(d.get("digest", {}).get("sha256") == binary for d in deps), "no material is the binary"
assert p["runDetails"]["builder"]["id"], "no builder id"
assert [s["digest"]["sha256"] for s in att["subject"]] == [sys.argv[3][7:]], att["subject"]
PY
}
check "cosign verify-attestation --type slsaprovenance1: commit ${commit:0:12}, the binary, the builder" \
    provenance_attested

# ------------------------------------------------------------ negative controls ---
wrong_key="accepted signatures do not match threshold"
check "negative control: a key that did not sign refuses the image" \
    fails_with "${wrong_key}" verify "${work}/other.pub" "${image}"
check "negative control: a key that did not sign refuses the chart" \
    fails_with "${wrong_key}" verify "${work}/other.pub" "${chart}"
check "negative control: no attestation of a type that was not made (spdxjson)" \
    fails_with "none of the attestations matched the predicate type" \
    verify_attestation "${work}/release.pub" --type spdxjson "${image}"
check "negative control: the SBOM referrer itself was not signed" \
    fails_with "no signatures found" verify "${work}/release.pub" "${sbom_referrer}"

# The signed tag moved: one label changed in the config, pushed under the same tag.
"${CRANE}" mutate "${registry}/fiskil-token-refresher:${version}" \
    --label org.opencontainers.image.revision=0000000000000000000000000000000000000000 \
    --tag "${registry}/fiskil-token-refresher:${version}" >"${work}/mutated" 2>"${work}/mutate.log" ||
    { cat "${work}/mutate.log" >&2; deploy_die "crane mutate failed"; }
moved="$("${CRANE}" digest "${registry}/fiskil-token-refresher:${version}")"
check "the tag now names another image (${moved:0:19}...)" test "${moved}" != "${digest}"
check "negative control: cosign verify of what the moved tag names fails" \
    fails_with "no signatures found" verify "${work}/release.pub" "${registry}/fiskil-token-refresher:${version}"
"${COSIGN}" sign --key "${work}/other.key" --tlog-upload=false --use-signing-config=false --yes \
    --allow-http-registry=true "${registry}/fiskil-token-refresher@${moved}" >/dev/null 2>"${work}/sign-other.log" ||
    { cat "${work}/sign-other.log" >&2; deploy_die "cosign sign with the other key failed"; }
check "the modified image signed with another key verifies with that key (the signature is there)" \
    verify "${work}/other.pub" "${registry}/fiskil-token-refresher@${moved}"
check "negative control: a signature made with another key does not verify with release.pub" \
    fails_with "${wrong_key}" verify "${work}/release.pub" "${registry}/fiskil-token-refresher@${moved}"
check "the released digest still verifies after the tag moved" verify "${work}/release.pub" "${image}"

deploy_log "release.sh took $((SECONDS - start))s"
check_summary
