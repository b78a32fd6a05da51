#!/usr/bin/env bash
# The main job: installs what it needs, builds the contention benchmark (Release) and runs it
# against the embedded mock token server: nxsys-auth's single flight beside a herd, a serialized
# cache and the timer floor. Prints the comparison table, writes results.json and a plot.
#   OUT_DIR (default ./results)  where results.json, contention.dat and contention.png go
#   extra arguments go to nxsys-contention-bench (see --help), e.g. --latency-ms 0,5,50
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
build=${BUILD_DIR:-$root/build-release}
out=${OUT_DIR:-$root/results}
start=$SECONDS
echo "building nxsys-contention-bench (Release, $build)..."
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc)" --target nxsys-contention-bench | grep -v '^\[' || true
echo "built in $((SECONDS - start)) s; running (the progress line is on stderr)..."
mkdir -p "$out"
rc=0
"$build/benchmarks/nxsys-contention-bench" --latency-ms 5,50 --herd-cap 10000 \
  --json "$out/results.json" --plot-data "$out/contention.dat" "$@" || rc=$?
machine="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(date -u +%Y-%m-%d)"
gnuplot -e "datafile='$out/contention.dat'; outfile='$out/contention.png'; subtitle='L = 5 ms, $machine'" \
  "$root/benchmarks/contention.gp"
echo "wrote $out/results.json and $out/contention.png (total $((SECONDS - start)) s)"
exit "$rc"
