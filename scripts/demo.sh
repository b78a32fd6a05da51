#!/usr/bin/env bash
# The main job: builds nxsys-auth and runs the refresh-contention demo against the embedded
# mock token server. Pass --quick for a shorter run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
build=${BUILD_DIR:-$root/build-release}
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc)" --target nxsys-contention-demo
"$build/benchmarks/nxsys-contention-demo" "$@"
