#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# nxsys-token against nxsys-mock-server on 127.0.0.1: configuration from the environment and
# flags, --json, --store (no request for a stored token, rotation persisted, mode 0600), a
# proxy, mutual TLS, client_credentials, the exit codes, and that no secret ever reaches stdout
# or stderr.
# Usage: nxsys_token.sh PATH/TO/nxsys-mock-server PATH/TO/nxsys-token
set -euo pipefail
server_bin=$1
token_bin=$2
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
mkdir "$tmp/runs"

fail() { echo "FAIL: $*"; exit 1; }

# start_server NAME ARGS...: starts nxsys-mock-server, sets $base to its http://127.0.0.1:PORT.
start_server() {
  local name=$1; shift
  "$server_bin" --port 0 "$@" >"$tmp/$name.server" &
  pids+=($!)
  for _ in $(seq 1 100); do
    grep -qs '^listening on' "$tmp/$name.server" && break
    sleep 0.1
  done
  base="http://$(sed -n 's/^listening on //p' "$tmp/$name.server")"
  [ "$base" != "http://" ] || fail "server $name did not start"
}

# refreshes URL: the server's count of successful refreshes (GET /stats).
refreshes() {
  curl -sS --max-time 5 "$1/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["refreshes"])'
}

# run NAME COMMAND...: runs it (bounded), keeps stdout/stderr in runs/NAME.{out,err}, sets $rc.
run() {
  local name=$1; shift
  rc=0
  timeout 20 "$@" >"$tmp/runs/$name.out" 2>"$tmp/runs/$name.err" || rc=$?
}
show() { echo "--- $1: exit $rc"; echo "stdout:"; cat "$tmp/runs/$1.out"; echo "stderr:"; cat "$tmp/runs/$1.err"; }
# expect NAME CODE: the last run of NAME exited with CODE.
expect() {
  show "$1"
  [ "$rc" -eq "$2" ] || fail "$1: exit $rc, expected $2"
}
# expect_token NAME: stdout is exactly one line holding a token of the mock server's format.
expect_token() {
  expect "$1" 0
  [ "$(wc -l <"$tmp/runs/$1.out")" -eq 1 ] || fail "$1: stdout is not one line"
  grep -Eqx 'at-[0-9]+-[0-9a-f]{16}' "$tmp/runs/$1.out" || fail "$1: no token on stdout"
  ! grep -qF "$(cat "$tmp/runs/$1.out")" "$tmp/runs/$1.err" || fail "$1: the token is on stderr"
}
stderr_has() { grep -qF -- "$2" "$tmp/runs/$1.err" || fail "$1: stderr lacks '$2'"; }

secret="cs-$RANDOM-$$-client-secret"
rt0="rt-$RANDOM-$$-initial-refresh-token"
export NXSYS_CLIENT_ID=cli-test NXSYS_CLIENT_SECRET=$secret NXSYS_REFRESH_TOKEN=$rt0

run help "$token_bin" --help
expect help 0
grep -q 'Exit status' "$tmp/runs/help.out" || fail "--help lacks the exit codes"
run version "$token_bin" --version
expect version 0

# --- a server that does not rotate ---
start_server plain --client-id cli-test --client-secret "$secret" --refresh-token "$rt0"
plain=$base
export NXSYS_BASE_API_URL=$plain

run env_config "$token_bin"
expect_token env_config

run json "$token_bin" --json
expect json 0
python3 -c '
import json, re, sys
d = json.load(open(sys.argv[1]))
assert set(d) == {"access_token", "token_type", "expires_in", "from_store"}, d
assert re.fullmatch(r"at-[0-9]+-[0-9a-f]{16}", d["access_token"]), d
assert d["token_type"] == "Bearer", d
assert isinstance(d["expires_in"], int) and 3500 < d["expires_in"] <= 3600, d
assert d["from_store"] is False, d
' "$tmp/runs/json.out" || fail "json: unexpected output"

# Flags override the environment (a wrong URL and secret in it); secrets from files.
printf '%s\n' "$secret" >"$tmp/secret.txt"
printf '%s\n' "$rt0" >"$tmp/refresh.txt"
run flags env NXSYS_BASE_API_URL=http://127.0.0.1:1 NXSYS_CLIENT_SECRET=wrong-from-env \
  NXSYS_REFRESH_TOKEN=wrong-rt-from-env "$token_bin" --token-url "$plain/nxsys/oauth/token" \
  --client-secret-file "$tmp/secret.txt" --refresh-token-file "$tmp/refresh.txt"
expect_token flags

# Wrong client secret: authorization needed (3), with the server's words.
run wrong_secret env NXSYS_CLIENT_SECRET=wrong-secret "$token_bin"
expect wrong_secret 3
stderr_has wrong_secret "nxsys-token: invalid_client (HTTP 401)"
stderr_has wrong_secret "client authentication failed"
[ "$(wc -l <"$tmp/runs/wrong_secret.err")" -eq 1 ] || fail "wrong_secret: not one line on stderr"
[ ! -s "$tmp/runs/wrong_secret.out" ] || fail "wrong_secret: output on stdout"

run bad_grant env NXSYS_REFRESH_TOKEN=not-a-valid-refresh-token "$token_bin"
expect bad_grant 3
stderr_has bad_grant "invalid_grant (HTTP 400)"

# Nothing listens on a port that was free a moment ago: network failure (4).
free_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
run unreachable "$token_bin" --base-url "http://127.0.0.1:$free_port" --timeout 10
expect unreachable 4
stderr_has unreachable "connection failure"

# Configuration errors (2): a missing variable, a secret on argv, plain http off loopback.
run missing env -u NXSYS_CLIENT_SECRET "$token_bin"
expect missing 2
stderr_has missing "NXSYS_CLIENT_SECRET"
run missing_rt env -u NXSYS_REFRESH_TOKEN "$token_bin"
expect missing_rt 2
stderr_has missing_rt "NXSYS_REFRESH_TOKEN"
run argv_secret "$token_bin" --client-secret=argv-secret-value
expect argv_secret 2
! grep -q argv-secret-value "$tmp/runs/argv_secret.err" || fail "argv_secret: value echoed"
run bad_flag "$token_bin" --no-such-flag
expect bad_flag 2
run insecure "$token_bin" --base-url http://nxsys.example
expect insecure 2
stderr_has insecure "invalid configuration: token_url: plain http://"

# A corrupt store file: token store failure (5).
echo 'not json {' >"$tmp/corrupt.json"
run corrupt "$token_bin" --store "$tmp/corrupt.json"
expect corrupt 5
stderr_has corrupt "token store corrupt"

# --- the RFC 6749 dialect (snake_case answers), Basic authentication, a scope, --token-url,
# and the secrets from files ---
start_server snake --snake --client-id cli-test --client-secret "$secret" --refresh-token "$rt0"
snake=$base
printf '%s\n' "$secret" >"$tmp/secret.txt"
printf '%s\n' "$rt0" >"$tmp/rt.txt"
run token_url env -u NXSYS_BASE_API_URL "$token_bin" --token-url "$snake/nxsys/oauth/token"
expect_token token_url
run snake_body env -u NXSYS_CLIENT_SECRET -u NXSYS_REFRESH_TOKEN "$token_bin" --base-url "$snake" \
  --dialect rfc6749 --client-secret-file "$tmp/secret.txt" --refresh-token-file "$tmp/rt.txt"
expect_token snake_body
run snake_basic "$token_bin" --base-url "$snake" --dialect=rfc6749 --basic-auth --scope "a b" --json
expect snake_basic 0
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["scope"] == "a b", d' \
  "$tmp/runs/snake_basic.out" || fail "snake_basic: the scope did not come back"
[ "$(curl -sS --max-time 5 "$snake/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["basic_auth_requests"])')" -eq 1 ] \
  || fail "snake_basic: no Basic authentication"
run bad_dialect "$token_bin" --dialect oauth
expect bad_dialect 2
run basic_value "$token_bin" --basic-auth=yes
expect basic_value 2

# --- a rotating server, with --store ---
start_server rotating --rotate --client-id cli-test --client-secret "$secret" --refresh-token "$rt0"
rot=$base
export NXSYS_BASE_API_URL=$rot
store=$tmp/store.json
stored_rt() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["refreshToken"])' "$store"; }

run store1 "$token_bin" --store "$store"
expect_token store1
[ "$(refreshes "$rot")" -eq 1 ] || fail "store1: expected 1 refresh"
[ "$(stat -c %a "$store")" = 600 ] || fail "store file mode is $(stat -c %a "$store"), not 600"
rt1=$(stored_rt)
[ -n "$rt1" ] && [ "$rt1" != "$rt0" ] || fail "store1: the rotated refresh token was not stored"

# A valid stored token: printed without a request (no refresh token needed any more).
run store2 env -u NXSYS_REFRESH_TOKEN "$token_bin" --store "$store" --json
expect store2 0
python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["access_token"] == open(sys.argv[2]).read().strip(), d
assert d["from_store"] is True, d
assert 3500 < d["expires_in"] <= 3600, d
' "$tmp/runs/store2.out" "$tmp/runs/store1.out" || fail "store2: not the stored token"
[ "$(refreshes "$rot")" -eq 1 ] || fail "store2: a request was sent for a stored token"

# The stored access token expires: the next run refreshes with the stored (rotated) refresh
# token, although the environment still names the consumed initial one.
python3 -c '
import json, sys
d = json.load(open(sys.argv[1])); d["expiresAtMs"] = 0
json.dump(d, open(sys.argv[1], "w"))
' "$store"
run store3 "$token_bin" --store "$store"
expect_token store3
[ "$(cat "$tmp/runs/store3.out")" != "$(cat "$tmp/runs/store1.out")" ] || fail "store3: old token"
[ "$(refreshes "$rot")" -eq 2 ] || fail "store3: expected 2 refreshes"
rt2=$(stored_rt)
[ "$rt2" != "$rt1" ] || fail "store3: the second rotation was not stored"
[ "$(stat -c %a "$store")" = 600 ] || fail "store file mode is not 600 after rotation"

# Without --store a rotation is announced (the new refresh token would be lost), never shown.
run no_store env NXSYS_REFRESH_TOKEN="$rt2" "$token_bin"
expect_token no_store
stderr_has no_store "warning: the server rotated the refresh token"

# --- through a CONNECT proxy with Basic credentials (--proxy, --proxy-user, the password from
# NXSYS_PROXY_PASSWORD or a file), --no-proxy, --proxy-from-env ---
proxy_pw="pp-$RANDOM-$$-proxy-password"
start_server proxied --proxy --proxy-user alice --proxy-password "$proxy_pw" --client-id cli-test \
  --client-secret "$secret" --refresh-token "$rt0"
for _ in $(seq 1 100); do grep -qs '^proxy listening' "$tmp/proxied.server" && break; sleep 0.1; done
proxy="http://$(sed -n 's/^proxy listening on //p' "$tmp/proxied.server")"
[ "$proxy" != "http://" ] || fail "the proxy did not start"
export NXSYS_BASE_API_URL=$base
run via_proxy env NXSYS_PROXY_PASSWORD="$proxy_pw" "$token_bin" --proxy "$proxy" --proxy-user alice
expect_token via_proxy
printf '%s\n' "$proxy_pw" >"$tmp/proxy_pw.txt"
run via_proxy_file "$token_bin" --proxy "$proxy" --proxy-user alice \
  --proxy-password-file "$tmp/proxy_pw.txt"
expect_token via_proxy_file
# The proxy's 407: its credentials to fix (3), named as the proxy's.
run proxy_wrong_pw env NXSYS_PROXY_PASSWORD=wrong "$token_bin" --proxy "$proxy" --proxy-user alice
expect proxy_wrong_pw 3
stderr_has proxy_wrong_pw "proxy"
run proxy_no_pw "$token_bin" --proxy "$proxy"
expect proxy_no_pw 3
run proxy_argv "$token_bin" --proxy "$proxy" --proxy-user alice --proxy-password "$proxy_pw"
expect proxy_argv 2
stderr_has proxy_argv "NXSYS_PROXY_PASSWORD"
# A proxy that is not there: a network failure (4), unless the target is excluded.
run proxy_gone "$token_bin" --proxy "http://127.0.0.1:$free_port" --timeout 10
expect proxy_gone 4
run proxy_excluded "$token_bin" --proxy "http://127.0.0.1:$free_port" --no-proxy 127.0.0.1
expect_token proxy_excluded
run proxy_env env "http_proxy=http://alice:$proxy_pw@${proxy#http://}" "$token_bin" --proxy-from-env
expect_token proxy_env
run proxy_env_unused env "http_proxy=http://127.0.0.1:$free_port" "$token_bin"
expect_token proxy_env_unused
run proxy_https "$token_bin" --proxy "https://127.0.0.1:1"
expect proxy_https 2

# --- mutual TLS (--cert, --key) and the client_credentials grant (--grant) ---
"$server_bin" --port 0 --tls --require-client-cert --client-id cli-test \
  --client-secret "$secret" --refresh-token "$rt0" >"$tmp/mtls.server" &
pids+=($!)
for _ in $(seq 1 100); do grep -qs '^test client key' "$tmp/mtls.server" && break; sleep 0.1; done
mtls="https://$(sed -n 's/^listening on //p' "$tmp/mtls.server")"
ca=$(sed -n 's/^test CA //p' "$tmp/mtls.server")
cert=$(sed -n 's/^test client certificate //p' "$tmp/mtls.server")
key=$(sed -n 's/^test client key //p' "$tmp/mtls.server")
[[ -s $ca && -s $cert && -s $key ]] || fail "the mTLS server did not start"
export NXSYS_BASE_API_URL=$mtls
run mtls "$token_bin" --ca-file "$ca" --cert "$cert" --key "$key"
expect_token mtls
run mtls_no_cert "$token_bin" --ca-file "$ca" --timeout 10
expect mtls_no_cert 4
run mtls_no_key "$token_bin" --ca-file "$ca" --cert "$cert"
expect mtls_no_key 2
stderr_has mtls_no_key "private key"
run client_credentials env -u NXSYS_REFRESH_TOKEN "$token_bin" --grant client_credentials \
  --ca-file "$ca" --cert "$cert" --key "$key" --scope read --json
expect client_credentials 0
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["scope"] == "read", d' \
  "$tmp/runs/client_credentials.out" || fail "client_credentials: no scope"
run cc_with_rt "$token_bin" --grant client_credentials --ca-file "$ca" --cert "$cert" --key "$key"
expect cc_with_rt 2
stderr_has cc_with_rt "takes no refresh token"
run bad_grant_name "$token_bin" --grant password
expect bad_grant_name 2

# No secret in any output: client secret, refresh tokens (given, stored, or rotated), the
# proxy's password.
all_out=$(cat "$tmp"/runs/*.out "$tmp"/runs/*.err)
for s in "$secret" "$rt0" "$rt1" "$rt2" "$proxy_pw"; do
  ! grep -qF -- "$s" <<<"$all_out" || fail "a secret appeared in the output"
done
! grep -qE 'refresh-[0-9]' <<<"$all_out" || fail "a rotated refresh token appeared in the output"
echo "nxsys-token: OK"
