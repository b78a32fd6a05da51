#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# examples/gateway under load: wrk against nxsys-gateway, with nxsys-mock-server behind it
# issuing 1-second tokens (rotated, reuse detection on). Installs what it needs, builds Release,
# runs wrk, then prints wrk's report, the token endpoint's counters, the gateway's final counters
# and a summary: requests/s, refreshes seen by the token endpoint against the expected number,
# 401s retried, non-2xx answers. Writes the whole report to $OUT_DIR/gateway.txt.
# The gateway also writes a timeline (--timeline: requests and latency percentiles per slice,
# each refresh marked), drawn by benchmarks/gateway.gp into $OUT_DIR/gateway.png, and the run's
# targets go to $OUT_DIR/gateway.json for nxsys-bench-summary. Exit status 1 when a correctness
# target failed (more than one refresh for a token generation, a failed or refused refresh).
#   DURATION (default 30)          seconds of load
#   CONNECTIONS (default 256)      wrk's concurrent connections
#   WRK_THREADS (default 2)        wrk's threads
#   GATEWAY_THREADS (default 1)    nxsys-gateway --threads: on 2 cores, 1 for the gateway and
#   MOCK_THREADS (default 1)       the mock server together, 1 for wrk (roughly: nothing pins)
#   MAX_CONNECTIONS (default 64)   nxsys-gateway --max-connections (its pool to the API)
#   SLICE_MS (default 100)         the timeline's slices
#   BUILD_DIR (default ./build-release), OUT_DIR (default ./results)
#   NO_BUILD=1                     use the programs already built (scripts/demo.sh built them)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
duration=${DURATION:-30}
connections=${CONNECTIONS:-256}
wrk_threads=${WRK_THREADS:-2}
gateway_threads=${GATEWAY_THREADS:-1}
mock_threads=${MOCK_THREADS:-1}
max_connections=${MAX_CONNECTIONS:-64}
slice_ms=${SLICE_MS:-100}
ttl=1
build=${BUILD_DIR:-$root/build-release}
out=${OUT_DIR:-$root/results}

if [ -z "${NO_BUILD:-}" ]; then
  "$root/scripts/setup.sh"
  echo "building nxsys-gateway and nxsys-mock-server (Release, $build)..."
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build" -j "$(nproc)" --target nxsys-gateway nxsys-mock-server | grep -v '^\[' || true
fi

mkdir -p "$out"
report=$out/gateway.txt
timeline=$out/gateway-timeline.tsv
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
  --timeline "$timeline" --timeline-slice-ms "$slice_ms" >"$tmp/gateway.out" 2>"$tmp/gateway.err" &
gateway_pid=$!
pids+=("$gateway_pid")
wait_for_line "$tmp/gateway.out" '^listening on http://'
gateway=$(sed -n 's/^listening on //p' "$tmp/gateway.out")

machine="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
machine+=", load average $(cut -d" " -f1-3 /proc/loadavg)"
say "nxsys-gateway under load, $(date -u '+%Y-%m-%d %H:%M UTC'), $machine"
say "mock server: --ttl $ttl --rotate --reuse-detection --threads $mock_threads ($mock)"
say "gateway:     --threads $gateway_threads --max-connections $max_connections --timeline-slice-ms $slice_ms ($gateway)"
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
summary_rc=0
python3 - "$tmp/wrk.txt" "$tmp/mock-stats.json" "$tmp/gateway-stats.json" "$timeline" \
  "$out/gateway.json" "$ttl" "$connections" <<'EOF' | tee -a "$report" || summary_rc=$?
import json, math, re, statistics, sys
wrk = open(sys.argv[1]).read()
m = json.load(open(sys.argv[2]))
g = json.load(open(sys.argv[3]))
timeline_path, json_path = sys.argv[4], sys.argv[5]
ttl, connections = float(sys.argv[6]), int(sys.argv[7])

rps = float(re.search(r"Requests/sec:\s+([\d.]+)", wrk).group(1))
total, took = re.search(r"(\d+) requests in ([\d.]+)(m?s)", wrk).groups()[:2]
total, took = int(total), float(took)
def ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
p99 = ms(*re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", wrk, re.M).groups())
non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", wrk)
non2xx = int(non2xx.group(1)) if non2xx else 0
errors = re.search(r"Socket errors:.*", wrk)

# The timeline: one line per slice, one per finished refresh (see its header comments).
slices, marks = [], []
for line in open(timeline_path):
    f = line.rstrip("\n").split("\t")
    if f[0] == "slice":
        slices.append((float(f[1]), int(f[2]), float(f[3]), float(f[6]), int(f[8])))
    elif f[0] == "refresh":
        marks.append((float(f[1]), float(f[2]) / 1000, f[3] == "1", f[5]))
slice_s = slices[1][0] - slices[0][0]
answered = sum(s[1] for s in slices)
busy = [i for i, s in enumerate(slices) if s[1] > 0]
# Slices wholly inside the load: the first and the last busy ones are partly idle.
steady = slices[busy[0] + 1:busy[-1]] if len(busy) > 2 else []
def refreshed(s):
    # A background refresh ran during the slice (from its start to its end).
    return any(a and t - lat < s[0] + slice_s and t >= s[0] for t, lat, a, _ in marks)
with_r = [s[3] for s in steady if refreshed(s) and s[1] > 0]
without_r = [s[3] for s in steady if not refreshed(s) and s[1] > 0]
med = lambda xs: statistics.median(xs) if xs else float("nan")
worst = max(steady, key=lambda s: s[3]) if steady else None

# The client refreshes a token at 1 - 0.25 (leeway_max_fraction) of its lifetime, and under
# continuous load starts a background refresh 0.2 (refresh_ahead_fraction) of the lifetime
# before that: every 0.55 s for a 1 s token (plus the refresh's round trip), the first one when
# the first request arrives.
# At most one per 0.55 s; the first call after the point starts the next, a little later under
# load (2 to 3 % on the development VM), so at least 95 % of that. Far fewer would be tokens
# refreshed at 0.75 s or after they expired, more would be extra refreshes.
at_refresh, at_ahead = ttl * 0.75, ttl * 0.55
expected = 1 + math.floor(took / at_ahead)
expected_min = math.floor(0.95 * expected)
seen = m["refreshes"]
c = g["client"]
# Between the refreshes' starts: the refresh-ahead point counts from when a refresh was sent.
ok_marks = [t - lat for t, lat, _, r in marks if r == "ok"]
gaps = [b - a for a, b in zip(ok_marks, ok_marks[1:])]
ahead = sum(1 for _, _, a, _ in marks if a)

print("summary: %.0f requests/s (%d requests in %gs), p99 %.2f ms (wrk), %d refreshes seen by "
      "the token endpoint (expected %d to %d: at most 1 + %gs / %gs refresh-ahead point; %.0f "
      "without refresh-ahead), %d 401s retried, %d non-2xx, %d reuse detected, %d refresh "
      "failures%s"
      % (rps, total, took, p99, seen, expected_min, expected, took, at_ahead, took / at_refresh,
         g["session"]["unauthorized_retries"], non2xx, m["reuse_detected"],
         c["refreshes_failed"], "; " + errors.group(0) if errors else ""))
print("timeline: %d answers in %d slices of %.0f ms (wrk counted %d: %+d, answers in flight "
      "when wrk stopped), %d answered >= 400; per-slice requests/s median %.0f (min %.0f); "
      "per-slice p99 median %.2f ms, worst %.2f ms at %.1f s; slices with a background refresh: "
      "p99 median %.2f ms (%d slices) vs %.2f ms without (%d)"
      % (answered, len(slices), slice_s * 1000, total, answered - total,
         sum(s[4] for s in slices), med([s[2] for s in steady]),
         min((s[2] for s in steady), default=float("nan")), med([s[3] for s in steady]),
         worst[3] if worst else float("nan"), worst[0] if worst else float("nan"),
         med(with_r), len(with_r), med(without_r), len(without_r)))
print("refreshes in the timeline: %d (%d in the background), %.3f to %.3f s from one's start "
      "to the next's"
      % (len(marks), ahead, min(gaps, default=float("nan")), max(gaps, default=float("nan"))))

# The targets (benchmarks/bench_util.hpp's format, for nxsys-bench-summary).
targets = []
def target(name, measured, goal, ok, correctness=False):
    targets.append({"name": name, "measured": measured, "goal": goal, "correctness": correctness,
                    "result": "PASS" if ok else ("FAIL" if correctness else "MISS")})
    print("  %s  %s: %s (target %s)" % (targets[-1]["result"], name, measured, goal))
print("targets:")
target("wrk %.0f s: requests/s, p99; timeline total - wrk's" % took,
       "%.0f/s, %.2f ms; %+d" % (rps, p99, answered - total),
       "0 to +%d (in flight)" % connections,
       total <= answered <= total + connections)
# One refresh per token generation: with rotation and reuse detection, a second refresh of a
# generation presents a rotated-away refresh token (reuse_detected, an error); no refresh starts
# before the previous token reached its refresh-ahead point; every refresh the endpoint saw is one the client and the
# timeline saw, and rotated.
one_each = (m["reuse_detected"] == 0 and m["errors"] == 0 and c["refreshes_failed"] == 0
            and seen == c["refreshes_succeeded"] == len(ok_marks) == len(marks)
            and c["refresh_tokens_rotated"] == seen
            and all(gap >= 0.95 * at_ahead for gap in gaps))
target("one refresh per token generation",
       "%d, %d reuse, %d errors, >= %.3f s apart" % (seen, m["reuse_detected"],
                                                     m["errors"] + c["refreshes_failed"],
                                                     min(gaps, default=float("nan"))),
       "one each", one_each, True)
target("refreshes seen by the token endpoint vs expected", "%d" % seen,
       "%d to %d" % (expected_min, expected), expected_min <= seen <= expected)
target("slice p99 with a background refresh / without",
       "%.2f / %.2f ms" % (med(with_r), med(without_r)), "<= 1.25x",
       bool(with_r) and bool(without_r) and med(with_r) <= 1.25 * med(without_r))
target("answers >= 400, 401s retried",
       "%d, %d" % (non2xx, g["session"]["unauthorized_retries"]), "0, 0",
       non2xx == 0 and g["session"]["unauthorized_retries"] == 0, True)
with open(json_path, "w") as f:
    json.dump({"benchmark": "gateway", "targets": targets,
               "figures": {"requests_per_s": rps, "requests": total, "p99_ms": p99,
                           "timeline_requests": answered, "refreshes": seen,
                           "refreshes_expected": [expected_min, expected], "seconds": took}}, f)
sys.exit(1 if any(t["result"] == "FAIL" for t in targets) else 0)
EOF

if command -v gnuplot >/dev/null; then
  wrk_rps=$(sed -n 's/^Requests\/sec: *//p' "$tmp/wrk.txt")
  sub="$(date -u +%Y-%m-%d), $machine; wrk -t$wrk_threads -c$connections -d${duration}s;"
  sub+=" gateway --threads $gateway_threads --max-connections $max_connections; ${ttl}-second tokens"
  gnuplot -e "datafile='$timeline'; outfile='$out/gateway.png'; subtitle='$sub'; wrk_rps=$wrk_rps" \
    "$root/benchmarks/gateway.gp" && say "plot: $out/gateway.png"
fi
say "(report written to $report, timeline to $timeline, targets to $out/gateway.json)"
exit "$summary_rc"
