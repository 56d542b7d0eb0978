#!/usr/bin/env bash
# Builds the Debian package svfs_<version>_amd64.deb (CPack, packaging/CMakeLists.txt) from a
# release build. Usage: scripts/package.sh [BUILD_DIR] [OUT_DIR]
#   BUILD_DIR  default build/ (configured and built first, dependencies installed)
#   OUT_DIR    where the .deb goes (default BUILD_DIR)
# Prints the path of the .deb on stdout; install it with apt-get install ./svfs_*.deb.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${1:-$root/build}
out_dir=${2:-$build_dir}

"$root/scripts/build.sh" "$build_dir" >&2
if grep -q '^SVFS_SANITIZE:BOOL=ON' "$build_dir/CMakeCache.txt"; then
  echo "package: $build_dir is a sanitizer build; package a release build instead" >&2
  exit 1
fi
mkdir -p "$out_dir"
echo "package: cpack in $out_dir" >&2
(cd "$build_dir" && cpack -G DEB -B "$out_dir" >&2)
deb=$(ls -t "$out_dir"/svfs_*.deb | head -1)
echo "$deb"
