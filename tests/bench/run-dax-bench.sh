#!/usr/bin/env bash
# DAX against the page cache: a real guest reads one host file (--file-mib, default 256) in 4 KiB
# preads, sequentially and at random offsets, cold (after drop_caches) and warm, once per mode:
#   dax-W   -o dax with a W MiB window (svfsd --dax-window-size, the patched QEMU's cache-size),
#           svfsd --cache auto for metadata
#   always  svfsd --cache always (the guest's page cache holds the data)
#   none    svfsd --cache none (every read is a FUSE_READ round trip)
# and prints a table of MiB/s per pass, how much the guest's page cache (/proc/meminfo Cached)
# grew while it read the file, and svfsd's SETUPMAPPING and REMOVEMAPPING counts
# (tests/e2e/workloads/dax-bench.sh).
#
#   tests/bench/run-dax-bench.sh [--file-mib N] [--rand-reads N] [--windows "512 64"]
#                                [--modes "dax always none"] [--kernel 6.1|6.12]
#
# About a minute per mode under TCG on 2 cores (the first run builds the patched QEMU, ~4 min).
# Needs what run-guest.sh needs (root, QEMU, the image).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
file_mib=256
rand_reads=16384
windows="512 64"
modes="dax always none"
kernel=6.1
while [[ $# -gt 0 ]]; do
  case $1 in
    --file-mib) file_mib=$2; shift 2 ;;
    --rand-reads) rand_reads=$2; shift 2 ;;
    --windows) windows=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --kernel) kernel=$2; shift 2 ;;
    *) echo "usage: $0 [--file-mib N] [--rand-reads N] [--windows \"MIB...\"] [--modes \"dax always none\"] [--kernel 6.1|6.12]" >&2
       exit 2 ;;
  esac
done
work=$(mktemp -d /var/tmp/dax-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/share"
echo "making a ${file_mib} MiB file of random bytes..." >&2
head -c "$((file_mib * 1048576))" /dev/urandom > "$work/share/data"

# One QEMU for every mode (the patched build; without --dax-window it is a plain 7.2), and TCG
# for every mode (run-guest.sh's auto probe could pick KVM for some rows), so the rows differ
# only in the cache mode.
qemu_vars=$("$repo/tests/e2e/qemu-dax/build.sh") || { echo "tests/e2e/qemu-dax/build.sh failed" >&2; exit 1; }
eval "$qemu_vars"

runs=()
for m in $modes; do
  if [ "$m" = dax ]; then for w in $windows; do runs+=("dax-$w"); done; else runs+=("$m"); fi
done
# Guest RAM: room for the whole file in the page cache, so cache=always is not cut short.
memory=$((file_mib * 2 + 512))
printf '| mode | seq cold | seq warm | rand cold | rand warm | Cached growth | SETUPMAPPING | REMOVEMAPPING |\n'
printf '|------|---------:|---------:|----------:|----------:|--------------:|-------------:|--------------:|\n'
for run in "${runs[@]}"; do
  echo "$run: booting a $kernel guest..." >&2
  args=(--kernel "$kernel" --qemu "$SVFS_QEMU_DAX" --accel tcg --memory "$memory"
        --share "$work/share" --timeout 900
        --workload "$repo/tests/e2e/workloads/dax-bench.sh" --env BENCH_FILE=data
        --env RAND_READS="$rand_reads")
  case $run in
    dax-*) args+=(--cache auto --dax-window "${run#dax-}M" --mount-opts dax) ;;
    *) args+=(--cache "$run") ;;
  esac
  log=$work/$run.log
  if ! "$repo/tests/e2e/run-guest.sh" "${args[@]}" > "$log" 2>&1; then
    echo "run-guest.sh failed ($run); its log:" >&2
    tail -20 "$log" >&2
    exit 1
  fi
  result=$(tr -d '\r' < "$log" | grep -o 'DAXBENCH .*' | tail -1) || true
  if [ -z "$result" ]; then
    echo "no DAXBENCH line from the guest ($run); its log:" >&2
    tail -20 "$log" >&2
    exit 1
  fi
  field() { echo "$result" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
  kib=$(field cached_kib)
  printf '| %s | %s MiB/s | %s MiB/s | %s MiB/s | %s MiB/s | %s MiB | %s | %s |\n' "$run" \
    "$(field seq_cold)" "$(field seq_warm)" "$(field rand_cold)" "$(field rand_warm)" \
    "$(( ${kib:-0} / 1024 ))" "$(field maps)" "$(field rmaps)"
  rm -f "$work/share"/.hostack-*
done
echo "(${file_mib} MiB file; rand: ${rand_reads} 4 KiB reads at the same pseudo-random offsets per pass)"
