#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# examples/gateway (nxsys-gateway) against nxsys-mock-server with 1-second tokens, rotation and
# reuse detection: 200 requests from parallel curl loops over about 3 s all answered 200, a
# refresh every 0.55 to 0.75 s (never one per request, no reuse of a rotated refresh token),
# every 401 retried once, a failed refresh answered 502 with its name, no secret in any output,
# SIGTERM ending it with exit 0 and its final counters, and --store carrying a rotating chain
# across a restart that has no refresh token (RFC 6749 names, Basic authentication, a scope),
# and --timeline writing a well-formed file whose slices count every answer and whose refresh
# lines are the client's refreshes. Counts and behaviour, no timings.
# Usage: gateway.sh PATH/TO/nxsys-mock-server PATH/TO/nxsys-gateway
set -euo pipefail
server_bin=$1
gateway_bin=$2
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*"
  for f in "$tmp"/*.out "$tmp"/*.err; do
    [ -e "$f" ] && { echo "--- $(basename "$f"):"; tail -n 20 "$f"; }
  done
  exit 1
}

# wait_for_line FILE PATTERN: up to 10 s for a line matching PATTERN in FILE.
wait_for_line() {
  for _ in $(seq 1 100); do
    grep -qs "$2" "$1" && return 0
    sleep 0.1
  done
  return 1
}

# json FILE EXPR: a value from a JSON file, e.g. json stats.json 'd["client"]["refreshes_failed"]'.
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

secret="cs-$RANDOM-$$-client-secret"
rt0="rt-$RANDOM-$$-initial-refresh-token"
client_id=cli-gateway-test

# --- the mock server: 1 s tokens, a new refresh token each time, reuse burns the chain ---
"$server_bin" --port 0 --ttl 1 --rotate --reuse-detection --client-id "$client_id" \
  --client-secret "$secret" --refresh-token "$rt0" >"$tmp/mock.out" 2>"$tmp/mock.err" &
pids+=($!)
wait_for_line "$tmp/mock.out" '^listening on' || fail "the mock server did not start"
mock="http://$(sed -n 's/^listening on //p' "$tmp/mock.out")"

export NXSYS_BASE_API_URL=$mock NXSYS_CLIENT_ID=$client_id NXSYS_CLIENT_SECRET=$secret
export NXSYS_REFRESH_TOKEN=$rt0

# --- usage and configuration errors: exit 2 ---
rc=0; "$gateway_bin" --no-such-flag >/dev/null 2>"$tmp/usage.err" || rc=$?
[ "$rc" -eq 2 ] || fail "a bad flag: exit $rc, expected 2"
grep -q '^usage: nxsys-gateway' "$tmp/usage.err" || fail "a bad flag: no usage on stderr"
rc=0; env -u NXSYS_CLIENT_SECRET "$gateway_bin" >/dev/null 2>"$tmp/noenv.err" || rc=$?
[ "$rc" -eq 2 ] || fail "no NXSYS_CLIENT_SECRET: exit $rc, expected 2"
grep -q NXSYS_CLIENT_SECRET "$tmp/noenv.err" || fail "no NXSYS_CLIENT_SECRET: not named"
rc=0; "$gateway_bin" --timeline-slice-ms 0 >/dev/null 2>"$tmp/slice.err" || rc=$?
[ "$rc" -eq 2 ] || fail "--timeline-slice-ms 0: exit $rc, expected 2"
rc=0; "$gateway_bin" --port 0 --timeline "$tmp/no-such-dir/t.tsv" >/dev/null 2>"$tmp/tl.err" || rc=$?
[ "$rc" -eq 1 ] || fail "--timeline in a missing directory: exit $rc, expected 1"
grep -q -- '--timeline: cannot write' "$tmp/tl.err" || fail "--timeline: no message for a bad file"

# --- the gateway ---
start=$(date +%s.%N)
"$gateway_bin" --port 0 --threads 2 --max-connections 8 --timeline "$tmp/timeline.tsv" \
  --timeline-slice-ms 50 >"$tmp/gateway.out" 2>"$tmp/gateway.err" &
gateway_pid=$!
pids+=("$gateway_pid")
wait_for_line "$tmp/gateway.out" '^listening on http://' || fail "the gateway did not start"
gw=$(sed -n 's/^listening on //p' "$tmp/gateway.out")
echo "mock server $mock, gateway $gw"

# 4 loops × 50 requests, about 60 ms apart: about 3 s, so several 1-second tokens go by.
loops=4
per_loop=50
loop_pids=()
for l in $(seq 1 $loops); do
  (
    for i in $(seq 1 $per_loop); do
      curl -sS --max-time 30 -o /dev/null -w '%{http_code}\n' "$gw/api/orders/$l-$i" || echo fail
      sleep 0.06
    done >"$tmp/codes.$l"
  ) &
  loop_pids+=($!)
  pids+=($!)
done
wait "${loop_pids[@]}" # bounded: each curl by --max-time
total=$((loops * per_loop))
ok=$(cat "$tmp"/codes.* | grep -c '^200$' || true)
echo "answers: $(cat "$tmp"/codes.* | sort | uniq -c | tr '\n' ' ')"
[ "$ok" -eq "$total" ] || fail "$ok of $total requests answered 200"

curl -sS --max-time 10 "$gw/gateway/stats" >"$tmp/gateway-stats.json" || fail "GET /gateway/stats"
curl -sS --max-time 10 "$mock/stats" >"$tmp/mock-stats.json" || fail "GET /stats of the mock"
elapsed=$(python3 -c "import sys,time; print(time.time() - float(sys.argv[1]))" "$start")
echo "gateway: $(cat "$tmp/gateway-stats.json")"
echo "mock:    $(cat "$tmp/mock-stats.json")"

python3 - "$tmp/gateway-stats.json" "$tmp/mock-stats.json" "$elapsed" "$total" <<'EOF' ||
import json, math, sys
g = json.load(open(sys.argv[1]))
m = json.load(open(sys.argv[2]))
elapsed, total = float(sys.argv[3]), int(sys.argv[4])
c, s = g["client"], g["session"]
problems = []
def check(ok, what):
    if not ok: problems.append(what)

check(g["gateway"]["requests"] == total + 1, "gateway requests != %d + this stats request" % total)
check(s["requests"] == total and s["responses"] == total and s["failures"] == 0,
      "session: %d requests, %d responses, %d failures" % (s["requests"], s["responses"], s["failures"]))
# Every 401 the API gave was retried once by the session (and the retry got a 200, above).
check(m["api_unauthorized"] == s["unauthorized_retries"], "401s not matched by retries")
check(m["api_requests"] == total + s["unauthorized_retries"], "API requests != requests + retries")
# A 1 s token is refreshed from 0.55 s (refresh-ahead) or 0.75 s on: about 1.3 to 1.8 per
# second of load. Bounds on counts only: at least one, and far fewer than one per request.
bound = math.ceil(2 * elapsed) + 2
check(c["refreshes_failed"] == 0, "refreshes failed: %s" % c["refreshes_failed_by_reason"])
check(1 <= m["refreshes"] <= bound, "%d refreshes in %.1f s (bound %d)" % (m["refreshes"], elapsed, bound))
check(m["refreshes"] >= 2, "a 1 s token was not refreshed during %.1f s of requests" % elapsed)
check(c["refreshes_succeeded"] == m["refreshes"], "client and server disagree on refreshes")
check(c["refresh_tokens_rotated"] == m["refreshes"], "not every refresh rotated")
check(m["errors"] == 0, "the token endpoint answered %d errors" % m["errors"])
check(m["reuse_detected"] == 0, "a rotated-away refresh token was presented again")
check(s["connections_opened"] <= 8, "more connections than --max-connections")
if problems:
    print("\n".join(problems)); sys.exit(1)
print("refreshes %d in %.1f s, %d 401s retried, %d API connections"
      % (m["refreshes"], elapsed, s["unauthorized_retries"], s["connections_opened"]))
EOF
  fail "the counters are wrong"

# --- SIGTERM: a graceful stop, exit 0, the final counters as the last line on stdout ---
kill -TERM "$gateway_pid"
rc=0
for _ in $(seq 1 300); do kill -0 "$gateway_pid" 2>/dev/null || break; sleep 0.1; done
wait "$gateway_pid" || rc=$?
[ "$rc" -eq 0 ] || fail "SIGTERM: exit $rc, expected 0"
tail -n 1 "$tmp/gateway.out" >"$tmp/final.json"
python3 - "$tmp/final.json" "$total" <<'EOF' || fail "SIGTERM: no final counters on stdout"
import json, sys
d = json.load(open(sys.argv[1]))
assert set(d) == {"gateway", "client", "session"}, d
assert d["session"]["requests"] == int(sys.argv[2]), d
assert d["gateway"]["connections_open"] == 0, d
EOF

# --- --timeline: well-formed, and its counts add up to the final counters ---
python3 - "$tmp/timeline.tsv" "$tmp/final.json" <<'EOF' || fail "--timeline: the file is wrong"
import json, math, sys
d = json.load(open(sys.argv[2]))
lines = open(sys.argv[1]).read().split("\n")
assert lines[-1] == "", "the file does not end with a newline"
lines = lines[:-1]
assert lines[0].startswith("# nxsys-gateway timeline: slices of 50 ms"), lines[0]
assert lines[1].split("\t")[:3] == ["# slice", "t_s", "requests"], lines[1]
assert lines[2].split("\t")[:2] == ["# refresh", "t_s"], lines[2]
slices, refreshes = [], []
for line in lines[3:-1]:
    f = line.split("\t")
    if f[0] == "slice":
        assert len(f) == 9, line
        t, n, per_s = float(f[1]), int(f[2]), float(f[3])
        p = [float(x) for x in f[4:8]]
        assert round(t * 1000) == 50 * len(slices), "slice %d starts at %s" % (len(slices), f[1])
        assert per_s == n * 20, line
        if n == 0:
            assert all(math.isnan(x) for x in p), line
        else:
            assert 0 <= p[0] <= p[1] <= p[2] <= p[3], line
        assert 0 <= int(f[8]) <= n, line
        slices.append(n)
    elif f[0] == "refresh":
        assert len(f) == 6 and float(f[2]) >= 0 and f[3] in ("0", "1") and f[5] == "ok", line
        refreshes.append(float(f[1]))
    else:
        raise AssertionError("unexpected line: " + line)
assert refreshes == sorted(refreshes), "refreshes out of order"
total = "# total: %d requests, %d refreshes, %d slices" % (sum(slices), len(refreshes), len(slices))
assert lines[-1] == total, (lines[-1], total)
# Every request the gateway read was answered and counted once: the 200, and GET /gateway/stats.
assert sum(slices) == d["gateway"]["requests"], (sum(slices), d["gateway"]["requests"])
c = d["client"]
assert len(refreshes) == c["refreshes_succeeded"] + c["refreshes_failed"] >= 2, (len(refreshes), c)
print("timeline: %d answers in %d slices, %d refreshes" % (sum(slices), len(slices), len(refreshes)))
EOF

# --- a refresh token the server refuses: 502 with the error's name and the server's words ---
NXSYS_REFRESH_TOKEN=rt-refused-$$ "$gateway_bin" --port 0 --threads 1 \
  >"$tmp/refused.out" 2>"$tmp/refused.err" &
refused_pid=$!
pids+=("$refused_pid")
wait_for_line "$tmp/refused.out" '^listening on http://' || fail "the second gateway did not start"
gw2=$(sed -n 's/^listening on //p' "$tmp/refused.out")
code=$(curl -sS --max-time 30 -o "$tmp/refused-body.json" -w '%{http_code}' "$gw2/api/orders")
echo "refused refresh token: HTTP $code $(cat "$tmp/refused-body.json")"
[ "$code" = 502 ] || fail "a refused refresh token: HTTP $code, expected 502"
[ "$(json "$tmp/refused-body.json" 'd["error"]')" = invalid_grant ] || fail "error is not invalid_grant"
kill -INT "$refused_pid"
rc=0; wait "$refused_pid" || rc=$?
[ "$rc" -eq 0 ] || fail "SIGINT: exit $rc, expected 0"

# --- --store across a restart, with the RFC 6749 dialect, Basic authentication and a scope ---
# A second mock server takes snake_case names and rotates with reuse detection: a gateway
# restarted without --store would present the rotated-away initial token and burn the chain.
"$server_bin" --port 0 --ttl 1 --rotate --reuse-detection --snake --client-id "$client_id" \
  --client-secret "$secret" --refresh-token "$rt0" >"$tmp/mock2.out" 2>"$tmp/mock2.err" &
pids+=($!)
wait_for_line "$tmp/mock2.out" '^listening on' || fail "the second mock server did not start"
mock2="http://$(sed -n 's/^listening on //p' "$tmp/mock2.out")"
store="$tmp/tokens.json"

# run_stored NAME [ENV...]: a gateway on --store, 12 requests over about 1.5 s, then SIGTERM.
run_stored() {
  local name=$1; shift
  env "$@" "$gateway_bin" --port 0 --threads 1 --base-url "$mock2" --store "$store" \
    --dialect rfc6749 --basic-auth --scope "orders:read" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  local pid=$!
  pids+=("$pid")
  wait_for_line "$tmp/$name.out" '^listening on http://' || fail "$name did not start"
  local g
  g=$(sed -n 's/^listening on //p' "$tmp/$name.out")
  for i in $(seq 1 12); do
    curl -sS --max-time 30 -o /dev/null -w '%{http_code}\n' "$g/api/orders/$name-$i" || echo fail
    sleep 0.12
  done >"$tmp/$name.codes"
  kill -TERM "$pid"
  local rc=0
  wait "$pid" || rc=$?
  [ "$rc" -eq 0 ] || fail "$name: exit $rc after SIGTERM"
  [ "$(grep -c '^200$' "$tmp/$name.codes")" -eq 12 ] || fail "$name: not every request answered 200"
}
run_stored stored1 NXSYS_CLIENT_ID="$client_id"
[ -f "$store" ] || fail "--store: no file written"
[ "$(stat -c %a "$store")" = 600 ] || fail "--store: mode $(stat -c %a "$store"), expected 600"
! grep -qF -- "$rt0" "$store" || fail "--store: the initial refresh token was not replaced"
curl -sS --max-time 10 "$mock2/stats" >"$tmp/mock2-before.json" || fail "GET /stats of mock 2"
# The restart gets no refresh token at all: only the store can carry the chain on.
run_stored stored2 -u NXSYS_REFRESH_TOKEN
curl -sS --max-time 10 "$mock2/stats" >"$tmp/mock2-stats.json" || fail "GET /stats of mock 2"
echo "store restart: mock $(cat "$tmp/mock2-stats.json")"
python3 - "$tmp/mock2-before.json" "$tmp/mock2-stats.json" <<'PYEND' || fail "--store: the counters are wrong"
import json, sys
before = json.load(open(sys.argv[1]))["refreshes"]
m = json.load(open(sys.argv[2]))
assert m["reuse_detected"] == 0, "a rotated-away refresh token was presented again"
assert m["errors"] == 0, m
assert before >= 1 and m["refreshes"] > before, "the restarted gateway did not refresh"
assert m["basic_auth_requests"] == m["refreshes"], "not every refresh used Basic authentication"
PYEND

# --- no secret anywhere: client secret, refresh tokens (given or rotated), access tokens ---
all=$(cat "$tmp"/gateway.out "$tmp"/gateway.err "$tmp"/refused.out "$tmp"/refused.err \
  "$tmp"/refused-body.json "$tmp"/gateway-stats.json "$tmp"/stored?.out "$tmp"/stored?.err)
for s in "$secret" "$rt0" "rt-refused-$$"; do
  ! grep -qF -- "$s" <<<"$all" || fail "a secret appeared in the gateway's output"
done
! grep -qE 'refresh-[0-9]' <<<"$all" || fail "a rotated refresh token appeared in the output"
! grep -qE 'at-[0-9]+-[0-9a-f]{16}' <<<"$all" || fail "an access token appeared in the output"
echo "nxsys-gateway: OK"
