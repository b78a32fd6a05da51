#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# Builds and runs a small program against nxsys-auth the ways an application gets it
# (CTest label `package`, registered in tests/CMakeLists.txt):
#   run.sh find_package     <build dir> <source dir> [cmake args...]
#     cmake --install <build dir> into a temporary prefix; find_package(nxsys_auth <version>)
#     refuses the versions SameMinorVersion excludes (version-check/), then consumer/ with
#     find_package(nxsys_auth MAJOR.MINOR CONFIG REQUIRED) and CMAKE_PREFIX_PATH=<prefix>
#   run.sh pkgconfig        <build dir> <source dir> [cmake args...]
#     the same install, moved elsewhere (the .pc files must not name where they were
#     installed), then consumer/main.cpp compiled with the compiler and
#     `pkg-config --cflags --libs nxsys-auth` alone (consumer/testing.cpp with nxsys-auth-testing
#     and pkgconfig/redis_main.cpp with nxsys-auth-redis, when they are installed)
#   run.sh add_subdirectory <build dir> <source dir> [cmake args...]
#     subdir-consumer/, which takes nxsys-auth (the library only) in with add_subdirectory():
#     configured, not built (fetchcontent builds the same)
#   run.sh fetchcontent     <build dir> <source dir> [cmake args...]
#     subdir-consumer/ taking nxsys-auth with FetchContent from a local git repository holding
#     the source tree as it is now, tagged v<version> as a release would be; built and run
# The cmake args (-G, -DCMAKE_CXX_COMPILER=..., -DCMAKE_CXX_FLAGS=..., a --config for the
# install as `--config=<cfg>`) are passed to the consumer's configure step; pkgconfig takes the
# compiler and its flags from them. Work happens in <build dir>/package-test/<mode>, removed at
# the end (kept when NXSYS_PACKAGE_TEST_KEEP=1). Exit status 77: skipped (no pkg-config, git).
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 find_package|pkgconfig|add_subdirectory|fetchcontent <build dir> <source dir> [cmake args...]" >&2; exit 2; }
mode=$1 build=$(cd "$2" && pwd) source=$(cd "$3" && pwd)
shift 3
here=$(cd "$(dirname "$0")" && pwd)

config=
cxx=c++
cxxflags=
cmake_args=()
for a in "$@"; do
  case $a in
    --config=*) config=${a#--config=} ;;
    *)
      cmake_args+=("$a")
      case $a in
        -DCMAKE_CXX_COMPILER=*) cxx=${a#*=} ;;
        -DCMAKE_CXX_FLAGS=*) cxxflags=${a#*=} ;;
      esac
      ;;
  esac
done

# The version, from where the project takes it.
version_part() {
  sed -n "s/^#define NXSYS_AUTH_VERSION_$1 \([0-9][0-9]*\)$/\1/p" \
    "$source/include/nxsys/auth/version.hpp"
}
major=$(version_part MAJOR) minor=$(version_part MINOR) patch=$(version_part PATCH)
if [ -z "$major" ] || [ -z "$minor" ] || [ -z "$patch" ]; then echo "no version in version.hpp" >&2; exit 1; fi
version=$major.$minor.$patch

work=$build/package-test/$mode
rm -rf "$work"
mkdir -p "$work"
cleanup() { [ "${NXSYS_PACKAGE_TEST_KEEP:-0}" = 1 ] || rm -rf "$work"; rmdir "$build/package-test" 2>/dev/null || true; }
trap cleanup EXIT

step() { echo "--- $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
timed() {
  local t0=$SECONDS rc=0
  "$@" || rc=$?
  echo "    (${*:1:2}: $((SECONDS - t0)) s)"
  return $rc
}

# install_to PREFIX: cmake --install of the build, and a look at what it installed.
install_to() {
  local prefix=$1
  step "install $build into $prefix"
  timed cmake --install "$build" --prefix "$prefix" ${config:+--config "$config"} >"$work/install.log" \
    || { cat "$work/install.log"; exit 1; }
  # Only what an application needs: headers, the static library, the CMake and pkg-config files.
  test -f "$prefix/include/nxsys/auth.hpp"
  test -f "$prefix/include/nxsys/auth/version.hpp"
  test -f "$prefix/include/nxsys/auth/detail/single_flight.hpp"
  ls "$prefix"/lib*/libnxsys_auth.a >/dev/null
  ls "$prefix"/lib*/cmake/nxsys_auth/nxsys_authConfig.cmake >/dev/null
  ls "$prefix"/lib*/pkgconfig/nxsys-auth.pc >/dev/null
  if grep -rlF -e nxsys_auth_build_flags -e fsanitize -e Werror -e "$source" \
      "$prefix"/lib*/cmake/nxsys_auth "$prefix"/lib*/pkgconfig; then
    fail "the installed package refers to build-only flags or to the source tree"
  fi
}

# run_consumer EXE: runs it; it exits non-zero unless a token and an API answer went through.
run_consumer() {
  step "run $1"
  "$1"
}

targets=()  # what the build step builds: everything, unless a mode says
case $mode in
  find_package)
    prefix=$work/prefix
    install_to "$prefix"
    # Major version 0: another minor version may break the API, so it is refused either way;
    # MAJOR.(MINOR-1) is the one SameMajorVersion would have taken. A later patch is refused
    # too (the installed one is older).
    refused="$major.$((minor + 1));$((major + 1)).0;$major.$minor.$((patch + 1))"
    if [ "$major" -eq 0 ] && [ "$minor" -gt 0 ]; then refused+=";0.$((minor - 1))"; fi
    if [ "$major" -gt 0 ]; then refused+=";$((major - 1)).$minor"; fi
    step "find_package(nxsys_auth <version>) refuses $refused (installed: $version)"
    timed cmake -S "$here/version-check" -B "$work/version-check" -DCMAKE_PREFIX_PATH="$prefix" \
      -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON "-DNXSYS_AUTH_REFUSED_VERSIONS=$refused" \
      >"$work/version-check.log" || { cat "$work/version-check.log"; exit 1; }
    grep -- 'refuses' "$work/version-check.log"
    step "configure consumer/ with find_package(nxsys_auth $major.$minor) and CMAKE_PREFIX_PATH=$prefix"
    timed cmake -S "$here/consumer" -B "$work/consumer" "${cmake_args[@]}" \
      -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON \
      -DNXSYS_AUTH_VERSION_REQUEST="$major.$minor" | tee "$work/consumer.log"
    grep -qF "nxsys_auth $version from $prefix/" "$work/consumer.log" \
      || fail "find_package(nxsys_auth $major.$minor) did not take $version from $prefix"
    ;;
  pkgconfig)
    command -v pkg-config >/dev/null || { echo "SKIP: no pkg-config"; exit 77; }
    install_to "$work/installed"
    # Relocatable: the .pc files find the prefix from where they are.
    mv "$work/installed" "$work/moved"
    prefix=$work/moved
    pcdir=$(dirname "$(ls "$prefix"/lib*/pkgconfig/nxsys-auth.pc)")
    export PKG_CONFIG_PATH=$pcdir  # searched first; the system's stay (libssl, libcrypto)
    step "pkg-config nxsys-auth from $pcdir"
    pc_version=$(pkg-config --modversion nxsys-auth)
    [ "$pc_version" = "$version" ] || fail "pkg-config says version $pc_version, not $version"
    pkg-config --exists "nxsys-auth >= $major.$minor" "nxsys-auth < $major.$((minor + 1))" \
      || fail "pkg-config version comparisons"
    flags=$(pkg-config --cflags --libs nxsys-auth)
    echo "    $flags"
    ! grep -qF -- "$work/installed" <<<"$flags" || fail "the flags name the place of the install"
    ! grep -q -- '-std=' <<<"$flags" || fail "the flags choose the language standard"
    step "compile consumer/main.cpp: $cxx -std=c++20 main.cpp \$(pkg-config --cflags --libs nxsys-auth)"
    # The flags word-split as in a shell command line, as an application's Makefile would.
    # shellcheck disable=SC2086
    timed $cxx $cxxflags -std=c++20 "$here/consumer/main.cpp" -o "$work/nxsys-auth-consumer" $flags
    run_consumer "$work/nxsys-auth-consumer"
    if [ -f "$pcdir/nxsys-auth-testing.pc" ]; then
      testing_flags=$(pkg-config --cflags --libs nxsys-auth nxsys-auth-testing)
      echo "    nxsys-auth-testing: $testing_flags"
      step "compile consumer/main.cpp and testing.cpp with \$(pkg-config --cflags --libs nxsys-auth nxsys-auth-testing)"
      # shellcheck disable=SC2086
      timed $cxx $cxxflags -std=c++20 -DNXSYS_AUTH_CONSUMER_TESTING "$here/consumer/main.cpp" \
        "$here/consumer/testing.cpp" -o "$work/nxsys-auth-testing-consumer" $testing_flags
      run_consumer "$work/nxsys-auth-testing-consumer"
    fi
    if [ -f "$pcdir/nxsys-auth-redis.pc" ]; then
      redis_flags=$(pkg-config --cflags --libs nxsys-auth-redis)
      echo "    nxsys-auth-redis: $redis_flags"
      step "compile pkgconfig/redis_main.cpp with \$(pkg-config --cflags --libs nxsys-auth-redis)"
      # shellcheck disable=SC2086
      timed $cxx $cxxflags -std=c++20 "$here/pkgconfig/redis_main.cpp" -o "$work/nxsys-auth-redis-consumer" \
        $redis_flags
      run_consumer "$work/nxsys-auth-redis-consumer"
    fi
    exit 0
    ;;
  add_subdirectory)
    step "configure subdir-consumer/ (add_subdirectory of $source)"
    timed cmake -S "$here/subdir-consumer" -B "$work/consumer" "${cmake_args[@]}" \
      -DCMAKE_BUILD_TYPE=Debug -DNXSYS_AUTH_SOURCE_DIR="$source"
    # FetchContent_MakeAvailable is add_subdirectory() underneath: the fetchcontent mode builds
    # and runs what this one would, and the library is the slowest part of the package tests.
    exit 0
    ;;
  fetchcontent)
    command -v git >/dev/null || { echo "SKIP: no git"; exit 77; }
    # A repository of the tree as it is, uncommitted changes included, so that what is tested is
    # what is being worked on; tagged as a release is.
    repo=$work/nxsys-auth.git
    tag=v$version
    step "snapshot $source into $repo, tagged $tag"
    mkdir -p "$repo"
    if [ "$(git -C "$source" rev-parse --show-toplevel 2>/dev/null)" = "$source" ]; then
      # Tracked and new files, not ignored ones (build trees) nor deleted ones.
      (cd "$source" && git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi; done |
        xargs -0 cp -P --parents -t "$repo")
    else
      tar -C "$source" --exclude='./build*' --exclude=./.git -cf - . | tar -C "$repo" -xf -
    fi
    git_() { git -C "$repo" -c init.defaultBranch=main -c user.name=nxsys-auth-test \
      -c user.email=nxsys-auth-test@invalid -c commit.gpgsign=false -c tag.gpgsign=false "$@"; }
    git_ init -q
    git_ add -A
    git_ commit -q -m "nxsys-auth $version (test snapshot)"
    git_ tag -a "$tag" -m "nxsys-auth $version"
    # The library is compiled again here: Debug (-O0) takes half the time of -O2.
    step "configure subdir-consumer/ (FetchContent of file://$repo at $tag)"
    timed cmake -S "$here/subdir-consumer" -B "$work/consumer" "${cmake_args[@]}" \
      -DCMAKE_BUILD_TYPE=Debug -DNXSYS_AUTH_FETCHCONTENT=ON \
      -DNXSYS_AUTH_GIT_REPOSITORY="file://$repo" -DNXSYS_AUTH_GIT_TAG="$tag"
    fetched=$work/consumer/_deps/nxsys_auth-src
    [ "$(git -C "$fetched" describe --tags --exact-match)" = "$tag" ] \
      || fail "FetchContent did not check out $tag into $fetched"
    # The consumer's own targets, as its build would: not nxsys::auth_redis, which it does not use.
    targets=(--target nxsys-auth-consumer nxsys-auth-consumer-plugin)
    ;;
  *)
    echo "unknown mode $mode" >&2
    exit 2
    ;;
esac

step "build"
timed cmake --build "$work/consumer" --parallel "$(nproc)" ${config:+--config "$config"} "${targets[@]}"
exe=$(find "$work/consumer" -type f -name nxsys-auth-consumer -perm -u+x | head -n 1)
run_consumer "$exe"
