#!/usr/bin/env bash
# Benchmarks svfsd against the C virtiofsd through the vhost-user frontend in tests/vhost (no guest,
# no QEMU): for each backend x depth {1,16} x request queues {1,2} (virtiofsd: 1 queue only) it starts
# the daemon on a fresh temporary tree, runs svfs_vhost_bench, stops the daemon; then measures the
# bare-syscall floor (svfs_vhost_bench --floor) and prints one table, with each backend's CPU time
# per request (ns: every thread of the daemon over the row, whatever the driver's wake-ups cost;
# the floor's is one thread's time per bare-syscall op).
#
#   tests/bench/run-vhost-bench.sh [--seconds S] [--repeat N] [--driver-poll] [--no-build] [--out FILE]
#
# Each cell runs N times (default 3; svfsd cells, virtiofsd cells and the floor interleaved, so
# drift in the machine's load hits all of them) and the table shows the median run of each row.
# --driver-poll: the driver spins on the used rings with interrupts off (a poll-mode driver)
# instead of sleeping on the call eventfds as Linux's virtio-fs driver does.
#
# Environment: BUILD_DIR (default <repo>/build), SVFS_VHOST_VIRTIOFSD (default
# /usr/lib/qemu/virtiofsd), BENCH_DEPTHS ("1 16"), BENCH_QUEUES ("1 2"), BENCH_DIR_ENTRIES (1000),
# BENCH_TMP (parent of the temporary trees, default $TMPDIR or /tmp; pick the file system you want
# measured), SVFSD_ARGS (extra svfsd options, e.g. "--poll-us 0"). Default run: 2 s per row,
# 3 repeats, about 6 minutes.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${BUILD_DIR:-$repo/build}
virtiofsd=${SVFS_VHOST_VIRTIOFSD:-/usr/lib/qemu/virtiofsd}
depths=${BENCH_DEPTHS:-1 16}
queues_list=${BENCH_QUEUES:-1 2}
entries=${BENCH_DIR_ENTRIES:-1000}
seconds=2
repeat=3
do_build=1
out=
driver_poll=
while [[ $# -gt 0 ]]; do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --out) out=$2; shift 2 ;;
    --driver-poll) driver_poll=--driver-poll; shift ;;
    *) echo "usage: $0 [--seconds S] [--repeat N] [--driver-poll] [--no-build] [--out FILE]" >&2; exit 2 ;;
  esac
done

log() { echo "[bench $(date +%T)] $*" >&2; }

if [[ $do_build == 1 ]]; then
  log "building svfsd and svfs_vhost_bench in $build (-j2)"
  cmake --build "$build" -j2 --target svfsd svfs_vhost_bench >&2
fi
svfsd=$build/daemon/svfsd
bench=$build/tests/svfs_vhost_bench
[[ -x $svfsd && -x $bench ]] || { echo "missing $svfsd or $bench" >&2; exit 1; }
have_c=1
[[ -x $virtiofsd ]] || { log "no C virtiofsd at $virtiofsd: its columns stay empty"; have_c=0; }

work=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/svfs-vhost-bench.XXXXXX")
daemon_pid=
cleanup() {
  if [[ -n $daemon_pid ]]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# run_cell BACKEND DEPTH QUEUES REP: results appended to $work/BACKEND-dDEPTH-qQUEUES.tsv
run_cell() {
  local backend=$1 depth=$2 q=$3 rep=$4
  local cell=$work/$backend-d$depth-q$q
  mkdir -p "$cell/shared"
  case $backend in
    # shellcheck disable=SC2086
    svfsd) "$svfsd" --socket-path "$cell/sock" --shared-dir "$cell/shared" --cache auto ${SVFSD_ARGS:-} \
             >"$cell/daemon.log" 2>&1 & ;;
    virtiofsd) "$virtiofsd" --socket-path="$cell/sock" -o source="$cell/shared" -o cache=auto \
                 -o sandbox=chroot >"$cell/daemon.log" 2>&1 & ;;
  esac
  daemon_pid=$!
  for _ in $(seq 100); do [[ -S $cell/sock ]] && break; sleep 0.05; done
  log "$backend depth $depth queues $q, run $rep of $repeat ($seconds s per row)"
  if ! "$bench" --socket "$cell/sock" --seconds "$seconds" --depth "$depth" --queues "$q" \
        --dir-entries "$entries" $driver_poll --backend-pid "$daemon_pid" --tsv \
        >"$cell/out" 2>"$cell/err"; then
    log "$backend depth $depth queues $q: FAILED: $(tail -1 "$cell/err")"
  fi
  grep -v '^ROW\|^ENTRIES\|^CPU' "$cell/out" | sed "s/^/    /" >&2 || true
  # One line per row: name, ops/s, p50, p99, backend ns per request.
  awk -F'\t' '$1 == "CPU" { cpu[$2] = $3 } $1 == "ROW" { row[++n] = $0 }
    END { for (i = 1; i <= n; i++) { split(row[i], f, "\t")
            printf "%s\t%s\t%s\t%s\t%s\n", f[2], f[3], f[4], f[5], (f[2] in cpu) ? cpu[f[2]] : "" } }' \
    "$cell/out" >>"$cell.tsv" || true
  # Entries per READDIRPLUS reply, for the floor: kept from the last cell that printed them.
  local e
  e=$(grep -m1 '^ENTRIES' "$cell/out" | cut -f2 || true)
  if [[ -n $e ]]; then echo "$e" >"$work/entries"; fi
  kill "$daemon_pid" 2>/dev/null || true
  wait "$daemon_pid" 2>/dev/null || true
  daemon_pid=
  rm -rf "$cell"
}

# floor REP: the bare syscalls, single-threaded, appended to $work/floor.tsv
floor() {
  local readdir_entries
  readdir_entries=$(cat "$work/entries" 2>/dev/null || echo 0)
  log "syscall floor, run $1 of $repeat (single thread, $seconds s per row, READDIRPLUS = $readdir_entries entries)"
  mkdir -p "$work/floor"
  if ! "$bench" --floor "$work/floor" --seconds "$seconds" --dir-entries "$entries" \
      --readdir-entries "$readdir_entries" --tsv >"$work/floor.out" 2>"$work/floor.err"; then
    log "syscall floor, run $1: FAILED: $(tail -1 "$work/floor.err")"
  fi
  grep -v '^ROW' "$work/floor.out" | sed "s/^/    /" >&2 || true
  grep '^ROW' "$work/floor.out" | cut -f2- >>"$work/floor.tsv" || true
  rm -rf "$work/floor"
}

for rep in $(seq "$repeat"); do
  for d in $depths; do
    for q in $queues_list; do run_cell svfsd "$d" "$q" "$rep"; done
    if [[ $have_c == 1 ]]; then run_cell virtiofsd "$d" 1 "$rep"; fi
  done
  floor "$rep"
done
readdir_entries=$(cat "$work/entries" 2>/dev/null || echo 0)

table() {
  echo "Host-only vhost-user benchmark ($(nproc) cores, $(uname -r)), $seconds s per row, median of $repeat runs,"
  echo "directory of $entries entries (READDIRPLUS op = one 64 KiB reply = $readdir_entries entries). depth requests"
  echo "stay in flight per queue; latency = p50/p99 of one request's round trip (CREATE+UNLINK: op = one"
  echo "create/release/unlink/forget cycle, latency per request); floor = bare syscalls, one thread."
  echo "ns/req = the backend's CPU time per request (all its threads; floor: ns per bare-syscall op)."
  if [[ -n $driver_poll ]]; then
    echo "Driver: poll mode (spins on the used rings, interrupts off; --driver-poll)."
  else
    echo "Driver: Linux virtio-fs notification discipline (EVENT_IDX; sleeps on the call eventfd)."
  fi
  echo
  printf '| %-13s | %5s | %6s | %12s | %17s | %12s | %15s | %17s | %11s | %9s | %11s | %11s | %12s |\n' \
    row depth queues "svfsd req/s" "svfsd p50/p99 us" "svfsd ns/req" "virtiofsd req/s" "vfsd p50/p99 us" "vfsd ns/req" \
    "svfsd/vfsd" "floor ops/s" "svfsd/floor" "floor ns/op"
  echo '|---------------|------:|-------:|-------------:|------------------:|-------------:|----------------:|------------------:|------------:|----------:|------------:|------------:|-------------:|'
  for row in LOOKUP GETATTR READDIRPLUS CREATE+UNLINK "READ 4K" "WRITE 4K"; do
    for d in $depths; do
      for q in $queues_list; do
        awk -F'\t' -v row="$row" -v d="$d" -v q="$q" '
          # median(vals, lats, n): the latency text of the run with the median req/s
          function median(v, l, n,   i, j, t) {
            for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j-1] > v[j]; j--) {
              t = v[j]; v[j] = v[j-1]; v[j-1] = t; t = l[j]; l[j] = l[j-1]; l[j-1] = t
            }
            mid = int((n + 1) / 2); return v[mid]
          }
          FILENAME ~ /floor.tsv$/ { if ($1 == row) { fn++; fv[fn] = $2; flat[fn] = "" } ; next }
          # The latency and CPU columns travel with their run through the median (one text).
          FILENAME ~ /virtiofsd/  { if ($1 == row) { cn++; cv[cn] = $2; clat[cn] = sprintf("%.0f/%.0f\t%s", $3, $4, $5) } ; next }
          { if ($1 == row) { sn++; sv[sn] = $2; slat[sn] = sprintf("%.0f/%.0f\t%s", $3, $4, $5) } }
          END {
            if (sn) { s = median(sv, slat, sn); split(slat[mid], st, "\t"); sl = st[1]; sc = st[2] }
            if (cn) { c = median(cv, clat, cn); split(clat[mid], ct, "\t"); cl = ct[1]; cc = ct[2] }
            if (fn) fl = median(fv, flat, fn)
            printf "| %-13s | %5s | %6s | %12s | %17s | %12s | %15s | %17s | %11s | %9s | %11s | %11s | %12s |\n", row, d, q,
              s == "" ? "-" : s, sl == "" ? "-" : sl, sc == "" ? "-" : sc,
              c == "" ? "-" : c, cl == "" ? "-" : cl, cc == "" ? "-" : cc,
              (s != "" && c != "") ? sprintf("%.2fx", s / c) : "-",
              fl == "" ? "-" : fl, (s != "" && fl != "") ? sprintf("%.2f", s / fl) : "-",
              fl == "" ? "-" : sprintf("%.0f", 1e9 / fl)
          }' "$work/svfsd-d$d-q$q.tsv" \
             $( [[ -f $work/virtiofsd-d$d-q1.tsv ]] && echo "$work/virtiofsd-d$d-q1.tsv" ) \
             "$work/floor.tsv"
      done
    done
  done
}

if [[ -n $out ]]; then table | tee "$out"; else table; fi
