#!/usr/bin/env bash
# Shared versions at scale, without guests (issue 13). Part 1: N svfsd daemons (--cache shared)
# on one svfs-versiond and one table, all serving one tree, each driven at the same time by its
# own svfs_vhost_bench (rows LOOKUP, GETATTR, CREATE+UNLINK; depth 1) through our vhost-user
# frontend. Part 2: one svfsd holding many cached inodes (svfs_inode_scale_bench), with file
# handles and with O_PATH descriptors.
#
#   tests/bench/run-scale-bench.sh [--daemons "1 8 64"] [--seconds S] [--inodes N] [--no-build]
#
# Part 1 prints per daemon count: the summed ops/s and the median of the daemons' p99 latency per
# row, bumps/s (the table's versions summed before and after the run), svfs-versiond's CPU (% of
# one core over the run) and svfsd's mean resident memory. Environment: BUILD_DIR (default
# <repo>/build), BENCH_TMP (parent of the tree; default /var/tmp, ext4 here, for file handles
# and fanotify). Default run: 2 s per row, 1,000,000 inodes; about 8 minutes on 2 cores.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${BUILD_DIR:-$repo/build}
daemon_counts="1 8 64"
seconds=2
inodes=1000000
do_build=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --daemons) daemon_counts=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --inodes) inodes=$2; shift 2 ;;
    --no-build) do_build=0; shift ;;
    *) echo "usage: $0 [--daemons \"1 8 64\"] [--seconds S] [--inodes N] [--no-build]" >&2; exit 2 ;;
  esac
done
log() { echo "[scale $(date +%T)] $*" >&2; }
[[ $(id -u) == 0 ]] || { echo "run-scale-bench: needs root (fanotify, file handles)" >&2; exit 1; }
if [[ $do_build == 1 ]]; then
  log "building in $build (-j2)"
  cmake --build "$build" -j2 --target svfsd svfs-versiond svfs_vhost_bench svfs_inode_scale_bench >&2
fi
svfsd=$build/daemon/svfsd
versiond=$build/versiond/svfs-versiond
bench=$build/tests/svfs_vhost_bench
inode_bench=$build/tests/svfs_inode_scale_bench
for b in "$svfsd" "$versiond" "$bench" "$inode_bench"; do [[ -x $b ]] || { echo "missing $b" >&2; exit 1; }; done

work=$(mktemp -d "${BENCH_TMP:-/var/tmp}/svfs-scale.XXXXXX")
table=svfs-scale-$$
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
cleanup() { stop_all; rm -f "/dev/shm/$table"; rm -rf "$work"; }
trap cleanup EXIT

wait_socket() {
  for _ in $(seq 1 200); do [[ -S $1 ]] && return 0; sleep 0.05; done
  echo "no socket $1" >&2; return 1
}
# svfsd's serving process: under the default --sandbox namespace, the launched pid's child.
serving() { local c; c=$(cat "/proc/$1/task/$1/children" 2>/dev/null); echo "${c%% *}" | grep . || echo "$1"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$(serving "$1")/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$(serving "$1")/status"; }
# The sum of every slot's version (slot 0 and padding are 0).
table_sum() { od -An -t u8 -v -j 64 "/dev/shm/$table" | awk '{for (i = 1; i <= NF; i++) s += $i} END {printf "%.0f\n", s}'; }
median() { sort -n | awk '{v[NR] = $1} END {print (NR ? v[int((NR + 1) / 2)] : 0)}'; }

start_versiond() {
  rm -f "/dev/shm/$table"
  "$versiond" --socket "$work/v.sock" --table "$table" --log-level warn >"$work/versiond.log" 2>&1 &
  versiond_pid=$!
  pids+=("$versiond_pid")
  wait_socket "$work/v.sock"
}

echo "## $(nproc) CPUs, $(uname -r), tree on $(df --output=fstype "${BENCH_TMP:-/var/tmp}" | tail -1)"
echo
echo "| daemons | LOOKUP ops/s (sum) | LOOKUP p99 | GETATTR ops/s | GETATTR p99 | CREATE+UNLINK ops/s | CREATE+UNLINK p99 | bumps/s | versiond CPU | svfsd RSS |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
tck=$(getconf CLK_TCK)
for n in $daemon_counts; do
  log "$n daemons"
  mkdir -p "$work/tree"
  start_versiond
  daemon_pids=()
  for i in $(seq 1 "$n"); do
    "$svfsd" --socket-path "$work/s$i.sock" --shared-dir "$work/tree" --cache shared \
      --versiond-socket "$work/v.sock" --log-level warn >"$work/svfsd$i.log" 2>&1 &
    daemon_pids+=($!)
    pids+=($!)
  done
  for i in $(seq 1 "$n"); do wait_socket "$work/s$i.sock"; done
  sum0=$(table_sum)
  cpu0=$(cpu_ticks "$versiond_pid")
  t0=$(date +%s.%N)
  bench_pids=()
  for i in $(seq 1 "$n"); do
    "$bench" --socket "$work/s$i.sock" --seconds "$seconds" --depth 1 --dir-entries 10 \
      --rows LOOKUP,GETATTR,CREATE+UNLINK --tsv >"$work/b$i.out" 2>"$work/b$i.err" &
    bench_pids+=($!)
  done
  # svfsd exits when its frontend goes: its memory is read while the benchmarks still run.
  sleep "$(echo "$seconds" | awk '{print $1 * 2}')"
  rss_total=0
  for p in "${daemon_pids[@]}"; do rss_total=$((rss_total + $(rss_kib "$p" || echo 0))); done
  for p in "${bench_pids[@]}"; do wait "$p" || { cat "$work"/b*.err >&2; exit 1; }; done
  t1=$(date +%s.%N)
  cpu1=$(cpu_ticks "$versiond_pid")
  sum1=$(table_sum)
  row() {  # ROW<TAB>name<TAB>ops/s<TAB>p50<TAB>p99
    local total p99
    total=$(cat "$work"/b*.out | awk -F'\t' -v r="$1" '$1 == "ROW" && $2 == r {s += $3} END {printf "%.0f", s}')
    p99=$(cat "$work"/b*.out | awk -F'\t' -v r="$1" '$1 == "ROW" && $2 == r {print $5}' | median)
    printf '%s | %s us' "$total" "$p99"
  }
  wall=$(echo "$t1 $t0" | awk '{print $1 - $2}')
  printf '| %s | %s | %s | %s | %.0f | %.1f %% | %.1f MiB |\n' "$n" "$(row LOOKUP)" "$(row GETATTR)" \
    "$(row CREATE+UNLINK)" "$(echo "$sum1 $sum0 $wall" | awk '{print ($1 - $2) / $3}')" \
    "$(echo "$cpu1 $cpu0 $tck $wall" | awk '{print 100 * ($1 - $2) / $3 / $4}')" \
    "$(echo "$rss_total $n" | awk '{print $1 / $2 / 1024}')"
  stop_all
  rm -rf "$work/tree" "$work"/*.sock
done
echo
echo "ops/s: summed over the daemons; p99: the median of the daemons' p99 latency of one request"
echo "(posted to used, depth 1). bumps/s: the table's versions summed, before and after. versiond"
echo "CPU: % of one core over the whole run. svfsd RSS: mean VmRSS during the GETATTR row (it"
echo "counts the table pages a daemon touched)."
echo

echo "| svfsd inodes | LOOKUP of a new inode | LOOKUP of a cached inode | fds held per inode | private bytes per inode |"
echo "|---|---:|---:|---:|---:|"
hard_nofile=$(ulimit -Hn)
for handles in mandatory never; do
  n_inodes=$inodes
  if [[ $handles == never && $hard_nofile != unlimited && $n_inodes -gt $((hard_nofile - 1000)) ]]; then
    n_inodes=$((hard_nofile - 1000))  # one O_PATH fd per inode: the hard RLIMIT_NOFILE bounds it
    log "O_PATH mode limited to $n_inodes inodes by the hard RLIMIT_NOFILE ($hard_nofile)"
  fi
  log "$n_inodes inodes, --inode-file-handles=$handles"
  mkdir -p "$work/tree"
  start_versiond
  "$svfsd" --socket-path "$work/s.sock" --shared-dir "$work/tree" --cache shared \
    --versiond-socket "$work/v.sock" --inode-file-handles="$handles" --log-level warn >"$work/svfsd.log" 2>&1 &
  svfsd_pid=$!
  pids+=("$svfsd_pid")
  wait_socket "$work/s.sock"
  out=$("$inode_bench" --socket "$work/s.sock" --tree "$work/tree" --pid "$svfsd_pid" --inodes "$n_inodes")
  echo "$out" | awk -v h="$handles" -F'|' 'NR == 3 {printf "| %s (file handles %s) |%s|%s|%s|%s|\n", $2, h, $3, $4, $5, $6}'
  stop_all
  rm -rf "$work/tree" "$work"/*.sock
done
