# SPDX-License-Identifier: BSL-1.0
# Shared by the tests of examples/ (sourced, after `set -euo pipefail`): a temporary directory
# (kept when KEEP_TMP is set) and the processes listed in `pids` are removed on exit, waits are
# bounded, and mock token servers are started on free ports. Counts and behaviour only, never
# timings.
#   mock_bin=PATH/TO/nxsys-mock-server; source "$(dirname "$0")/lib.sh"
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "${KEEP_TMP:-}" ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 143' TERM INT  # a CTest timeout or ^C: exit, which runs cleanup

# fail MESSAGE: prints MESSAGE and the end of every output file, exits 1.
fail() {
  echo "FAIL: $*"
  for f in "$tmp"/*.out "$tmp"/*.err; do
    [ -s "$f" ] && { echo "--- $(basename "$f"):"; tail -n 20 "$f"; }
  done
  exit 1
}

# wait_for_line FILE PATTERN: up to 10 s for a line matching PATTERN in FILE.
wait_for_line() {
  for _ in $(seq 1 200); do
    grep -qs "$2" "$1" && return 0
    sleep 0.05
  done
  return 1
}

# launch_mock NAME [FLAGS...]: starts an nxsys-mock-server on a free port of 127.0.0.1, its
# output in $tmp/NAME.out, without waiting for it (see mock_ready).
launch_mock() {
  local name=$1
  shift
  "$mock_bin" --port 0 "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  pids+=($!)
}

# mock_ready NAME: waits until the server NAME listens; sets mock_url (http[s]://127.0.0.1:PORT)
# and, for --tls, mock_ca (the file of its test CA).
mock_ready() {
  wait_for_line "$tmp/$1.out" '^listening on' || fail "mock server $1 did not start"
  local scheme=http
  mock_ca=$(sed -n 's/^test CA //p' "$tmp/$1.out")
  [ -n "$mock_ca" ] && scheme=https
  mock_url="$scheme://$(sed -n 's/^listening on //p' "$tmp/$1.out")"
}

# start_mock NAME [FLAGS...]: launch_mock and mock_ready.
start_mock() {
  launch_mock "$@"
  mock_ready "$1"
}

# mock_stats URL FILE: the mock server's counters (GET /stats) into FILE.
mock_stats() {
  local ca=()
  [ "${1#https}" != "$1" ] && ca=(--cacert "$mock_ca")
  curl -sS --max-time 10 "${ca[@]}" "$1/stats" >"$2" || fail "GET $1/stats"
}

# counter FILE NAME: a counter of the mock's flat stats JSON, e.g. counter stats.json refreshes.
# (sed, not python3: a pyenv shim makes every python3 start cost most of a second.)
counter() {
  local v
  v=$(sed -n "s/.*\"$2\":\([0-9][0-9]*\).*/\1/p" "$1")
  [ -n "$v" ] || fail "no counter $2 in $1"
  echo "$v"
}

# no_secrets FILE... SECRET...: none of the mock's access tokens (at-N-hex) and none of the
# given secrets appears in the files. Arguments up to "--" are files.
no_secrets() {
  local files=()
  while [ "$1" != -- ]; do files+=("$1"); shift; done
  shift
  ! grep -qE 'at-[0-9]+-[0-9a-f]{16}' "${files[@]}" || fail "an access token was printed"
  ! grep -qE 'refresh-[0-9]' "${files[@]}" || fail "a rotated refresh token was printed"
  for s in "$@"; do
    ! grep -qF -- "$s" "${files[@]}" || fail "a secret was printed"
  done
}
