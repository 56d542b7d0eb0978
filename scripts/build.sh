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
# ccache with paths relative to the checkout: a fresh clone (CI) or a second worktree reuses
# objects an earlier build on this machine compiled.
launcher=()
if command -v ccache >/dev/null 2>&1; then
  export CCACHE_BASEDIR=$root CCACHE_NOHASHDIR=1
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
fi
cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${launcher[@]}" "$@" >"$build_dir/configure.log" 2>&1 ||
  { cat "$build_dir/configure.log"; exit 1; }
echo "build: compiling in $build_dir (this takes a few minutes on 2 cores)"
cmake --build "$build_dir" -j"$(nproc)"
