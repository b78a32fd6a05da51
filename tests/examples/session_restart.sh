#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# examples/session_restart against nxsys-mock-server with 1-second tokens, rotation and reuse
# detection: a first run (about 1.5 s of requests, so tokens are refreshed and rotated) leaves
# the chain in its file_store (mode 0600, the initial refresh token replaced); a second run with
# NO refresh token in the environment continues it from the file and refreshes; every request
# answered 200 and no rotated-away refresh token ever presented again (reuse_detected 0). With
# neither a refresh token nor a store file the program says so (exit 2).
# Usage: session_restart.sh PATH/TO/nxsys-mock-server PATH/TO/nxsys-example-session-restart
set -euo pipefail
mock_bin=$1
example=$2
source "$(dirname "$0")/lib.sh"

secret="cs-$RANDOM-$$-client-secret"
rt0="rt-$RANDOM-$$-refresh-token"
start_mock mock --ttl 1 --rotate --reuse-detection --client-id restart-test \
  --client-secret "$secret" --refresh-token "$rt0"
export NXSYS_BASE_API_URL=$mock_url NXSYS_CLIENT_ID=restart-test NXSYS_CLIENT_SECRET=$secret
store="$tmp/tokens.json"

# run NAME [ENV...]: 15 requests 100 ms apart; exit 0 and all 15 answered 200.
run() {
  local name=$1
  shift
  local rc=0
  env "$@" timeout 60 "$example" "$store" 15 100 >"$tmp/$name.out" 2>"$tmp/$name.err" || rc=$?
  [ "$rc" -eq 0 ] || fail "$name: exit $rc, expected 0"
  grep -qx 'requests 15, answered 200: 15' "$tmp/$name.out" || fail "$name: not every answer 200"
}
# rotated NAME: the refreshes answered by the server (each rotated the refresh token).
rotated() { sed -n 's/^refreshes .*, rotated \([0-9]*\),.*/\1/p' "$tmp/$1.out"; }

run first NXSYS_REFRESH_TOKEN="$rt0"
[ -f "$store" ] || fail "no store file written"
[ "$(stat -c %a "$store")" = 600 ] || fail "store file mode $(stat -c %a "$store"), expected 600"
! grep -qF -- "$rt0" "$store" || fail "the store still holds the initial refresh token"
[ "$(rotated first)" -ge 2 ] || fail "first run: 1-second tokens were not refreshed"
mock_stats "$mock_url" "$tmp/before.json"

# The restart: no refresh token at all, only the store can carry the chain on.
run second -u NXSYS_REFRESH_TOKEN
[ "$(rotated second)" -ge 1 ] || fail "second run: no refresh from the server"
mock_stats "$mock_url" "$tmp/after.json"
echo "first run: $(tail -n 1 "$tmp/first.out")"
echo "second run: $(tail -n 1 "$tmp/second.out")"
echo "mock: $(cat "$tmp/after.json")"
[ "$(counter "$tmp/after.json" reuse_detected)" -eq 0 ] ||
  fail "a rotated-away refresh token was presented again"
[ "$(counter "$tmp/after.json" errors)" -eq 0 ] || fail "the token endpoint answered errors"
[ "$(counter "$tmp/after.json" refreshes)" -gt "$(counter "$tmp/before.json" refreshes)" ] ||
  fail "the second run did not refresh"
ok=$(($(counter "$tmp/after.json" api_requests) - $(counter "$tmp/after.json" api_unauthorized)))
[ "$ok" -eq 30 ] || fail "the API answered $ok requests with 200, expected 30"

# Neither a refresh token nor a store file: invalid configuration, exit 2, nothing sent.
rc=0; env -u NXSYS_REFRESH_TOKEN timeout 60 "$example" "$tmp/none.json" 1 1 >"$tmp/none.out" \
  2>"$tmp/none.err" || rc=$?
[ "$rc" -eq 2 ] || fail "no refresh token and no store: exit $rc, expected 2"
grep -q '^session_restart: invalid configuration' "$tmp/none.err" ||
  fail "no refresh token and no store: not invalid configuration"

no_secrets "$tmp"/*.out "$tmp"/*.err -- "$secret" "$rt0"
echo "examples.session_restart: OK"
