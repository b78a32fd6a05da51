#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# Puts the SPDX license line at the top of every source file of the repository that lacks it:
# "// SPDX-License-Identifier: BSL-1.0" as the first line of C++ files, "# ..." as the first
# line (after a #! line) of CMake, shell, Python, Perl, gnuplot and *.in files, of the
# Doxyfile, .clang-format and .gitignore, and of scripts/* and .ci/* ("//" for Go).
# Idempotent: run it again whenever files were added.
#   scripts/spdx.sh           stamp the files git tracks that lack the line
#   scripts/spdx.sh --check   only name them; exit 1 if there are any (CTest lint.spdx)
# Exit status 77 (a skip) outside a git work tree of this repository: "tracked" means nothing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
id="SPDX-License-Identifier: BSL-1.0"
check=0
case ${1:-} in
  --check) check=1 ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

if [ "$(git -C "$root" rev-parse --show-toplevel 2>/dev/null)" != "$root" ]; then
  echo "spdx.sh: $root is not a git work tree of its own; nothing to check"
  exit 77
fi
cd "$root"

missing=0
while IFS= read -r -d '' file; do
  # The comment leader of the file's language; data, certificates, corpora and documentation
  # are not stamped. (No subshells here: the test runs this over every file.)
  case $file in
    *.cpp | *.hpp | *.cpp.in | *.hpp.in | *.go) lead="//" ;;
    CMakeLists.txt | */CMakeLists.txt | *.cmake | *.in | *.sh | *.py | *.pl | *.gp) lead="#" ;;
    Doxyfile | .clang-format | .gitignore | */.gitignore) lead="#" ;;
    scripts/* | .ci/*) lead="#" ;;
    *) continue ;;
  esac
  [ -f "$file" ] || continue  # deleted in the work tree
  line="$lead $id"
  first="" second=""
  { IFS= read -r first || true; IFS= read -r second || true; } <"$file"
  # The line goes after a #! line, which must stay first.
  at=1 there=$first
  if [ "${first:0:2}" = "#!" ]; then at=2 there=$second; fi
  [ "$there" = "$line" ] && continue
  if grep -qF -- "$id" "$file"; then
    echo "$file: the SPDX line is not on line $at"  # moved by hand: not stamped twice
    missing=1
    continue
  fi
  if [ $check = 1 ]; then
    echo "$file: no '$line' on line $at"
    missing=1
    continue
  fi
  # Written in place (cat >), so the file keeps its mode.
  tmp=$(mktemp)
  if [ $at = 2 ]; then
    { printf '%s\n' "$first" "$line"; tail -n +2 "$file"; } >"$tmp"
  else
    { printf '%s\n' "$line"; cat "$file"; } >"$tmp"
  fi
  cat "$tmp" >"$file"
  rm -f "$tmp"
  echo "stamped $file"
done < <(git ls-files -z)

if [ $missing = 1 ]; then
  [ $check = 1 ] && echo "run scripts/spdx.sh to add the missing lines"
  exit 1
fi
