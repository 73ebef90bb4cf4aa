#!/usr/bin/env bash
# Builds External Secrets Operator's manager binary from its Go module (not
# vendored here) into the tool cache, once. Prints the binary's path.
#
#   ESO_VERSION  (default v0.16.2)
#   TOOLS        (default ~/.cache/fiskil-token-refresher/tools)
#
# The module's go.mod has a `replace` directive, so `go install mod@version`
# refuses it; the module is downloaded through the Go module proxy, copied to a
# writable directory and built there as the main module. Built at nice 19 with
# CGO_ENABLED=0; the wall time goes to build-time.txt next to the binary.
set -euo pipefail
ver=${ESO_VERSION:-v0.16.2}
tools=${TOOLS:-$HOME/.cache/fiskil-token-refresher/tools}
out=$tools/eso-$ver
bin=$out/external-secrets
if [[ -x $bin ]]; then echo "$bin"; exit 0; fi
mkdir -p "$out"
dir=$(cd /tmp && go mod download -json "github.com/external-secrets/external-secrets@$ver" |
      sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[[ -d $dir ]] || { echo "module download failed" >&2; exit 1; }
rm -rf "$out/src"; cp -r "$dir" "$out/src"; chmod -R u+w "$out/src"
start=$(date +%s)
( cd "$out/src" && CGO_ENABLED=0 nice -n 19 go build -trimpath -ldflags='-s -w' -o "$bin.tmp" . ) \
  >"$out/build.log" 2>&1 || { echo "build failed, see $out/build.log" >&2; tail -30 "$out/build.log" >&2; exit 1; }
end=$(date +%s)
mv "$bin.tmp" "$bin"
echo "go build of external-secrets $ver: $((end-start)) s wall, $(nproc) cores, $(date -u +%FT%TZ), $(go version)" >"$out/build-time.txt"
cp "$out/src/deploy/crds/bundle.yaml" "$out/crds-bundle.yaml"
rm -rf "$out/src"
echo "$bin"
