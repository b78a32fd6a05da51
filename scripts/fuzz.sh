#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# Builds the libFuzzer targets (clang 14, ASan+UBSan) and runs each for a bounded time from the
# seed corpus in fuzz/corpus (copied: the repository's corpus is never modified). Fails on any
# crash or failed check; the reproducer is left in $BUILD_DIR/artifacts.
#   FUZZ_SECONDS (default 60)  time per target
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
build=${BUILD_DIR:-$root/build-fuzz}
seconds=${FUZZ_SECONDS:-60}
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++-14 -DNXSYS_AUTH_BUILD_FUZZERS=ON -DNXSYS_AUTH_WERROR=ON \
  -DNXSYS_AUTH_BUILD_TESTS=OFF -DNXSYS_AUTH_BUILD_BENCHMARKS=OFF -DNXSYS_AUTH_BUILD_TOOLS=OFF \
  >/dev/null
cmake --build "$build" -j "$(nproc)" --target fuzz_token_response fuzz_request
mkdir -p "$build/artifacts"
for target in token_response request; do
  work=$(mktemp -d)
  cp "$root/fuzz/corpus/$target/"* "$work/"
  echo "fuzzing $target for ${seconds}s"
  "$build/fuzz/fuzz_$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$build/artifacts/$target-" "$work" 2>&1 |
    grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|==|ERROR|SUMMARY)" || true
  status=${PIPESTATUS[0]}
  rm -rf "$work"
  if [ "$status" -ne 0 ]; then
    echo "fuzz_$target failed (exit $status); artifacts in $build/artifacts" >&2
    exit 1
  fi
done
