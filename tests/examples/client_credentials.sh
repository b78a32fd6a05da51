#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# examples/client_credentials against nxsys-mock-server over https: 200 callers on two threads
# get one token from one client_credentials grant (RFC 6749 names, HTTP Basic, the scope echoed,
# no refresh token presented); a wrong secret is exit 1 with invalid_client; a server that
# refuses the grant gives unauthorized_client; a missing variable is exit 2. No secret printed.
# Usage: client_credentials.sh PATH/TO/nxsys-mock-server PATH/TO/nxsys-example-client-credentials
set -euo pipefail
mock_bin=$1
example=$2
source "$(dirname "$0")/lib.sh"

secret="cs-$RANDOM-$$-client-secret"
printf '%s\n' "$secret" >"$tmp/secret"
start_mock mock --tls --ttl 600 --client-id cc-test --client-secret "$secret"
export TOKEN_URL=$mock_url/nxsys/oauth/token CLIENT_ID=cc-test CLIENT_SECRET_FILE=$tmp/secret
export CA_FILE=$mock_ca SCOPE="invoices:read"

rc=0; timeout 60 "$example" >"$tmp/ok.out" 2>"$tmp/ok.err" || rc=$?
[ "$rc" -eq 0 ] || fail "exit $rc, expected 0"
grep -qx '200 callers got 1 distinct token (Bearer, scope "invoices:read") from 1 request' \
  "$tmp/ok.out" || fail "not one token from one request for 200 callers"
mock_stats "$mock_url" "$tmp/stats.json"
[ "$(counter "$tmp/stats.json" client_credentials_grants)" -eq 1 ] || fail "not one grant"
[ "$(counter "$tmp/stats.json" basic_auth_requests)" -eq 1 ] || fail "no HTTP Basic"
[ "$(counter "$tmp/stats.json" rfc6749_requests)" -eq 1 ] || fail "not RFC 6749 names"

# --- a wrong secret: invalid_client, exit 1, the secret never printed ---
printf 'wrong-%s\n' "$secret" >"$tmp/wrong"
rc=0; CLIENT_SECRET_FILE=$tmp/wrong timeout 60 "$example" >"$tmp/wrong.out" 2>"$tmp/wrong.err" ||
  rc=$?
[ "$rc" -eq 1 ] || fail "a wrong secret: exit $rc, expected 1"
grep -q 'invalid_client' "$tmp/wrong.err" || fail "a wrong secret: not invalid_client"

# --- a server that does not allow the grant: unauthorized_client ---
start_mock refusing --tls --no-client-credentials --client-id cc-test --client-secret "$secret"
rc=0; TOKEN_URL=$mock_url/nxsys/oauth/token CA_FILE=$mock_ca timeout 60 "$example" \
  >"$tmp/refusing.out" 2>"$tmp/refusing.err" || rc=$?
[ "$rc" -eq 1 ] || fail "grant refused: exit $rc, expected 1"
grep -q 'unauthorized_client' "$tmp/refusing.err" || fail "grant refused: not unauthorized_client"

# --- configuration ---
rc=0; env -u CLIENT_SECRET_FILE timeout 60 "$example" >/dev/null 2>"$tmp/noenv.err" || rc=$?
[ "$rc" -eq 2 ] || fail "no CLIENT_SECRET_FILE: exit $rc, expected 2"

no_secrets "$tmp"/*.out "$tmp"/*.err -- "$secret"
echo "examples.client_credentials: OK"
