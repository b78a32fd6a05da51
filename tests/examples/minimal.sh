#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# examples/minimal against nxsys-mock-server: a token (its type and lifetime printed, never its
# value) with one refresh, over http and over https with NXSYS_CA_FILE; a refused refresh token
# is exit 1 with invalid_grant and the server's words; a missing variable is exit 2.
# Usage: minimal.sh PATH/TO/nxsys-mock-server PATH/TO/nxsys-example-minimal
set -euo pipefail
mock_bin=$1
example=$2
source "$(dirname "$0")/lib.sh"

secret="cs-$RANDOM-$$-client-secret"
rt0="rt-$RANDOM-$$-refresh-token"
start_mock mock --ttl 600 --client-id minimal-test --client-secret "$secret" --refresh-token "$rt0"
export NXSYS_BASE_API_URL=$mock_url NXSYS_CLIENT_ID=minimal-test NXSYS_CLIENT_SECRET=$secret
export NXSYS_REFRESH_TOKEN=$rt0

# --- a token ---
rc=0; timeout 60 "$example" >"$tmp/ok.out" 2>"$tmp/ok.err" || rc=$?
[ "$rc" -eq 0 ] || fail "exit $rc, expected 0"
grep -qE '^got a Bearer token, valid for (59[0-9]|600) s$' "$tmp/ok.out" ||
  fail "no 'got a Bearer token, valid for ... s' line"
mock_stats "$mock_url" "$tmp/stats.json"
[ "$(counter "$tmp/stats.json" refreshes)" -eq 1 ] || fail "not exactly one refresh"

# --- a refresh token the server refuses: exit 1, invalid_grant and the server's words ---
rc=0; NXSYS_REFRESH_TOKEN=rt-refused-$$ timeout 60 "$example" >"$tmp/refused.out" \
  2>"$tmp/refused.err" || rc=$?
[ "$rc" -eq 1 ] || fail "a refused refresh token: exit $rc, expected 1"
grep -q '^minimal: invalid_grant (HTTP 400); server says: invalid_grant' "$tmp/refused.err" ||
  fail "a refused refresh token: no invalid_grant message"
grep -q 'authorize again' "$tmp/refused.err" || fail "invalid_grant: no advice to re-authorize"
mock_stats "$mock_url" "$tmp/stats.json"
[ "$(counter "$tmp/stats.json" errors)" -eq 1 ] || fail "invalid_grant was retried"

# --- configuration: a missing variable, plain http off loopback ---
rc=0; env -u NXSYS_CLIENT_SECRET timeout 60 "$example" >/dev/null 2>"$tmp/noenv.err" || rc=$?
[ "$rc" -eq 2 ] || fail "no NXSYS_CLIENT_SECRET: exit $rc, expected 2"
grep -q 'NXSYS_CLIENT_SECRET is not set' "$tmp/noenv.err" || fail "the missing variable not named"
rc=0; NXSYS_BASE_API_URL=http://api.nxsys.example timeout 60 "$example" >/dev/null \
  2>"$tmp/insecure.err" || rc=$?
[ "$rc" -eq 2 ] || fail "plain http off loopback: exit $rc, expected 2"
grep -q '^minimal: invalid configuration' "$tmp/insecure.err" ||
  fail "plain http: not invalid_config"

# --- https, trusting the mock's test CA through NXSYS_CA_FILE ---
start_mock mock-tls --tls --ttl 600 --client-id minimal-test --client-secret "$secret" \
  --refresh-token "$rt0"
rc=0; NXSYS_BASE_API_URL=$mock_url NXSYS_CA_FILE=$mock_ca timeout 60 "$example" \
  >"$tmp/tls.out" 2>"$tmp/tls.err" || rc=$?
[ "$rc" -eq 0 ] || fail "https: exit $rc, expected 0"
grep -q '^got a Bearer token' "$tmp/tls.out" || fail "https: no token"
# Without the CA the certificate is not trusted: a tls error, never a token.
rc=0; NXSYS_BASE_API_URL=$mock_url timeout 60 "$example" >"$tmp/untrusted.out" \
  2>"$tmp/untrusted.err" || rc=$?
[ "$rc" -eq 1 ] || fail "https without the CA: exit $rc, expected 1"
grep -q '^minimal: TLS failure' "$tmp/untrusted.err" || fail "https without the CA: not a tls error"

no_secrets "$tmp"/*.out "$tmp"/*.err -- "$secret" "$rt0" "rt-refused-$$"
echo "examples.minimal: OK"
