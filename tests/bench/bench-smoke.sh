#!/usr/bin/env bash
# Keeps the benchmark driver working: runs svfs_vhost_bench for a moment against a fresh svfsd, in
# both driver modes (sleeping on interrupts, and --driver-poll), with 2 request queues. The
# driver checks every reply (an error or a short reply fails the run), so this fails if a row
# breaks; its figures mean nothing at this length.
#   bench-smoke.sh SVFSD SVFS_VHOST_BENCH
set -euo pipefail
svfsd=$1
bench=$2
work=$(mktemp -d)
pid=
cleanup() {
  if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
for mode in "" --driver-poll; do
  rm -rf "$work/shared" "$work/sock"
  mkdir "$work/shared"
  "$svfsd" --socket-path "$work/sock" --shared-dir "$work/shared" --cache auto >"$work/log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do [[ -S $work/sock ]] && break; sleep 0.05; done
  fail() { echo "bench-smoke ${mode:-(interrupts)}: $*; svfsd's log:" >&2; cat "$work/log" >&2; exit 1; }
  out=$("$bench" --socket "$work/sock" --seconds 0.2 --depth 4 --queues 2 --dir-entries 200 $mode \
         --backend-pid "$pid" 2>&1) ||
    { echo "$out"; fail "the benchmark failed"; }
  echo "$out"
  rows=$(grep -c ' ops/s ' <<<"$out" || true)
  [[ $rows == 6 ]] || fail "$rows of 6 rows ran"
  # The backend's CPU time per request is measured (the daemon's threads ran for every row).
  cpu_rows=$(grep -cE 'backend CPU [1-9][0-9]* ns/request' <<<"$out" || true)
  [[ $cpu_rows == 6 ]] || fail "$cpu_rows of 6 rows report the backend's CPU time"
  # svfsd exits when the frontend disconnects.
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && fail "svfsd still runs 5 s after the frontend left"
  wait "$pid" || fail "svfsd exited with status $?"
  pid=
done
