#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# Builds nxsys-auth and runs every test through CTest.
#   scripts/test.sh                  # release-with-debug-info build in build/
#   SANITIZE=address scripts/test.sh # ASan+UBSan build in build-address/
#   SANITIZE=thread LABELS=thread_safety scripts/test.sh
# Extra environment: CXX (compiler), WERROR=ON, BUILD_DIR, LABELS (a CTest label regex),
# EXCLUDE_LABELS (a CTest label regex of tests not to run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
sanitize=${SANITIZE:-}
build=${BUILD_DIR:-$root/build${sanitize:+-$sanitize}}
cmake -S "$root" -B "$build" -G Ninja \
  -DNXSYS_AUTH_SANITIZE="$sanitize" -DNXSYS_AUTH_WERROR="${WERROR:-OFF}" \
  ${CXX:+-DCMAKE_CXX_COMPILER="$CXX"} >/dev/null
cmake --build "$build" -j "$(nproc)"
args=(--test-dir "$build" --output-on-failure -j "$(nproc)")
[ -n "${LABELS:-}" ] && args+=(-L "$LABELS")
[ -n "${EXCLUDE_LABELS:-}" ] && args+=(-LE "$EXCLUDE_LABELS")
ctest "${args[@]}"
