#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# nxsys-mock-server --require-client-cert with curl: the built-in client certificate and key it
# writes at start are accepted, a client without a certificate is not; the client_credentials
# grant and --no-client-credentials; the flags' usage errors.
# Usage: mock_server_mtls.sh PATH/TO/nxsys-mock-server
set -euo pipefail
server_bin=$1
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() { echo "FAIL: $*"; exit 1; }

# start_server NAME LAST-LINE ARGS...: starts nxsys-mock-server and waits until it printed a line
# starting with LAST-LINE; sets $port.
start_server() {
  local name=$1 last=$2; shift 2
  "$server_bin" --port 0 "$@" >"$tmp/$name.out" &
  pids+=($!)
  for _ in $(seq 1 100); do
    grep -qs "^$last" "$tmp/$name.out" && break
    sleep 0.1
  done
  grep -qs "^$last" "$tmp/$name.out" || fail "server $name did not start"
  port=$(sed -n 's/^listening on 127.0.0.1://p' "$tmp/$name.out")
}

start_server mtls 'test client key ' --tls --require-client-cert
ca=$(sed -n 's/^test CA //p' "$tmp/mtls.out")
cert=$(sed -n 's/^test client certificate //p' "$tmp/mtls.out")
key=$(sed -n 's/^test client key //p' "$tmp/mtls.out")
[[ -s $ca && -s $cert && -s $key ]] || fail "no CA, client certificate or key file"
url="https://127.0.0.1:$port/nxsys/oauth/token"

answer=$(curl -sS --max-time 10 --cacert "$ca" --cert "$cert" --key "$key" "$url" \
  -d grant_type=client_credentials -d client_id=test-client -d client_secret=test-secret \
  -d scope=read)
echo "with the client certificate: $answer"
echo "$answer" | grep -q '"accessToken":"' || fail "no access token"
echo "$answer" | grep -q '"scope":"read"' || fail "scope not echoed"
if echo "$answer" | grep -qi 'refresh'; then fail "a refresh token for client_credentials"; fi

if curl -sS --max-time 10 --cacert "$ca" "$url" -d grantType=client_credentials \
  -d clientId=test-client -d clientSecret=test-secret >"$tmp/nocert.out" 2>"$tmp/nocert.err"; then
  fail "answered without a client certificate: $(cat "$tmp/nocert.out")"
fi
echo "without a client certificate: curl: $(cat "$tmp/nocert.err")"

stats=$(curl -sS --max-time 10 --cacert "$ca" --cert "$cert" --key "$key" \
  "https://127.0.0.1:$port/stats")
echo "stats: $stats"
python3 - "$stats" <<'PY' || fail "unexpected stats"
import json, sys
s = json.loads(sys.argv[1])
assert s["client_credentials_grants"] == 1, s
assert s["client_certificates"] == 2, s  # the token request and this one
assert s["tls_handshakes"] == 2, s
PY

start_server nocc 'listening on' --no-client-credentials
answer=$(curl -sS --max-time 10 "http://127.0.0.1:$port/nxsys/oauth/token" \
  -d grantType=client_credentials -d clientId=test-client -d clientSecret=test-secret)
echo "--no-client-credentials: $answer"
echo "$answer" | grep -q '"error":"unauthorized_client"' || fail "not unauthorized_client"

"$server_bin" --help | grep -q -- '--require-client-cert' || fail "--help lacks --require-client-cert"
for args in "--require-client-cert" "--client-ca $ca" "--tls --client-ca $ca"; do
  rc=0
  # shellcheck disable=SC2086
  "$server_bin" $args >/dev/null 2>&1 || rc=$?
  [ $rc -eq 2 ] || fail "nxsys-mock-server $args: exit status $rc, not 2"
done
echo "OK"
