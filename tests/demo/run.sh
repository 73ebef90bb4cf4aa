#!/usr/bin/env bash
# A one-command demo on this machine, without credentials or network: starts the local HTTPS
# stand-in for Fiskil's token endpoint (tokens living 10 s), runs the refresher against it, and
# shows the token file being replaced every ~8 s. Stops after DEMO_SECONDS (default 30).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --quiet --workspace
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/debug/fiskil-stand-in --listen "127.0.0.1:$port" --ca-out "$work/ca.pem" --expires-in 10 \
  --client-id demo-client --client-secret demo-secret &
sleep 0.5
FISKIL_CLIENT_ID=demo-client FISKIL_CLIENT_SECRET=demo-secret \
  target/debug/fiskil-token-refresher \
  --token-url "https://localhost:$port/v1/token" --ca-file "$work/ca.pem" \
  --token-file "$work/token" --token-format json --listen 127.0.0.1:0 --log-format text &
end=$((SECONDS + ${DEMO_SECONDS:-30}))
while [ "$SECONDS" -lt "$end" ]; do
  sleep 2
  printf '%s  %s\n' "$(date +%T)" "$(cat "$work/token" 2>/dev/null || echo '(no token yet)')"
done
