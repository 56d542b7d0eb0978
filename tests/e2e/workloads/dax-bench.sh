# DAX read figures in a real guest (tests/bench/run-dax-bench.sh runs this once per mode).
# Env: BENCH_FILE, a file the host put in the share; RAND_READS, how many random 4 KiB reads.
# Prints one line the driver reads:
#   DAXBENCH seq_cold=MIBS seq_warm=MIBS rand_cold=MIBS rand_warm=MIBS cached_kib=KIB maps=N rmaps=N
# cold: after drop_caches (the page cache is gone; DAX mappings are not, as long as the inode
# stays cached, so a DAX "cold" pass after the first is warm-mapped); warm: straight after. cached_kib: how much /proc/meminfo's Cached grew over the cold sequential pass
# (the guest's page-cache footprint of reading the file); maps, rmaps: svfsd's SETUPMAPPING and
# REMOVEMAPPING counts.
mnt=${1:-/mnt}
. /guest-lib.sh
tool=/bin/svfs-guest-tool
file=$mnt/$BENCH_FILE
[ -x "$tool" ] || { echo "SVFS-E2E-ERROR svfs-guest-tool missing from the image"; exit 1; }
[ -r "$file" ] || { echo "SVFS-E2E-ERROR $file missing"; exit 1; }
cached() { awk '/^Cached:/ { print $2 }' /proc/meminfo; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# rate ORDER COUNT: MiB/s of one pass, or "error"
rate() {
  out=$("$tool" readbench "$file" "$1" "$2") || { echo error; return; }
  echo "$out" | awk '{ print $5 }'
}
grep " $mnt " /proc/mounts
drop
cached0=$(cached)
seq_cold=$(rate seq 0)
cached1=$(cached)
seq_warm=$(rate seq 0)
drop
rand_cold=$(rate rand "$RAND_READS")
rand_warm=$(rate rand "$RAND_READS")
stats=$(hostact stats)
maps=$(echo "$stats" | requests SETUPMAPPING)
rmaps=$(echo "$stats" | requests REMOVEMAPPING)
echo "DAXBENCH seq_cold=$seq_cold seq_warm=$seq_warm rand_cold=$rand_cold rand_warm=$rand_warm cached_kib=$((cached1 - cached0)) maps=$maps rmaps=$rmaps"
for r in "$seq_cold" "$seq_warm" "$rand_cold" "$rand_warm"; do
  [ "$r" != error ] || bad "a read pass failed"
done
[ "$fail" = 0 ] && ok "four read passes over $BENCH_FILE"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
