#!/usr/bin/env bash
# Side-by-side benchmark: fiskil-token-refresher against the do-it-yourself shell loop
# (diy-sidecar.sh: sh + curl + jq) and observatorium's token-refresher (an OAuth2
# client-credentials refresher with a file output, built from its Go module), on the same
# loopback HTTPS stand-in, in one run of about five minutes. Prints a Markdown table.
#
#   tests/sidebyside/run.sh [compare.py options, e.g. --idle-seconds 30]
#
# Environment:
#   FISKIL_TOOLS_CACHE            where built tools are kept (default ~/.cache/fiskil-token-refresher/tools)
#   SIDEBYSIDE_OAUTH2_REFRESHER   use this token-refresher binary instead of building one
#   OBSERVATORIUM_VERSION         module version to build (default: latest)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
cache="${FISKIL_TOOLS_CACHE:-$HOME/.cache/fiskil-token-refresher/tools}/sidebyside"
mkdir -p "$cache"
say() { printf '[run] %s\n' "$*" >&2; }

# curl and jq for the shell loop, from Debian's packages when missing.
missing=()
for tool in curl jq; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

say "cargo build --release --workspace"
cargo build --release --workspace --quiet

# observatorium token-refresher, from the Go module proxy, cached by version.
module=github.com/observatorium/token-refresher
version="${OBSERVATORIUM_VERSION:-latest}"
oauth2_bin="${SIDEBYSIDE_OAUTH2_REFRESHER:-}"
oauth2_label="observatorium token-refresher"
oauth2_missing=""
if [ -z "$oauth2_bin" ]; then
  gobin="$cache/go-bin/$version"
  if [ ! -x "$gobin/token-refresher" ]; then
    if command -v go >/dev/null 2>&1; then
      say "go install $module@$version"
      mkdir -p "$gobin"
      if ! out=$(GOFLAGS=-mod=mod GOBIN="$gobin" timeout 600 nice -n 19 \
          go install "$module@$version" 2>&1); then
        reason=$(printf '%s\n' "$out" | grep -m1 -E '403|404|410|not available|error|cannot' || true)
        [ -n "$reason" ] || reason=$(printf '%s\n' "$out" | tail -n1)
        case "$out" in
          *"403 Forbidden"*)
            detail=$(printf '%s\n' "$out" | sed -n 's/.*server response: //p' | head -n1)
            oauth2_missing="the Go module proxy answers 403 Forbidden for $module@$version${detail:+: $detail}" ;;
          *) oauth2_missing="go install $module@$version failed: ${reason:0:200}" ;;
        esac
        say "$oauth2_missing"
      fi
    else
      oauth2_missing="no Go toolchain to build $module"
    fi
  fi
  [ -x "$gobin/token-refresher" ] && oauth2_bin="$gobin/token-refresher"
fi
if [ -n "$oauth2_bin" ]; then
  built=$(go version -m "$oauth2_bin" 2>/dev/null | awk '$1 == "mod" {print $3; exit}' || true)
  [ -n "$built" ] && oauth2_label="observatorium token-refresher $built"
fi

python3 tests/sidebyside/compare.py \
  --fiskil "$root/target/release/fiskil-token-refresher" \
  --stand-in "$root/target/release/fiskil-stand-in" \
  --diy "$root/tests/sidebyside/diy-sidecar.sh" \
  --oauth2-refresher "$oauth2_bin" --oauth2-label "$oauth2_label" \
  --oauth2-missing "${oauth2_missing:-not built}" \
  "$@"
