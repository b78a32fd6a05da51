#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# examples/callbacks against nxsys-mock-server (https, its CA in NXSYS_CA_FILE): a plain
# callback and a std::future from a thread that does not run the io_context both get a token,
# from one refresh (the program's count and the mock's); a refused refresh token fails both
# with invalid_grant (exit 1).
# Usage: callbacks.sh PATH/TO/nxsys-mock-server PATH/TO/nxsys-example-callbacks
set -euo pipefail
mock_bin=$1
example=$2
source "$(dirname "$0")/lib.sh"

secret="cs-$RANDOM-$$-client-secret"
rt0="rt-$RANDOM-$$-refresh-token"
# A slow answer (200 ms) makes the second call find the first one's refresh still in flight.
# Over https, trusting the mock's test CA through NXSYS_CA_FILE.
start_mock mock --tls --ttl 600 --latency-ms 200 --client-id callbacks-test \
  --client-secret "$secret" --refresh-token "$rt0"
export NXSYS_BASE_API_URL=$mock_url NXSYS_CLIENT_ID=callbacks-test NXSYS_CLIENT_SECRET=$secret
export NXSYS_REFRESH_TOKEN=$rt0 NXSYS_CA_FILE=$mock_ca

rc=0; timeout 60 "$example" >"$tmp/ok.out" 2>"$tmp/ok.err" || rc=$?
[ "$rc" -eq 0 ] || fail "exit $rc, expected 0"
grep -qE '^callback: a Bearer token, valid for [0-9]+ s$' "$tmp/ok.out" || fail "callback: no token"
grep -qE '^future: a Bearer token, valid for [0-9]+ s$' "$tmp/ok.out" || fail "future: no token"
grep -qx 'calls 2, refreshes 1' "$tmp/ok.out" || fail "the client did not refresh exactly once"
mock_stats "$mock_url" "$tmp/stats.json"
[ "$(counter "$tmp/stats.json" refreshes)" -eq 1 ] || fail "the mock saw more than one refresh"

# A refused refresh token: both calls fail with the server's invalid_grant, exit 1.
rc=0; NXSYS_REFRESH_TOKEN=rt-refused-$$ timeout 60 "$example" >"$tmp/refused.out" \
  2>"$tmp/refused.err" || rc=$?
[ "$rc" -eq 1 ] || fail "a refused refresh token: exit $rc, expected 1"
grep -q '^callback: invalid_grant (HTTP 400); server says: invalid_grant' "$tmp/refused.err" ||
  fail "callback: no invalid_grant"
grep -q '^future: invalid_grant (HTTP 400); server says: invalid_grant' "$tmp/refused.err" ||
  fail "future: no invalid_grant"

no_secrets "$tmp"/*.out "$tmp"/*.err -- "$secret" "$rt0" "rt-refused-$$"
echo "examples.callbacks: OK"
