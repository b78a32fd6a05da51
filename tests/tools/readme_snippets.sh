#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# Every ```cpp block of a Markdown file is a complete translation unit that compiles against the
# library's headers: the README's code cannot drift from the API. (Fragments go in ```text or
# plain ``` blocks.) Fails when there is no block at all, so that a renamed fence cannot make
# the test pass by checking nothing.
# Usage: readme_snippets.sh FILE.md WORK_DIR COMPILER [COMPILER FLAGS...]
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 FILE.md WORK_DIR COMPILER [FLAGS...]" >&2; exit 2; }
markdown=$1 work=$2
shift 2
rm -rf "$work"
mkdir -p "$work"
awk -v dir="$work" '
  /^```cpp[[:space:]]*$/ { n++; file = sprintf("%s/snippet_%02d.cpp", dir, n); inside = 1; next }
  /^```/ && inside { inside = 0; close(file); next }
  inside { print > file }
' "$markdown"
shopt -s nullglob
snippets=("$work"/snippet_*.cpp)
[ ${#snippets[@]} -gt 0 ] || { echo "FAIL: no \`\`\`cpp block in $markdown"; exit 1; }
failed=0
for s in "${snippets[@]}"; do
  if "$@" -std=c++20 -fsyntax-only "$s"; then
    echo "ok: $(basename "$s") ($(wc -l <"$s") lines)"
  else
    echo "FAIL: $(basename "$s") of $markdown does not compile (kept in $work)"
    failed=1
  fi
done
exit $failed
