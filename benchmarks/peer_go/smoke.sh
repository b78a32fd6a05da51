#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# CTest benchmarks.oauth2_peer_smoke: one burst of the Go peer (golang.org/x/oauth2) against an
# nxsys-mock-server on 127.0.0.1, then checks its JSON: N results, no error, one token request
# seen by the server (x/oauth2's mutex lets one caller refresh), and the server's own count.
#   smoke.sh MOCK_SERVER PEER [N]    exit 77 (CTest: skipped) when PEER was not built
set -euo pipefail
mock=$1
peer=$2
n=${3:-100}
if [ -z "$peer" ] || [ ! -x "$peer" ]; then
  echo "skipped: no Go peer in this build (scripts/setup.sh installs golang-go and" \
    "golang-golang-x-oauth2-dev; reconfigure and build the target nxsys-go-peer)"
  exit 77
fi
dir=$(mktemp -d)
server_pid=
stop_server() {
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
trap 'stop_server; rm -rf "$dir"' EXIT

"$mock" --port 0 --snake --latency-ms 5 >"$dir/server.out" 2>&1 &
server_pid=$!
port=
for _ in $(seq 100); do # at most 10 s
  port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$dir/server.out")
  [ -n "$port" ] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "nxsys-mock-server exited:"
    cat "$dir/server.out"
    exit 1
  fi
  sleep 0.1
done
[ -n "$port" ] || { echo "nxsys-mock-server did not print its port in 10 s"; exit 1; }

rc=0
timeout 60 "$peer" --url "http://127.0.0.1:$port/nxsys/oauth/token" --n "$n" --bursts 1 \
  --warmup 0 --latency-ms 5 --fresh-iterations 1000 >"$dir/peer.json" || rc=$?
stop_server # prints the server's counters as JSON on one line
cat "$dir/peer.json"
echo "server: $(tail -n 1 "$dir/server.out")"
[ "$rc" -eq 0 ] || { echo "FAIL: the peer exited with status $rc"; exit 1; }

# The peer's JSON is encoding/json's indented output: one field per line.
fail=0
expect() { # expect PATTERN WHAT
  grep -Eq "$1" "$2" || { echo "FAIL: $3"; fail=1; }
}
expect '^ *"n": '"$n"',$' "$dir/peer.json" "burst of $n goroutines"
expect '^ *"results": '"$n"',$' "$dir/peer.json" "$n results"
expect '^ *"errors": 0,$' "$dir/peer.json" "no error"
expect '^ *"server_requests": 1,$' "$dir/peer.json" "one token request seen by the server in the burst"
expect '^ *"count": '"$n"'$' "$dir/peer.json" "$n latencies"
# The warm-up token and the burst's refresh, in the server's own final counters.
expect '"refreshes":2[,}]' "$dir/server.out" "the server answered 2 token requests"
expect '"rfc6749_requests":2[,}]' "$dir/server.out" "both with RFC 6749 names (x/oauth2's request)"
[ "$fail" -eq 0 ] && echo "PASS: $n goroutines, no error, 1 refresh"
exit "$fail"
