#!/usr/bin/env bash
# The chart's release metadata: appVersion is the binary's Cargo version, the chart version is
# SemVer, the Artifact Hub annotations parse and agree with the chart (licence, the image at
# appVersion, a changelog for this version with Artifact Hub's change kinds). With negative
# controls. Then `ct lint` (chart-testing, built from its Go module, with yamllint and yamale from
# PyPI): Chart.yaml against ct's schema, yamllint on Chart.yaml and values.yaml, helm lint with
# every values file in ci/.
#
#   tests/deploy/chart-release.sh
set -euo pipefail
# shellcheck source=tests/deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PYTHON="$(with_tool_lock venv venv_python)"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

checker() {
    "${PYTHON}" - "$1" "${REPO_ROOT}/Cargo.toml" "${REPO_ROOT}/Dockerfile" <<'PY'
import re, sys, yaml
chart = yaml.safe_load(open(sys.argv[1]))
cargo = open(sys.argv[2]).read()
package = cargo[cargo.index("[package]"):]
version = re.search(r'^version = "([^"]+)"', package, re.M).group(1)
licence = re.search(r'^license = "([^"]+)"', package, re.M).group(1)
dockerfile_licence = re.search(r'org\.opencontainers\.image\.licenses="([^"]+)"', open(sys.argv[3]).read()).group(1)
semver = r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
def need(ok, msg):
    if not ok:
        sys.exit(f"Chart.yaml: {msg}")
need(re.match(semver, str(chart["version"])), f"version {chart['version']!r} is not SemVer")
need(str(chart["appVersion"]) == version, f"appVersion {chart['appVersion']!r} is not the Cargo version {version}")
ann = chart.get("annotations") or {}
need(ann.get("artifacthub.io/license") == licence == dockerfile_licence,
     f"artifacthub.io/license {ann.get('artifacthub.io/license')!r}, Cargo {licence!r}, Dockerfile {dockerfile_licence!r}")
need(ann.get("artifacthub.io/containsSecurityUpdates") in ("true", "false"), "containsSecurityUpdates is not \"true\"/\"false\"")
images = yaml.safe_load(ann.get("artifacthub.io/images", "") or "[]")
need([i.get("image") for i in images] == [f"fiskil-token-refresher:{version}"],
     f"artifacthub.io/images {images} should name fiskil-token-refresher:{version}")
changes = yaml.safe_load(ann.get("artifacthub.io/changes", "") or "[]")
need(isinstance(changes, list) and changes, "artifacthub.io/changes is empty")
for c in changes:
    need(isinstance(c, dict) and c.get("kind") in ("added", "changed", "deprecated", "removed", "fixed", "security")
         and str(c.get("description", "")).strip(), f"change {c!r} needs a kind and a description")
print(f"chart {chart['version']}, app {version}, {len(changes)} changes")
PY
}
check "Chart.yaml: SemVer version, appVersion = Cargo version, Artifact Hub annotations agree" \
    checker "${CHART_DIR}/Chart.yaml"

mutant_refused() {
    sed -e "$1" "${CHART_DIR}/Chart.yaml" >"${work}/Chart.yaml"
    ! checker "${work}/Chart.yaml"
}
check "negative control: appVersion that is not the Cargo version" mutant_refused 's/^appVersion: .*/appVersion: "9.9.9"/'
check "negative control: a chart version that is not SemVer" mutant_refused 's/^version: .*/version: 1.0/'
check "negative control: a change without a kind Artifact Hub knows" mutant_refused 's/- kind: added/- kind: improved/'
check "negative control: the image at another tag" mutant_refused 's/image: fiskil-token-refresher:.*/image: fiskil-token-refresher:0.0.1/'
HELM="$("${DEPLOY_TESTS_DIR}/helm.sh")"
check "helm lint --strict accepts the annotations" "${HELM}" lint --strict "${CHART_DIR}"

# ------------------------------------------------------------ ct lint ---
CT="$("${DEPLOY_TESTS_DIR}/go-tool.sh" ct)"
CT_ETC="$("${DEPLOY_TESTS_DIR}/go-tool.sh" ct --module-dir)/etc"
ct_tools() {
    local venv
    venv="$(tools_venv)"
    if [[ ! -x ${venv}/bin/yamllint || ! -x ${venv}/bin/yamale ]]; then
        deploy_log "installing ${YAMLLINT_PACKAGE} ${YAMALE_PACKAGE} into ${venv}"
        "${venv}/bin/python" -m pip install -q --disable-pip-version-check \
            "${YAMLLINT_PACKAGE}" "${YAMALE_PACKAGE}" >&2
    fi
    printf '%s\n' "${venv}/bin"
}
CT_PATH="$(dirname "${HELM}"):$(with_tool_lock venv ct_tools):${PATH}"
# ct_lint ROOT: ct lint of ROOT/charts with the repository's ct.yaml.
ct_lint() {
    (cd "$1" && PATH="${CT_PATH}" HELM_CACHE_HOME="${work}/helm" HELM_CONFIG_HOME="${work}/helm" \
        HELM_DATA_HOME="${work}/helm" "${CT}" lint --config "${REPO_ROOT}/ct.yaml" \
        --chart-yaml-schema "${CT_ETC}/chart_schema.yaml" --lint-conf "${CT_ETC}/lintconf.yaml")
}
check "ct lint --config ct.yaml (chart-testing ${CT_VERSION}: Chart.yaml schema, yamllint, helm lint)" \
    ct_lint "${REPO_ROOT}"
# Negative controls on a copy of the chart: a Chart.yaml field ct's schema does not know, and a
# values.yaml with a duplicated key (yamllint).
# ct_mutant_refused MESSAGE MUTATE: ct lint fails on the mutated copy, saying MESSAGE.
ct_mutant_refused() {
    rm -rf "${work}/ct" && mkdir -p "${work}/ct/charts" && cp -a "${CHART_DIR}" "${work}/ct/charts/"
    "$2" "${work}/ct/charts/fiskil-token-refresher"
    ! ct_lint "${work}/ct" >"${work}/ct.log" 2>&1 || return 1
    grep -F -- "$1" "${work}/ct.log"
}
unknown_field() { printf 'maintainer: nobody\n' >>"$1/Chart.yaml"; }
duplicate_key() { sed -n '/^[a-zA-Z]/{p;q}' "$1/values.yaml" >>"$1/values.yaml"; }
check "negative control: ct lint refuses a Chart.yaml field its schema does not know" \
    ct_mutant_refused "maintainer: Unexpected element" unknown_field
check "negative control: ct lint refuses a values.yaml with a duplicated key (yamllint)" \
    ct_mutant_refused "duplication of key" duplicate_key
check_summary
