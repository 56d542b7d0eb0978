#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz/) with clang, ASan and UBSan, and runs each for a
# bounded time; exits non-zero if any target crashed, hung or failed a check.
#
# Usage: scripts/run-fuzzer.sh [--long] [--parallel N] [--write-seeds] [SECONDS] [TARGET...]
#   SECONDS       per target (default 60; --long: 1800)
#   TARGET        fuse_server_fuzzer, virtqueue_fuzzer, vhost_user_fuzzer, versiond_fuzzer
#                 (default: all)
#   --parallel N  run N targets at a time (default 1; CI uses 2)
#   --write-seeds regenerate the committed seed corpora (tests/fuzz/corpus/TARGET/) from the
#                 harnesses' own generators, then stop
# Environment: SVFS_FUZZ_BUILD_DIR (default build-fuzz), CXX (a clang++ >= 16),
#   SVFS_FUZZ_FLAGS (extra libFuzzer flags, e.g. -jobs=4 for a long run).
#
# Each target reads its committed corpus (tests/fuzz/corpus/TARGET, not written to) and a
# working corpus (BUILD_DIR/corpus/TARGET) that keeps what earlier runs found. A crash, timeout
# or failed check leaves its input in BUILD_DIR/artifacts/TARGET/; reproduce it with
#   SVFS_FUZZ_LOG=1 BUILD_DIR/tests/fuzz/TARGET BUILD_DIR/artifacts/TARGET/crash-...
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${SVFS_FUZZ_BUILD_DIR:-$root/build-fuzz}
all_targets=(fuse_server_fuzzer virtqueue_fuzzer vhost_user_fuzzer versiond_fuzzer)

seconds=
parallel=1
write_seeds=0
long=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --long) long=1 ;;
    --parallel) parallel=${2:?--parallel needs a count}; shift ;;
    --write-seeds) write_seeds=1 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    [0-9]*) seconds=$1 ;;
    *)
      if [[ " ${all_targets[*]} " != *" $1 "* ]]; then
        echo "run-fuzzer: unknown target $1 (targets: ${all_targets[*]})" >&2
        exit 2
      fi
      targets+=("$1")
      ;;
  esac
  shift
done
[ -n "$seconds" ] || seconds=$([ "$long" = 1 ] && echo 1800 || echo 60)
[ "${#targets[@]}" -gt 0 ] || targets=("${all_targets[@]}")

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
cc=${cxx/clang++/clang}
launcher=()
if command -v ccache >/dev/null 2>&1; then
  export CCACHE_BASEDIR=$root CCACHE_NOHASHDIR=1
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
fi

mkdir -p "$build_dir"
start=$(date +%s)
echo "run-fuzzer: configuring $build_dir with $cxx${launcher:+ (ccache)}"
cmake -S "$root" -B "$build_dir" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_C_COMPILER="$cc" \
  "${launcher[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSVFS_FUZZ=ON -DSVFS_BUILD_BENCHMARKS=OFF \
  >"$build_dir/configure.log" 2>&1 || { cat "$build_dir/configure.log"; exit 1; }
echo "run-fuzzer: building ${targets[*]}"
cmake --build "$build_dir" --target "${targets[@]}" -j2 >"$build_dir/build.log" 2>&1 ||
  { tail -50 "$build_dir/build.log"; echo "run-fuzzer: build failed ($build_dir/build.log)" >&2; exit 1; }
echo "run-fuzzer: built in $(( $(date +%s) - start )) s"

binary() { echo "$build_dir/tests/fuzz/$1"; }

if [ "$write_seeds" = 1 ]; then
  for t in "${targets[@]}"; do
    dir=$root/tests/fuzz/corpus/$t
    rm -rf "$dir" && mkdir -p "$dir"
    SVFS_FUZZ_SEED_DIR=$dir "$(binary "$t")" -runs=0 "$dir" >"$build_dir/seeds-$t.log" 2>&1 ||
      { cat "$build_dir/seeds-$t.log"; exit 1; }
    echo "run-fuzzer: $t: $(ls "$dir" | wc -l) seeds in ${dir#"$root"/}"
  done
  exit 0
fi

max_len() {
  case "$1" in
    virtqueue_fuzzer|versiond_fuzzer) echo 8192 ;;
    *) echo 4096 ;;
  esac
}

# versiond's server thread allocates while an input runs, so libFuzzer's per-input leak check
# (malloc and free counts around each input) would scan the heap after almost every input.
extra_flags() {
  case "$1" in
    versiond_fuzzer) echo -detect_leaks=0 ;;
  esac
}

# Starts target $1 in the background; its output goes to BUILD_DIR/logs/TARGET.log.
declare -A pids=()
start_target() {
  local t=$1 corpus=$build_dir/corpus/$1 artifacts=$build_dir/artifacts/$1
  mkdir -p "$corpus" "$artifacts" "$build_dir/logs"
  local dirs=("$corpus")
  [ -d "$root/tests/fuzz/corpus/$t" ] && dirs+=("$root/tests/fuzz/corpus/$t")
  # shellcheck disable=SC2086
  "$(binary "$t")" -max_total_time="$seconds" -max_len="$(max_len "$t")" -timeout=20 \
    -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$artifacts/" \
    $(extra_flags "$t") ${SVFS_FUZZ_FLAGS:-} "${dirs[@]}" >"$build_dir/logs/$t.log" 2>&1 &
  pids[$t]=$!
  echo "run-fuzzer: $t: fuzzing for ${seconds} s (log ${build_dir#"$root"/}/logs/$t.log)"
}

# The last progress line of a target's log: "#RUNS ... cov: N ft: N corp: N/SIZE exec/s: N".
progress() {
  grep -a -E '^#[0-9]+' "$build_dir/logs/$1.log" 2>/dev/null | tail -1 |
    sed -E 's/^#([0-9]+)\s+\S+\s+/\1 runs, /; s/ lim: [0-9]+//; s/ rss: .*//' || true
}

failed=()
finish_target() {
  local t=$1 rc=0
  wait "${pids[$t]}" || rc=$?
  unset "pids[$t]"
  if [ "$rc" -ne 0 ]; then
    failed+=("$t")
    echo "run-fuzzer: $t: FAILED (exit $rc); the end of its log:" >&2
    grep -a -v -E '^#[0-9]+|^INFO:' "$build_dir/logs/$t.log" | tail -40 >&2
    echo "run-fuzzer: $t: input saved in ${build_dir#"$root"/}/artifacts/$t/" >&2
  else
    echo "run-fuzzer: $t: ok: $(progress "$t")"
  fi
}

queue=("${targets[@]}")
last_report=$(date +%s)
while [ "${#queue[@]}" -gt 0 ] || [ "${#pids[@]}" -gt 0 ]; do
  while [ "${#queue[@]}" -gt 0 ] && [ "${#pids[@]}" -lt "$parallel" ]; do
    start_target "${queue[0]}"
    queue=("${queue[@]:1}")
  done
  sleep 1
  for t in "${!pids[@]}"; do
    kill -0 "${pids[$t]}" 2>/dev/null || finish_target "$t"
  done
  if [ $(( $(date +%s) - last_report )) -ge 15 ] && [ "${#pids[@]}" -gt 0 ]; then
    last_report=$(date +%s)
    for t in "${!pids[@]}"; do echo "run-fuzzer: $t: $(progress "$t")"; done
  fi
done

echo "run-fuzzer: done in $(( $(date +%s) - start )) s"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "run-fuzzer: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "run-fuzzer: all ${#targets[@]} targets ran ${seconds} s without a failure"
