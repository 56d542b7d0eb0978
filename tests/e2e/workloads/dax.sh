# DAX in a real guest: the virtiofs mount with -o dax maps host files into the device's window
# (svfsd's SETUPMAPPING/REMOVEMAPPING, the patched QEMU's FS_MAP/FS_UNMAP).
#   tests/e2e/dax.sh (prepares the shared directory and runs this through run-guest.sh with
#   --dax-window and --mount-opts dax)
# Env (from tests/e2e/dax.sh): WINDOW_MIB, the window's size; FILES: "NAME:SHA256 ..." of files
# the host put in the shared directory before boot, together larger than the window.
# Checks: the mount is DAX; every file reads back byte for byte as on the host, and reading them
# all needed more mappings than the window holds (reclaim); a write through the window lands on
# the host, and so does a write() whose buffer is a DAX mapping (FS_IO); a MAP_SHARED mapping sees the host's writes and the host sees its stores while it
# is held; a file the host truncates under a mapping does not bring down the guest or svfsd.
mnt=${1:-/mnt}
. /guest-lib.sh
tool=/bin/svfs-guest-tool
[ -x "$tool" ] || { echo "SVFS-E2E-ERROR svfs-guest-tool missing from the image"; exit 1; }

echo "== mount"
grep " $mnt " /proc/mounts
if grep " $mnt " /proc/mounts | grep -q 'dax'; then ok "mounted with DAX ($(grep " $mnt " /proc/mounts | grep -o 'dax[=a-z]*'))"
else bad "the mount shows no dax option"; fi
dmesg | grep -i 'dax' | sed 's/^\[[ 0-9.]*\] /  klog: /'

mappings() { hostact stats | requests "$@"; }
set0=$(mappings SETUPMAPPING)

echo "== files through the window (${WINDOW_MIB} MiB)"
total=0
for entry in $FILES; do
  name=${entry%%:*}
  want=${entry#*:}
  got=$(sha256sum "$mnt/$name" | cut -d' ' -f1)
  check "read $name ($(($(stat -c %s "$mnt/$name") / 1024)) KiB) matches the host" "$got" "$want"
  total=$((total + $(stat -c %s "$mnt/$name")))
done
# A second pass: what the window dropped must be mapped again, and still be right.
for entry in $FILES; do
  name=${entry%%:*}
  check "reread $name matches the host" "$(sha256sum "$mnt/$name" | cut -d' ' -f1)" "${entry#*:}"
done
set1=$(mappings SETUPMAPPING)
rem1=$(mappings REMOVEMAPPING)
echo "SETUPMAPPING $((set1 - set0)) REMOVEMAPPING $rem1 for $((total / 1048576)) MiB read twice"
# 2 MiB per mapping: a window of WINDOW_MIB holds WINDOW_MIB/2 at a time.
if [ "$((set1 - set0))" -gt "$((WINDOW_MIB / 2))" ]; then
  ok "more mappings ($((set1 - set0))) than the window holds ($((WINDOW_MIB / 2))): the window was reused"
else bad "only $((set1 - set0)) SETUPMAPPINGs for a working set larger than the window"; fi
if [ "$rem1" -gt 0 ]; then ok "the guest reclaimed mappings (REMOVEMAPPING $rem1)"
else bad "no REMOVEMAPPING although the working set is larger than the window"; fi

echo "== a write through the window"
dd if=/dev/urandom of="$mnt/written" bs=64k count=64 2>/dev/null
sync
echo "HOSTCHECK sha256 $(sha256sum "$mnt/written" | cut -d' ' -f1) written"

echo "== a write whose buffer is the window (FS_IO)"
# write() from a DAX mapping: the guest sends the window's own addresses, which svfsd cannot
# reach; the VMM moves the data (FS_IO). The host checks the copy byte for byte.
if "$tool" write-from-map "$mnt/medium" "$mnt/from-window" >/tmp/fsio.out 2>&1; then
  ok "write() from a DAX mapping: $(cat /tmp/fsio.out) bytes"
else bad "write() from a DAX mapping failed: $(cat /tmp/fsio.out)"; fi
medium_sha=$(for entry in $FILES; do [ "${entry%%:*}" = medium ] && echo "${entry#*:}"; done)
echo "HOSTCHECK sha256 $medium_sha from-window"

echo "== MAP_SHARED: the guest's stores and the host's writes, while the mapping is held"
dd if=/dev/zero of="$mnt/shared" bs=4096 count=4 2>/dev/null
sync
rm -f /tmp/ready /tmp/go
"$tool" mmap-hold "$mnt/shared" 0 guest-store 8192 10 /tmp/ready /tmp/go >/tmp/hold.out 2>&1 &
hold=$!
n=0
while [ ! -e /tmp/ready ] && [ "$n" -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
check "the host sees the guest's store (no msync, mapping held)" "$(hostact read shared 0 11)" guest-store
hostact pwrite shared 8192 host-write >/dev/null
touch /tmp/go
wait "$hold"
check "the guest's mapping sees the host's write" "$(cat /tmp/hold.out)" host-write

if [ "${SVFS_CACHE:-}" = shared ]; then
  # The rule: data through the window is the host's page cache (coherent by construction);
  # metadata is versioned. So a host append is seen at once: the size through the version bump,
  # the new bytes through the window.
  echo "== shared versions and DAX: a host append"
  size0=$(stat -c %s "$mnt/shared")
  hostact pwrite shared "$size0" appended-by-host >/dev/null
  check "the size after the host's append (versioned metadata)" "$(stat -c %s "$mnt/shared")" $((size0 + 16))
  check "the appended bytes (through the window)" "$(tail -c 16 "$mnt/shared")" appended-by-host
fi

echo "== the host truncates a file under a guest mapping"
dd if=/dev/urandom of="$mnt/truncated" bs=1M count=4 2>/dev/null
sync
rm -f /tmp/ready /tmp/go
"$tool" mmap-hold "$mnt/truncated" 0 - 3145728 16 /tmp/ready /tmp/go >/tmp/hold.out 2>&1 &
hold=$!
n=0
while [ ! -e /tmp/ready ] && [ "$n" -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
hostact truncate truncated 4096 >/dev/null
touch /tmp/go
wait "$hold"
got=$(cat /tmp/hold.out)
# Past a file's end a host MAP_SHARED mapping raises SIGBUS on access. Under TCG a guest load
# through the window is QEMU's own access; the patched QEMU catches that SIGBUS, maps a zero page
# there and retries (tests/e2e/qemu-dax), so the guest reads zeros instead of QEMU dying. Under
# KVM the fault is KVM's on QEMU's behalf: not covered here (these tests run TCG).
check "a mapping past the host's truncation reads zeros (guest and QEMU live on)" "$got" "<zeros>"
check "svfsd still serves (stat of the truncated file)" "$(stat -c %s "$mnt/truncated")" 4096
check "and reads" "$(cat "$mnt/shared" | head -c 11)" guest-store

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
