#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# examples/gateway under load: wrk against nxsys-gateway, with nxsys-mock-server behind it
# issuing 1-second tokens (rotated, reuse detection on). Installs what it needs, builds Release,
# runs wrk, then prints wrk's report, the token endpoint's counters, the gateway's final counters
# and a summary: requests/s, refreshes seen by the token endpoint against the expected number,
# 401s retried, non-2xx answers. Writes the whole report to $OUT_DIR/gateway.txt.
#   DURATION (default 30)          seconds of load
#   CONNECTIONS (default 256)      wrk's concurrent connections
#   WRK_THREADS (default 2)        wrk's threads
#   GATEWAY_THREADS (default 1)    nxsys-gateway --threads: on 2 cores, 1 for the gateway and
#   MOCK_THREADS (default 1)       the mock server together, 1 for wrk (roughly: nothing pins)
#   MAX_CONNECTIONS (default 64)   nxsys-gateway --max-connections (its pool to the API)
#   BUILD_DIR (default ./build-release), OUT_DIR (default ./results)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
duration=${DURATION:-30}
connections=${CONNECTIONS:-256}
wrk_threads=${WRK_THREADS:-2}
gateway_threads=${GATEWAY_THREADS:-1}
mock_threads=${MOCK_THREADS:-1}
max_connections=${MAX_CONNECTIONS:-64}
ttl=1
build=${BUILD_DIR:-$root/build-release}
out=${OUT_DIR:-$root/results}

"$root/scripts/setup.sh"
echo "building nxsys-gateway and nxsys-mock-server (Release, $build)..."
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc)" --target nxsys-gateway nxsys-mock-server | grep -v '^\[' || true

mkdir -p "$out"
report=$out/gateway.txt
: >"$report"
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

say() { printf '%s\n' "$*" | tee -a "$report"; }
show() { tee -a "$report" <"$1"; }
# wait_for_line FILE PATTERN: up to 10 s.
wait_for_line() {
  for _ in $(seq 1 100); do
    grep -qs "$2" "$1" && return 0
    sleep 0.1
  done
  echo "gateway-load: no '$2' in $1" >&2
  cat "$1" >&2
  return 1
}

# Secrets of this run only: nothing real, but handled as a real deployment would (environment).
secret="load-secret-$RANDOM$RANDOM"
rt0="load-refresh-$RANDOM$RANDOM"
"$build/tools/nxsys-mock-server" --port 0 --ttl "$ttl" --rotate --reuse-detection \
  --threads "$mock_threads" --client-id load-client --client-secret "$secret" \
  --refresh-token "$rt0" >"$tmp/mock.out" &
pids+=($!)
wait_for_line "$tmp/mock.out" '^listening on'
mock="http://$(sed -n 's/^listening on //p' "$tmp/mock.out")"

NXSYS_BASE_API_URL=$mock NXSYS_CLIENT_ID=load-client NXSYS_CLIENT_SECRET=$secret \
  NXSYS_REFRESH_TOKEN=$rt0 "$build/examples/nxsys-gateway" --port 0 \
  --threads "$gateway_threads" --max-connections "$max_connections" \
  >"$tmp/gateway.out" 2>"$tmp/gateway.err" &
gateway_pid=$!
pids+=("$gateway_pid")
wait_for_line "$tmp/gateway.out" '^listening on http://'
gateway=$(sed -n 's/^listening on //p' "$tmp/gateway.out")

machine="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
machine+=", load average $(cut -d" " -f1-3 /proc/loadavg)"
say "nxsys-gateway under load, $(date -u '+%Y-%m-%d %H:%M UTC'), $machine"
say "mock server: --ttl $ttl --rotate --reuse-detection --threads $mock_threads ($mock)"
say "gateway:     --threads $gateway_threads --max-connections $max_connections ($gateway)"
say "wrk:         -t$wrk_threads -c$connections -d${duration}s --latency $gateway/api/orders"
say ""

wrk -t"$wrk_threads" -c"$connections" -d"${duration}s" --latency "$gateway/api/orders" \
  >"$tmp/wrk.txt"
show "$tmp/wrk.txt"

# The counters once the load is over: nothing asks for a token any more, so no refresh follows.
curl -sS --max-time 10 "$mock/stats" >"$tmp/mock-stats.json"
kill -TERM "$gateway_pid"
rc=0
wait "$gateway_pid" || rc=$?
[ "$rc" -eq 0 ] || { echo "gateway-load: the gateway exited with $rc" >&2; cat "$tmp/gateway.err" >&2; }
tail -n 1 "$tmp/gateway.out" >"$tmp/gateway-stats.json"

say ""
say "token endpoint and API (mock server GET /stats):"
python3 - "$tmp/mock-stats.json" <<'EOF' | tee -a "$report"
import json, sys
m = json.load(open(sys.argv[1]))
for k in ("refreshes", "errors", "reuse_detected", "api_requests", "api_unauthorized",
          "connections", "max_in_flight"):
    print("  %-18s %s" % (k, m[k]))
EOF
say "gateway final counters (printed on SIGTERM):"
python3 - "$tmp/gateway-stats.json" <<'EOF' | tee -a "$report"
import json, sys
d = json.load(open(sys.argv[1]))
for part in ("gateway", "client", "session"):
    items = ", ".join("%s %s" % (k, v) for k, v in d[part].items())
    print("  %s: %s" % (part, items))
EOF
if [ -s "$tmp/gateway.err" ]; then
  say "gateway stderr:"
  show "$tmp/gateway.err"
fi

say ""
python3 - "$tmp/wrk.txt" "$tmp/mock-stats.json" "$tmp/gateway-stats.json" "$duration" "$ttl" \
  <<'EOF' | tee -a "$report"
import json, re, sys
wrk = open(sys.argv[1]).read()
m = json.load(open(sys.argv[2]))
g = json.load(open(sys.argv[3]))
duration, ttl = float(sys.argv[4]), float(sys.argv[5])
rps = re.search(r"Requests/sec:\s+([\d.]+)", wrk).group(1)
total, took = re.search(r"(\d+) requests in ([\d.]+)s", wrk).groups()
non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", wrk)
errors = re.search(r"Socket errors:.*", wrk)
# The client refreshes a token at 1 - 0.25 (leeway_max_fraction) of its lifetime, and under
# continuous load starts a background refresh 0.2 (refresh_ahead_fraction) of the lifetime
# before that: every 0.55 s for a 1 s token, plus the refresh's round trip.
at_refresh, at_ahead = ttl * 0.75, ttl * 0.55
print("summary: %s requests/s (%s requests in %gs), %d refreshes seen by the token endpoint "
      "(expected ~%.0f: %gs / %gs refresh-ahead point; %.0f without refresh-ahead), "
      "%d 401s retried, %s non-2xx, %d reuse detected, %d refresh failures%s"
      % (rps, total, float(took), m["refreshes"], duration / at_ahead, duration, at_ahead,
         duration / at_refresh, g["session"]["unauthorized_retries"],
         non2xx.group(1) if non2xx else "0", m["reuse_detected"],
         g["client"]["refreshes_failed"], "; " + errors.group(0) if errors else ""))
EOF
say "(report written to $report)"
