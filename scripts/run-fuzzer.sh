#!/usr/bin/env bash
# Builds the libFuzzer harness for the FUSE server (tests/fuzz/fuse_server_fuzzer.cc) with clang,
# ASan and UBSan, and runs it for a number of seconds.
#
# Usage: scripts/run-fuzzer.sh [SECONDS=60] [extra libFuzzer flags...]
# Environment: SVFS_FUZZ_BUILD_DIR (default build-fuzz), CXX (a clang++ >= 16).
#
# The seed corpus (one valid request per implemented opcode) is written by the harness itself
# into the working corpus (BUILD_DIR/corpus), next to whatever earlier runs found there; the
# checked-in tests/fuzz/corpus is read too when present. Crashes land in BUILD_DIR/artifacts and
# make the script exit non-zero.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
shift || true
build_dir=${SVFS_FUZZ_BUILD_DIR:-$root/build-fuzz}

# clang 14 (Debian 12's default) cannot compile libstdc++ 12's <expected>; clang 16 can.
find_clang() {
  if [ -n "${CXX:-}" ]; then echo "$CXX"; return; fi
  for v in 19 18 17 16; do
    if command -v "clang++-$v" >/dev/null 2>&1 &&
       [ -d "/usr/lib/llvm-$v/lib/clang" ] &&
       find "/usr/lib/llvm-$v/lib/clang" -name 'libclang_rt.fuzzer-x86_64.a' | grep -q .; then
      echo "clang++-$v"; return
    fi
  done
}
cxx=$(find_clang)
if [ -z "$cxx" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "run-fuzzer: need clang++ >= 16 with libFuzzer: apt-get install clang-16 libclang-rt-16-dev" >&2
    exit 1
  fi
  echo "run-fuzzer: installing clang-16 and libclang-rt-16-dev"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends clang-16 libclang-rt-16-dev
  cxx=clang++-16
fi

mkdir -p "$build_dir"
echo "run-fuzzer: configuring $build_dir with $cxx"
cmake -S "$root" -B "$build_dir" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSVFS_FUZZ=ON -DSVFS_BUILD_BENCHMARKS=OFF >"$build_dir/configure.log" 2>&1 ||
  { cat "$build_dir/configure.log"; exit 1; }
echo "run-fuzzer: building fuse_server_fuzzer"
cmake --build "$build_dir" --target fuse_server_fuzzer -j2

corpus=$build_dir/corpus
artifacts=$build_dir/artifacts
mkdir -p "$corpus" "$artifacts"
dirs=("$corpus")
if [ -d "$root/tests/fuzz/corpus" ]; then dirs+=("$root/tests/fuzz/corpus"); fi

echo "run-fuzzer: fuzzing for ${seconds}s (corpus $corpus, crashes in $artifacts)"
SVFS_FUZZ_SEED_DIR=$corpus "$build_dir/tests/fuse_server_fuzzer" \
  -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$artifacts/" "$@" "${dirs[@]}"
