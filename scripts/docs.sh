#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# Builds the API reference (HTML) from the public headers, README.md, CHANGELOG.md and docs/ with
# doxygen (installed through scripts/setup.sh when missing). Fails on any doxygen warning: an
# undocumented public symbol, parameter or return value is an error.
#   scripts/docs.sh                      # into build-docs/html
#   DOCS_DIR=/tmp/ref scripts/docs.sh    # into /tmp/ref/html
# DOXYGEN names the program (CTest's docs.reference passes the one CMake found).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
doxygen=${DOXYGEN:-doxygen}
command -v "$doxygen" >/dev/null || "$root/scripts/setup.sh" doxygen
out=${DOCS_DIR:-$root/build-docs}
mkdir -p "$out"
out=$(cd "$out" && pwd)
version=$(sed -nE 's/^#define NXSYS_AUTH_VERSION_(MAJOR|MINOR|PATCH) +([0-9]+)$/\2/p' \
  "$root/include/nxsys/auth/version.hpp" | paste -sd.)
rm -rf "$out/html"
log="$out/doxygen-warnings.log"
# doxygen resolves INPUT relative to its working directory. FAIL_ON_WARNINGS sets its exit status
# only at the end; the warnings themselves (stderr) are counted too, in case a version does not.
status=0
(cd "$root" && NXSYS_AUTH_DOCS_DIR="$out" NXSYS_AUTH_DOCS_VERSION="$version" "$doxygen" Doxyfile) \
  2>"$log" || status=$?
cat "$log" >&2
warnings=$(grep -cE '(warning|error):' "$log" || true)
if ((status != 0 || warnings != 0)); then
  echo "docs: ${warnings} doxygen warning(s), exit status ${status} (log: $log)" >&2
  exit 1
fi
echo "docs: $out/html/index.html (0 warnings)"
