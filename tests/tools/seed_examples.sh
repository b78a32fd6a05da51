#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# The seed's curl command and JavaScript fetch example, unchanged but for the URL, against
# nxsys-mock-server on 127.0.0.1. Usage: seed_examples.sh PATH/TO/nxsys-mock-server
set -euo pipefail
server_bin=$1
out=$(mktemp)
"$server_bin" --port 0 --rotate >"$out" &
pid=$!
trap 'kill -INT $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 1 100); do
  grep -q '^listening on' "$out" && break
  sleep 0.1
done
base="http://$(sed -n 's/^listening on //p' "$out")"
[ "$base" != "http://" ] || { echo "server did not start"; exit 1; }

# --- the seed's curl command ---
answer=$(curl -sS --max-time 10 -X POST "$base/nxsys/oauth/token" \
-H "Content-Type: application/x-www-form-urlencoded" \
-d "grantType=refresh_token" \
-d "refreshToken=refresh-0" \
-d "clientId=test-client" \
-d "clientSecret=test-secret")
echo "curl: $answer"
echo "$answer" | grep -q '"accessToken":"' || { echo "curl got no access token"; exit 1; }
rotated=$(echo "$answer" | sed -n 's/.*"refreshToken":"\([^"]*\)".*/\1/p')
[ -n "$rotated" ] || { echo "curl got no rotated refresh token"; exit 1; }

# A consumed refresh token is refused with the OAuth error.
again=$(curl -sS --max-time 10 -X POST "$base/nxsys/oauth/token" \
-H "Content-Type: application/x-www-form-urlencoded" \
-d "grantType=refresh_token" -d "refreshToken=refresh-0" \
-d "clientId=test-client" -d "clientSecret=test-secret")
echo "curl (old refresh token): $again"
echo "$again" | grep -q '"error":"invalid_grant"' || { echo "old refresh token accepted"; exit 1; }

# --- the seed's JavaScript fetch example (Node.js has fetch since v18) ---
if command -v node >/dev/null && node -e 'process.exit(typeof fetch === "function" ? 0 : 1)'; then
  js=$(BASE="$base" RT="$rotated" timeout 20 node -e '
async function refreshAccessToken() {
const response = await fetch(process.env.BASE + "/nxsys/oauth/token", {
method: "POST",
headers: {
"Content-Type": "application/x-www-form-urlencoded"
},
body: new URLSearchParams({
grantType: "refresh_token",
refreshToken: process.env.RT,
clientId: "test-client",
clientSecret: "test-secret"
})
});
const data = await response.json();
console.log(JSON.stringify(data));
return data;
}
refreshAccessToken();')
  echo "fetch: $js"
  echo "$js" | grep -q '"accessToken":"' || { echo "fetch got no access token"; exit 1; }
else
  js=""
  echo "fetch: skipped (no Node.js with fetch on this machine)"
fi
# The server's counters: three token requests, two refreshes, one error.
stats=$(curl -sS --max-time 10 "$base/stats")
echo "stats: $stats"
case "$js" in *accessToken*) want_refreshes=2 ;; *) want_refreshes=1 ;; esac
echo "$stats" | grep -q "\"refreshes\":$want_refreshes" || { echo "unexpected stats"; exit 1; }
echo "seed examples: OK"
