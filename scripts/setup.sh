#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# Installs the Debian packages nxsys-auth needs to build, test and run its demo (golang-go and
# golang-golang-x-oauth2-dev: the Go peer of the contention benchmark, built offline). Idempotent:
# packages already present are not touched, and apt is only called when something is missing.
#   scripts/setup.sh            # everything below
#   scripts/setup.sh doxygen    # only the packages named (scripts/docs.sh needs no compiler)
set -euo pipefail
packages=(
  build-essential cmake ninja-build clang-14 libclang-rt-14-dev
  libboost1.81-all-dev libboost-json1.81-dev libboost-url1.81-dev
  libssl-dev openssl curl libbenchmark-dev libgtest-dev gnuplot-nox wrk redis-server
  redis-sentinel libhiredis-dev doxygen pkgconf git
  golang-go golang-golang-x-oauth2-dev
)
if (($#)); then packages=("$@"); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
