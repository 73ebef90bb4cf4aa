#!/bin/sh
# The do-it-yourself token sidecar, as it is commonly written: post the credentials with curl,
# pick the token out with jq, write it to the shared file with a plain redirect, sleep 80 % of
# the lifetime, repeat. Kept as people write it (not atomic, fixed retry delay) because the
# side-by-side benchmark measures what is really run.
#
# Environment: FISKIL_TOKEN_URL, FISKIL_CLIENT_ID, FISKIL_CLIENT_SECRET, TOKEN_FILE
# (curl trusts the endpoint's CA through CURL_CA_BUNDLE or the system store).

while true; do
  RESPONSE=$(curl -s -X POST "$FISKIL_TOKEN_URL" \
    -H "Content-Type: application/json" \
    -d "{\"client_id\": \"$FISKIL_CLIENT_ID\", \"client_secret\": \"$FISKIL_CLIENT_SECRET\"}")
  TOKEN=$(echo "$RESPONSE" | jq -r '.token')
  EXPIRES_IN=$(echo "$RESPONSE" | jq -r '.expires_in')

  if [ -z "$TOKEN" ] || [ "$TOKEN" = "null" ]; then
    echo "$(date) failed to get a token, retrying in 10s" >&2
    sleep 10
    continue
  fi

  echo "$TOKEN" > "$TOKEN_FILE"
  echo "$(date) token refreshed, next refresh in $((EXPIRES_IN * 80 / 100))s" >&2
  sleep $((EXPIRES_IN * 80 / 100))
done
