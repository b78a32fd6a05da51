#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# The main job: installs what it needs, builds the benchmarks and the mock server (Release) and
# runs the refresh-contention benchmark against the embedded mock token server (nxsys-auth's
# single flight beside a herd, a serialized cache, the timer floor and, when the Go peer was built,
# the real golang.org/x/oauth2 ReuseTokenSource), then a short fast-path
# and sustained-load run, then the gateway example under wrk with its timeline (requests/s and
# p99 over time, each refresh marked). Prints the tables, writes results.json and two plots.
#   OUT_DIR (default ./results)  where the JSON files, contention.dat, contention.png, the
#                                gateway's timeline, report and gateway.png go
#   GATEWAY_SECONDS (default 15) the gateway's run under wrk (scripts/gateway-load.sh); 0: none
#   extra arguments go to nxsys-contention-bench (see --help), e.g. --latency-ms 0,5,50
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
build=${BUILD_DIR:-$root/build-release}
out=${OUT_DIR:-$root/results}
start=$SECONDS
echo "building the benchmarks, nxsys-mock-server and nxsys-gateway (Release, $build)..."
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc)" --target nxsys-contention-bench nxsys-fast-path-bench \
  nxsys-sustained-bench nxsys-bench-summary nxsys-mock-server nxsys-gateway | grep -v '^\[' || true
echo "built in $((SECONDS - start)) s; running (the progress line is on stderr)..."
mkdir -p "$out"
rc=0
"$build/benchmarks/nxsys-contention-bench" --latency-ms 5,50 --herd-cap 10000 \
  --json "$out/results.json" --plot-data "$out/contention.dat" "$@" || rc=$?
machine="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(date -u +%Y-%m-%d)"
gnuplot -e "datafile='$out/contention.dat'; outfile='$out/contention.png'; subtitle='L = 5 ms, $machine'" \
  "$root/benchmarks/contention.gp"
echo
echo "fast path (short run; docs/benchmarks.md: --benchmark_min_time=0.5):"
"$build/benchmarks/nxsys-fast-path-bench" --benchmark_min_time=0.05 --json "$out/fast-path.json" \
  2>/dev/null | sed -n '/^fresh-token read/,$p' || rc=1
echo
echo "sustained load (5 s; docs/benchmarks.md: 30 s):"
"$build/benchmarks/nxsys-sustained-bench" --seconds 5 --json "$out/sustained.json" \
  2>/dev/null || rc=1
summaries=("$out/results.json" "$out/fast-path.json")
gateway_seconds=${GATEWAY_SECONDS:-15}
wrote_gateway=
if [ "$gateway_seconds" -gt 0 ]; then
  echo
  echo "the gateway example under wrk, 1-second tokens ($gateway_seconds s; docs/benchmarks.md: 30 s):"
  gateway_start=$SECONDS
  # A stale file must not stand in for a run that failed before writing its own.
  rm -f "$out/gateway.json"
  DURATION=$gateway_seconds NO_BUILD=1 BUILD_DIR=$build OUT_DIR=$out \
    "$root/scripts/gateway-load.sh" >"$out/gateway-load.log" 2>&1 || rc=1
  grep -E '^(summary|timeline|refreshes in the timeline):' "$out/gateway-load.log" ||
    tail -n 20 "$out/gateway-load.log"
  echo "(gateway run: $((SECONDS - gateway_start)) s; the whole report in $out/gateway.txt)"
  summaries+=("$out/gateway.json")
  wrote_gateway=", gateway.png, gateway-timeline.tsv, gateway.txt"
fi
# One table of every target of this run, misses included.
"$build/benchmarks/nxsys-bench-summary" "${summaries[@]}" || rc=1
echo
echo "wrote $out/results.json, $out/contention.png, fast-path.json, sustained.json$wrote_gateway (total $((SECONDS - start)) s)"
exit "$rc"
