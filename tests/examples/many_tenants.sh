#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# examples/many_tenants: 50 tenants, each with credentials of its own on a mock token server of
# its own (nxsys-mock-server accepts one client id, secret and refresh token, as a tenant's
# authorization would), 20 concurrent callers per tenant on 2 threads. Every call gets a token,
# every tenant's client refreshes exactly once (the program checks its client's stats) and
# every tenant's server sees exactly one refresh and no error (no tenant's credentials went to
# another's server). A tenant whose refresh token is refused fails alone (exit 1,
# invalid_grant); a tenants file readable by others is refused (exit 2).
# Usage: many_tenants.sh PATH/TO/nxsys-mock-server PATH/TO/nxsys-example-many-tenants
set -euo pipefail
mock_bin=$1
example=$2
source "$(dirname "$0")/lib.sh"
tenants=${TENANTS:-50}
callers=20

# One mock server per tenant, accepting only that tenant's credentials. A 100 ms answer keeps
# each refresh in flight while the tenant's other callers arrive. tenants.txt: one line per
# tenant, "name base_url client_id client_secret refresh_token".
# Started all at once, then waited for.
cs=() rt=()
for i in $(seq 1 "$tenants"); do
  cs[i]="cs-$i-$RANDOM-$$" rt[i]="rt-$i-$RANDOM-$$"
  launch_mock "mock-$i" --ttl 600 --latency-ms 100 --client-id "client-$i" \
    --client-secret "${cs[i]}" --refresh-token "${rt[i]}"
done
for i in $(seq 1 "$tenants"); do
  mock_ready "mock-$i"
  echo "tenant-$i $mock_url client-$i ${cs[i]} ${rt[i]}" >>"$tmp/tenants.txt"
done

# tenants_json IN OUT: tenants.txt lines as the program's JSON file, mode 0600.
tenants_json() {
  local sep="[" name url id cs rt
  (
    umask 077
    {
      while read -r name url id cs rt; do
        printf '%s\n {"name": "%s", "base_url": "%s",' "$sep" "$name" "$url"
        printf ' "client_id": "%s",' "$id"
        printf ' "client_secret": "%s", "refresh_token": "%s"}' "$cs" "$rt"
        sep=,
      done <"$1"
      echo "]"
    } >"$2"
  )
}
tenants_json "$tmp/tenants.txt" "$tmp/tenants.json"

rc=0; timeout 60 "$example" "$tmp/tenants.json" "$callers" 2 >"$tmp/run.out" 2>"$tmp/run.err" ||
  rc=$?
[ "$rc" -eq 0 ] || fail "exit $rc, expected 0"
tail -n 1 "$tmp/run.out"
grep -qx "tenants $tenants, calls $((tenants * callers)), failed 0, refreshes $tenants" \
  "$tmp/run.out" || fail "not one refresh per tenant and every call served"
[ "$(grep -c ": calls $callers, failed 0, refreshes 1," "$tmp/run.out")" -eq "$tenants" ] ||
  fail "a tenant's line is wrong"

# Each tenant's own server: exactly one refresh, no error (another tenant's credentials
# would have been refused). One curl for all: a curl start costs more than its request.
fetch=()
while read -r name url _; do fetch+=(-o "$tmp/$name.json" "$url/stats"); done <"$tmp/tenants.txt"
curl -sS --max-time 30 "${fetch[@]}" || fail "GET /stats of the tenants' servers"
wrong=$(grep -L -e '"refreshes":1,' "$tmp"/tenant-*.json
  grep -L -e '"errors":0,' "$tmp"/tenant-*.json)
[ -z "$wrong" ] || fail "not one refresh and no error on the servers of: $(basename -a $wrong)"

# One tenant's refresh token refused: that tenant fails alone, with the server's words.
sed -n '1p' "$tmp/tenants.txt" >"$tmp/two.txt"
sed -n '2p' "$tmp/tenants.txt" | awk '{ $5 = "rt-refused"; print }' >>"$tmp/two.txt"
tenants_json "$tmp/two.txt" "$tmp/two.json"
rc=0; timeout 60 "$example" "$tmp/two.json" "$callers" 2 >"$tmp/refused.out" \
  2>"$tmp/refused.err" || rc=$?
[ "$rc" -eq 1 ] || fail "a refused tenant: exit $rc, expected 1"
grep -q "^tenant tenant-1: calls $callers, failed 0, refreshes 1," "$tmp/refused.out" ||
  fail "the good tenant was affected by the refused one"
grep -q "^tenant tenant-2: calls $callers, failed $callers, refreshes 1," "$tmp/refused.out" ||
  fail "the refused tenant: not every call failed, or not one refresh"
grep -q '^tenant tenant-2: invalid_grant (HTTP 400)' "$tmp/refused.err" ||
  fail "the refused tenant: no invalid_grant"

# A tenants file others may read: refused before anything is sent.
chmod 644 "$tmp/two.json"
rc=0; timeout 60 "$example" "$tmp/two.json" >/dev/null 2>"$tmp/mode.err" || rc=$?
[ "$rc" -eq 2 ] || fail "a world-readable tenants file: exit $rc, expected 2"
grep -q 'readable by others' "$tmp/mode.err" || fail "a world-readable tenants file: no reason"

no_secrets "$tmp"/run.* "$tmp"/refused.* "$tmp"/mode.err -- $(cut -d' ' -f4,5 "$tmp/tenants.txt")
echo "examples.many_tenants: OK"
