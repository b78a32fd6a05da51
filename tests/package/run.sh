#!/usr/bin/env bash
# Builds and runs a small program against nxsys-auth the ways an application gets it
# (CTest label `package`, registered in tests/CMakeLists.txt):
#   run.sh find_package     <build dir> <source dir> [cmake args...]
#     cmake --install <build dir> into a temporary prefix, then consumer/ with
#     find_package(nxsys_auth CONFIG REQUIRED) and CMAKE_PREFIX_PATH=<prefix>
#   run.sh add_subdirectory <build dir> <source dir> [cmake args...]
#     subdir-consumer/, which builds nxsys-auth (the library only) inside itself
#   run.sh fetchcontent     <build dir> <source dir> [cmake args...]
#     subdir-consumer/ taking nxsys-auth in with FetchContent: configured, not built
# The cmake args (-G, -DCMAKE_CXX_COMPILER=..., -DCMAKE_CXX_FLAGS=..., a --config for the
# install as `--config=<cfg>`) are passed to the consumer's configure step. Work happens in
# <build dir>/package-test/<mode>, removed at the end (kept when NXSYS_PACKAGE_TEST_KEEP=1).
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 find_package|add_subdirectory|fetchcontent <build dir> <source dir> [cmake args...]" >&2; exit 2; }
mode=$1 build=$(cd "$2" && pwd) source=$(cd "$3" && pwd)
shift 3
here=$(cd "$(dirname "$0")" && pwd)

config=
cmake_args=()
for a in "$@"; do
  case $a in
    --config=*) config=${a#--config=} ;;
    *) cmake_args+=("$a") ;;
  esac
done

work=$build/package-test/$mode
rm -rf "$work"
mkdir -p "$work"
cleanup() { [ "${NXSYS_PACKAGE_TEST_KEEP:-0}" = 1 ] || rm -rf "$work"; rmdir "$build/package-test" 2>/dev/null || true; }
trap cleanup EXIT

step() { echo "--- $*"; }
timed() {
  local t0=$SECONDS rc=0
  "$@" || rc=$?
  echo "    (${*:1:2}: $((SECONDS - t0)) s)"
  return $rc
}

case $mode in
  find_package)
    prefix=$work/prefix
    step "install $build into $prefix"
    timed cmake --install "$build" --prefix "$prefix" ${config:+--config "$config"} >"$work/install.log" \
      || { cat "$work/install.log"; exit 1; }
    # Only what an application needs: headers, the static library, the CMake package.
    test -f "$prefix/include/nxsys/auth.hpp"
    test -f "$prefix/include/nxsys/auth/detail/single_flight.hpp"
    ls "$prefix"/lib*/libnxsys_auth.a >/dev/null
    ls "$prefix"/lib*/cmake/nxsys_auth/nxsys_authConfig.cmake >/dev/null
    if grep -rlF -e nxsys_auth_build_flags -e fsanitize -e Werror -e "$source" "$prefix"/lib*/cmake/nxsys_auth; then
      echo "the installed package refers to build-only flags or to the source tree" >&2
      exit 1
    fi
    step "configure consumer/ with CMAKE_PREFIX_PATH=$prefix"
    timed cmake -S "$here/consumer" -B "$work/consumer" "${cmake_args[@]}" \
      -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON
    ;;
  add_subdirectory|fetchcontent)
    fetch=OFF
    [ "$mode" = fetchcontent ] && fetch=ON
    # The library is compiled again here: Debug (-O0) takes half the time of -O2.
    step "configure subdir-consumer/ ($mode of $source)"
    timed cmake -S "$here/subdir-consumer" -B "$work/consumer" "${cmake_args[@]}" \
      -DCMAKE_BUILD_TYPE=Debug -DNXSYS_AUTH_SOURCE_DIR="$source" -DNXSYS_AUTH_FETCHCONTENT=$fetch
    # FetchContent_MakeAvailable is add_subdirectory() underneath: its configure step (and the
    # checks subdir-consumer/ makes there) is what differs, the build would be the same again.
    [ "$mode" = fetchcontent ] && exit 0
    ;;
  *)
    echo "unknown mode $mode" >&2
    exit 2
    ;;
esac

step "build"
timed cmake --build "$work/consumer" ${config:+--config "$config"}
exe=$(find "$work/consumer" -type f -name nxsys-auth-consumer -perm -u+x | head -n 1)
step "run $exe"
"$exe"
