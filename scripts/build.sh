#!/usr/bin/env bash
# Configures and builds svfs. Usage: scripts/build.sh [BUILD_DIR] [extra cmake args...]
# Installs the Debian dependencies first (idempotent).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${1:-$root/build}
shift || true

"$root/scripts/install-deps.sh"
echo "build: configuring $build_dir"
mkdir -p "$build_dir"
cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >"$build_dir/configure.log" 2>&1 ||
  { cat "$build_dir/configure.log"; exit 1; }
echo "build: compiling in $build_dir (this takes a few minutes on 2 cores)"
cmake --build "$build_dir" -j"$(nproc)"
