#!/usr/bin/env bash
# Cluster mode side by side with External Secrets Operator, on one throwaway control plane
# (tests/cluster/up.sh): token requests per credential, an endpoint outage, controller memory.
# Prints a Markdown report; takes about 35 minutes after the builds.
#
#   tests/sidebyside/eso/run.sh [compare.py options, e.g. --outage 300 --tokens 10]
#
# Environment:
#   ESO_VERSION          ESO module version (default v0.16.2), built once by build-eso.sh
#   SIDEBYSIDE_ESO_BIN   use this ESO manager binary instead of building one
#   SIDEBYSIDE_ESO_CRDS  and these CRDs (default: the bundle cached next to the binary)
#   FISKIL_KUBECTL       a kubectl to use (default: tests/deploy/kubectl.sh's)
#   CARGO_TARGET_DIR     as for cargo
set -euo pipefail
cd "$(dirname "$0")/../../.."
root=$PWD
say() { printf '[run] %s\n' "$*" >&2; }

ver=${ESO_VERSION:-v0.16.2}
eso_bin=${SIDEBYSIDE_ESO_BIN:-}
if [[ -z $eso_bin ]]; then
  say "ESO $ver (built once from its Go module, cached)"
  eso_bin=$(ESO_VERSION=$ver tests/sidebyside/eso/build-eso.sh)
fi
eso_crds=${SIDEBYSIDE_ESO_CRDS:-$(dirname "$eso_bin")/crds-bundle.yaml}
[[ -x $eso_bin && -f $eso_crds ]] || { say "no ESO binary or CRDs: $eso_bin $eso_crds"; exit 1; }

say "cargo build --release -p fiskil-token-refresher -p fiskil-stand-in"
cargo build --release --quiet -p fiskil-token-refresher -p fiskil-stand-in
target=${CARGO_TARGET_DIR:-$root/target}
kubectl=$(tests/deploy/kubectl.sh)

exec python3 tests/sidebyside/eso/compare.py --eso-bin "$eso_bin" --eso-crds "$eso_crds" \
  --eso-version "$ver" --kubectl "$kubectl" \
  --refresher "$target/release/fiskil-token-refresher" --stand-in "$target/release/fiskil-stand-in" "$@"
