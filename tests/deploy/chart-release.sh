#!/usr/bin/env bash
# The chart's release metadata: appVersion is the binary's Cargo version, the chart version is
# SemVer, the Artifact Hub annotations parse and agree with the chart (licence, the image at
# appVersion, a changelog for this version with Artifact Hub's change kinds). With negative
# controls.
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
check "helm lint --strict accepts the annotations" "$("${DEPLOY_TESTS_DIR}/helm.sh")" lint --strict "${CHART_DIR}"
check_summary
