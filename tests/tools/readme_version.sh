#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# The README names the version the tree builds (version.hpp), and the find_package() version
# its compatibility sentence uses: a bump that forgets the front door fails here.
# Usage: readme_version.sh SOURCE_DIR
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 SOURCE_DIR" >&2; exit 2; }
source=$1
part() { sed -n "s/^#define NXSYS_AUTH_VERSION_$1 \([0-9][0-9]*\)$/\1/p" "$source/include/nxsys/auth/version.hpp"; }
major=$(part MAJOR) minor=$(part MINOR) patch=$(part PATCH)
[ -n "$major" ] && [ -n "$minor" ] && [ -n "$patch" ] || { echo "FAIL: no version in version.hpp"; exit 1; }
failed=0
for wanted in "Version $major.$minor.$patch " "find_package(nxsys_auth $major.$minor)\` accepts $major.$minor.x only"; do
  if grep -qF -- "$wanted" "$source/README.md"; then
    echo "ok: README.md says '$wanted'"
  else
    echo "FAIL: README.md does not say '$wanted' (version.hpp: $major.$minor.$patch)"
    failed=1
  fi
done
exit $failed
