#!/usr/bin/env bash
# CI's check of svfs-bench (ctest e2e.svfs-bench): `svfs-bench.sh --quick`, as a user runs it
# (two VMs each: svfsd none, always, shared and dax, the C virtiofsd cache=always, virtio-9p
# cache=loose; a 500-file tree), and what a user reads from it: every workload timed for each,
# svfsd none and shared coherent (0 stale in the coherence steps and in status) while shared's
# warm stat pass stays in the guest's cache, requests counted for both daemons (a cold stat pass
# sends at least one per file), the Markdown report, and a plot per workload.
# Usage: tests/bench/svfs-bench-test.sh [svfs-bench options, e.g. --svfsd PATH --versiond PATH]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fail() { echo "svfs-bench-test: FAIL: $*"; exit 1; }
[ -x /usr/lib/qemu/virtiofsd ] ||
  { echo "svfs-bench-test: SKIP: no /usr/lib/qemu/virtiofsd (apt-get install qemu-system-common)"; exit 77; }
out=$(mktemp -d /var/tmp/svfs-bench-test.XXXXXX)
trap 'rm -rf "$out"' EXIT

"$here/svfs-bench.sh" --quick --check --out "$out" "$@"
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
configs=("svfsd none 2" "svfsd always 2" "svfsd shared 2" "svfsd dax 2" "virtiofsd always 2"
  "9p always 2")
for cfg in "${configs[@]}"; do
  read -r d m n <<<"$cfg"
  for w in untar walk stat-cold stat-warm status churn build; do
    s=$(value "$d" "$m" "$n" "$w" secs)
    awk -v s="$s" 'BEGIN{exit !(s + 0 > 0)}' || fail "$d $m: $w has no guest time ('$s')"
  done
  [ "$(value "$d" "$m" "$n" coherence checks)" -gt 0 ] || fail "$d $m: no coherence checks"
  [ "$(value "$d" "$m" "$n" status checks)" -gt 0 ] || fail "$d $m: status changed no file"
  if [ "$d" != 9p ]; then
    cold=$(value "$d" "$m" "$n" stat-cold requests)
    [ "${cold:-0}" -ge 500 ] || fail "$d $m: the cold stat pass counted '$cold' requests for 500 files"
  fi
done
for m in none shared; do
  [ "$(value svfsd $m 2 coherence stale)" = 0 ] || fail "svfsd $m: stale coherence checks"
  [ "$(value svfsd $m 2 status stale)" = 0 ] || fail "svfsd $m: status missed changed files"
done
cold=$(value svfsd shared 2 stat-cold requests)
warm=$(value svfsd shared 2 stat-warm requests)
[ "$warm" -lt 50 ] || fail "svfsd shared: the warm stat pass sent $warm requests for 500 files"
[ -z "$(value 9p always 2 stat-cold requests)" ] || fail "9p: a request count where QEMU counts none"
grep -q '^### Guest time (s)' "$out/results.md" || fail "results.md has no time table"
for cfg in "${configs[@]}"; do
  read -r d m n <<<"$cfg"
  grep -q "^| $d | $m | $n |" "$out/results.md" || fail "results.md has no $d $m row"
done
if /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
  for w in untar walk stat-cold stat-warm status churn build; do
    [ -s "$out/$w.png" ] || fail "no plot $w.png"
  done
else
  echo "svfs-bench-test: no python3-matplotlib: plots not checked"
fi
echo "svfs-bench-test: ok (stat-cold $cold requests, stat-warm $warm)"
