#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# Every program answers --version with "<its name> <version>" and exit status 0, and lists
# --version in its --help. The expected version is the project's (include/nxsys/auth/version.hpp).
# Usage: version.sh VERSION PATH/TO/PROGRAM...
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 VERSION PROGRAM..." >&2; exit 2; }
expected=$1
shift
failed=0
for program in "$@"; do
  name=$(basename "$program")
  rc=0
  out=$(timeout 10 "$program" --version 2>&1) || rc=$?
  if [ "$rc" -ne 0 ] || [ "$out" != "$name $expected" ]; then
    echo "FAIL: $name --version: exit $rc, printed '$out', expected '$name $expected'"
    failed=1
    continue
  fi
  rc=0
  help=$(timeout 10 "$program" --help 2>&1) || rc=$?
  if [ "$rc" -ne 0 ] || ! grep -q -- '--version' <<<"$help"; then
    echo "FAIL: $name --help (exit $rc) does not list --version"
    failed=1
    continue
  fi
  echo "$out"
done
exit $failed
