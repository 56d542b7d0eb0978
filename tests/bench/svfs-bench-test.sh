#!/usr/bin/env bash
# CI's check of svfs-bench (ctest e2e.svfs-bench): a small run (svfsd shared with two VMs, the C
# virtiofsd cache=always and virtio-9p cache=none with one each, a 500-file tree) and what a user
# reads from it: every workload timed for each, shared mode coherent (0 stale in the coherence steps and in status) while its
# warm stat pass stays in the guest's cache, the Markdown report, and a plot per workload.
# Usage: tests/bench/svfs-bench-test.sh [svfs-bench options, e.g. --svfsd PATH --versiond PATH]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d /var/tmp/svfs-bench-test.XXXXXX)
trap 'rm -rf "$out"' EXIT
fail() { echo "svfs-bench-test: FAIL: $*"; exit 1; }

"$here/svfs-bench.sh" --configs svfsd:shared:2,virtiofsd:always:1,9p:none:1 --files 500 --check --out "$out" "$@"
rc=$?
[ "$rc" = 77 ] && exit 77
[ "$rc" = 0 ] || fail "svfs-bench exited $rc"
csv=$out/results.csv
[ -s "$csv" ] || fail "no results.csv"
# value DAEMON MODE VMS WORKLOAD COLUMN
value() {
  awk -F, -v d="$1" -v m="$2" -v n="$3" -v w="$4" -v col="$5" '
    NR == 1 { for (i = 1; i <= NF; i++) idx[$i] = i; next }
    $1 == d && $2 == m && $3 == n && $4 == w { print $idx[col]; exit }' "$csv"
}
for cfg in "svfsd shared 2" "virtiofsd always 1" "9p none 1"; do
  read -r d m n <<<"$cfg"
  for w in untar walk stat-cold stat-warm status churn build; do
    s=$(value "$d" "$m" "$n" "$w" secs)
    awk -v s="$s" 'BEGIN{exit !(s + 0 > 0)}' || fail "$d $m: $w has no guest time ('$s')"
  done
  [ -n "$(value "$d" "$m" "$n" coherence checks)" ] || fail "$d $m: no coherence checks"
  [ "$(value "$d" "$m" "$n" status checks)" -gt 0 ] || fail "$d $m: status changed no file"
done
[ "$(value svfsd shared 2 coherence stale)" = 0 ] || fail "svfsd shared: stale coherence checks"
[ "$(value svfsd shared 2 status stale)" = 0 ] || fail "svfsd shared: status missed changed files"
cold=$(value svfsd shared 2 stat-cold requests)
warm=$(value svfsd shared 2 stat-warm requests)
[ "$cold" -ge 500 ] || fail "svfsd shared: the cold stat pass sent $cold requests for 500 files (not cold?)"
[ "$warm" -lt 50 ] || fail "svfsd shared: the warm stat pass sent $warm requests for 500 files"
[ -z "$(value 9p none 1 stat-cold requests)" ] || fail "9p: a request count where QEMU counts none"
vfsd_cold=$(value virtiofsd always 1 stat-cold requests)
[ "${vfsd_cold:-0}" -ge 1 ] || fail "virtiofsd: no requests counted from its -d log ('$vfsd_cold')"
grep -q '^### Guest time (s)' "$out/results.md" || fail "results.md has no time table"
grep -q '^| svfsd | shared | 2 |' "$out/results.md" || fail "results.md has no svfsd shared row"
grep -q '^| virtiofsd | always | 1 |' "$out/results.md" || fail "results.md has no virtiofsd row"
if /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
  for w in untar walk stat-cold stat-warm status churn build; do
    [ -s "$out/$w.png" ] || fail "no plot $w.png"
  done
else
  echo "svfs-bench-test: no python3-matplotlib: plots not checked"
fi
echo "svfs-bench-test: ok (stat-cold $cold requests, stat-warm $warm)"
