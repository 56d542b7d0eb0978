# svfs shared versions in one guest with the patched fuse.ko/virtiofs.ko (guest-kmod-patches/).
#   tests/e2e/run-guest.sh --kmod DIR --versiond build/versiond/svfs-versiond \
#       --workload tests/e2e/workloads/versions.sh [--mount-opts noversions --env VERSIONS=off]
# Env: VERSIONS=on|off (default on: the module must have found the table and negotiated),
#      FILES (default 300): files stat'ed per pass.
# Uses the runner's host actions (SVFS-E2E-HOSTACT, see run-guest.sh): svfsd's request counters
# around the second stat pass, and changes made directly in the host directory between passes.
mnt=${1:-/mnt}
VERSIONS=${VERSIONS:-on}
FILES=${FILES:-300}
. /guest-lib.sh

echo "== kernel log (svfs)"
dmesg | grep -i 'svfs' | sed 's/^\[[ 0-9.]*\] //'
if [ "$VERSIONS" = on ]; then
  if dmesg | grep -q 'svfs: version table on'; then ok "module found the version table"
  else bad "module found no version table"; fi
  if dmesg | grep -q 'svfs: shared versions on'; then ok "shared versions negotiated (guest)"
  else bad "shared versions not negotiated (guest)"; fi
else
  if dmesg | grep -q 'svfs: shared versions on'; then bad "shared versions on, expected off"
  else ok "shared versions off (as expected)"; fi
fi

echo "== tree of $FILES files"
mkdir -p "$mnt/tree"
i=0
while [ "$i" -lt "$FILES" ]; do echo "$i" >"$mnt/tree/f$i"; i=$((i + 1)); done
echo AAAA >"$mnt/tree/data"
check "data written" "$(cat "$mnt/tree/data")" AAAA

statpass() {
  i=0
  missing=0
  while [ "$i" -lt "$FILES" ]; do
    [ -f "$mnt/tree/f$i" ] || missing=$((missing + 1))
    i=$((i + 1))
  done
  echo "$missing"
}
t0=$(cut -d' ' -f1 /proc/uptime)
check "stat pass 1" "$(statpass)" 0
t1=$(cut -d' ' -f1 /proc/uptime)
before=$(hostact stats)
t2=$(cut -d' ' -f1 /proc/uptime)
check "stat pass 2" "$(statpass)" 0
t3=$(cut -d' ' -f1 /proc/uptime)
after=$(hostact stats)
lk0=$(echo "$before" | requests LOOKUP)
lk1=$(echo "$after" | requests LOOKUP)
ga0=$(echo "$before" | requests GETATTR)
ga1=$(echo "$after" | requests GETATTR)
lk=$((lk1 - lk0))
ga=$((ga1 - ga0))
echo "COUNTERS pass2 files=$FILES LOOKUP=$lk GETATTR=$ga" \
  "pass1_s=$(echo "$t1 $t0" | awk '{print $1 - $2}') pass2_s=$(echo "$t3 $t2" | awk '{print $1 - $2}')"
if [ -z "$(echo "$after" | requests total | grep -v '^0$')" ]; then
  echo "no request counters from the daemon ($SVFS_DAEMON): counter checks skipped"
elif [ "$VERSIONS" = on ]; then
  # The stats ack itself is a new file in the root: a few lookups are expected.
  if [ $((lk + ga)) -le $((FILES / 20 + 10)) ]; then ok "pass 2 served from the guest cache ($lk LOOKUP, $ga GETATTR)"
  else bad "pass 2 sent $lk LOOKUP and $ga GETATTR for $FILES files"; fi
else
  if [ $((lk + ga)) -ge "$FILES" ]; then ok "pass 2 went to the daemon ($lk LOOKUP, $ga GETATTR), as without versions"
  else bad "pass 2 sent only $lk LOOKUP and $ga GETATTR for $FILES files without versions"; fi
fi

echo "== negative and positive dentries kept while the parent is unchanged"
c0=$(hostact stats)
i=0
while [ "$i" -lt 50 ]; do
  [ -e "$mnt/tree/nothere" ] && bad "tree/nothere exists"
  [ -f "$mnt/tree/f1" ] || bad "tree/f1 missing"
  i=$((i + 1))
done
c1=$(hostact stats)
lk=$(($(echo "$c1" | requests LOOKUP) - $(echo "$c0" | requests LOOKUP)))
ga=$(($(echo "$c1" | requests GETATTR) - $(echo "$c0" | requests GETATTR)))
echo "COUNTERS 50x(missing name, existing file) LOOKUP=$lk GETATTR=$ga"
if [ "$VERSIONS" = on ]; then
  # 100 lookups without caching; the stats acks (new files in the root) cost a few.
  if [ $((lk + ga)) -le 10 ]; then ok "repeated lookups served from the dentry cache ($lk LOOKUP, $ga GETATTR)"
  else bad "repeated lookups sent $lk LOOKUP and $ga GETATTR"; fi
fi

echo "== directory listing cached while unchanged"
ls "$mnt/tree" >/dev/null
d0=$(hostact stats)
n1=$(ls "$mnt/tree" | wc -l)
d1=$(hostact stats)
rd=$(($(echo "$d1" | requests READDIR READDIRPLUS) - $(echo "$d0" | requests READDIR READDIRPLUS)))
echo "COUNTERS second listing of $n1 entries: READDIR+READDIRPLUS=$rd"
if [ "$VERSIONS" = on ]; then
  check "second listing served from the readdir cache (READDIR requests)" "$rd" 0
fi

echo "== page cache kept while unchanged"
cat "$mnt/tree/data" >/dev/null
reads0=$(hostact stats | requests READ)
check "data read again" "$(cat "$mnt/tree/data")" AAAA
reads1=$(hostact stats | requests READ)
if [ "$VERSIONS" = on ]; then
  # One READ is the runner's ack file (read after the first snapshot).
  if [ $((reads1 - reads0)) -le 1 ]; then ok "second read of unchanged data from the page cache"
  else bad "second read of unchanged data sent $((reads1 - reads0)) READ requests"; fi
fi

echo "== changes made on the host between passes"
[ -e "$mnt/tree/hostnew" ] && bad "hostnew exists before the host made it"
hostact write tree/data BBBB >/dev/null
hostact write tree/f7 hello-from-host >/dev/null
hostact chmod 600 tree/f8 >/dev/null
hostact touch tree/hostnew >/dev/null
hostact rm tree/f9 >/dev/null
# The ack of the last action is seen, so versiond has processed the events before it.
check "host write, same size: content" "$(cat "$mnt/tree/data")" BBBB
check "host write: content" "$(cat "$mnt/tree/f7")" hello-from-host
check "host write: size" "$(stat -c %s "$mnt/tree/f7")" 16
check "host chmod" "$(stat -c %a "$mnt/tree/f8")" 600
check "host create (negative dentry dropped)" "$([ -e "$mnt/tree/hostnew" ] && echo yes)" yes
check "host unlink" "$([ -e "$mnt/tree/f9" ] && echo present || echo gone)" gone
ls "$mnt/tree" | grep -qx hostnew && ok "host create in listing" || bad "hostnew missing from the listing"
ls "$mnt/tree" | grep -qx f9 && bad "f9 still listed" || ok "host unlink in listing"

echo "== guest changes"
echo CCCC >"$mnt/tree/data"
check "guest write then read" "$(cat "$mnt/tree/data")" CCCC
chmod 640 "$mnt/tree/f10"
check "guest chmod" "$(stat -c %a "$mnt/tree/f10")" 640
mv "$mnt/tree/f11" "$mnt/tree/f11.moved"
check "guest rename" "$([ -e "$mnt/tree/f11" ] && echo old; [ -e "$mnt/tree/f11.moved" ] && echo new)" new

echo "== the guest cannot write the table"
dev=
for d in /sys/bus/pci/devices/*; do
  [ "$(cat "$d/vendor" 2>/dev/null)" = 0x1af4 ] && [ "$(cat "$d/device" 2>/dev/null)" = 0x1110 ] && dev=$d
done
if [ -z "$dev" ]; then
  [ "$VERSIONS" = on ] && bad "no ivshmem device" || echo "no ivshmem device: skipped"
else
  bar=$(sed -n 3p "$dev/resource" | cut -d' ' -f1)
  echo "ivshmem $(basename "$dev") BAR2 at $bar"
  host0=$(hostact tableword 16)
  guest0=$(devmem $((bar + 20)) 32)
  devmem $((bar + 20)) 32 0x5a5a5a5a
  guest1=$(devmem $((bar + 20)) 32)
  host1=$(hostact tableword 16)
  echo "reserved word: guest before $guest0, after write $guest1; host stride+reserved before $host0, after $host1"
  check "host table unchanged by a guest write" "$host1" "$host0"
  check "guest view unchanged by its write" "$guest1" "$guest0"
fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
