#!/bin/sh
# CPython's file-system tests in the guest, on the virtiofs mount ($1). tests/posix/run.sh
# --guest puts a minimal root with Debian's python3 and its test suite in the share (pyroot/);
# this chroots into it (on the mount, so even the interpreter is read through svfsd) and runs
# the suite in pyroot/work/guest-USER as root and as nobody, each writing its outcomes there.
# Knobs: MODULES (the test modules), USERS ("root nobody").
root=${1:-/mnt}
py=$root/pyroot
MODULES=${MODULES:-test_os test_posix test_shutil}
USERS=${USERS:-root nobody}
[ -x "$py/usr/bin/python3" ] || { echo "FAIL no $py/usr/bin/python3 (run tests/posix/run.sh --guest)"; exit 1; }
mkdir -p "$py/proc" "$py/dev"
mount -t proc proc "$py/proc" || { echo "FAIL mount proc"; exit 1; }
mount -t devtmpfs devtmpfs "$py/dev" 2>/dev/null || mount --bind /dev "$py/dev"
# What the host's reference run has and a bare guest lacks: ptys (os.openpty), a loopback
# interface (test_os's sendfile tests serve on 127.0.0.1) and the host's clock (a TCG guest's
# clock starts from the RTC's whole second, but "now" timestamps are set by the host: utime(None)
# compared with time.time()). The clock is read from the share, as a file created there gets the
# host's time.
mkdir -p "$py/dev/pts"
mount -t devpts devpts "$py/dev/pts" 2>/dev/null
ifconfig lo 127.0.0.1 up 2>/dev/null
chroot "$py" /usr/bin/python3 -c '
import os, time
os.close(os.open("/.host-clock", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
time.clock_settime(time.CLOCK_REALTIME, os.stat("/.host-clock").st_mtime)
os.unlink("/.host-clock")' || echo "python-suite: could not set the clock from the host's"
rc=0
for user in $USERS; do
  dir=/work/guest-$user
  case $user in root) ids="" ;; *) ids="--as-user 65534 65534" ;; esac
  t0=$(cut -d' ' -f1 /proc/uptime)
  # stdin from /dev/null as on the host (not the console, a terminal: test_device_encoding).
  # shellcheck disable=SC2086
  env -i PATH=/usr/bin HOME="$dir" TMPDIR="$dir" LANG=C.UTF-8 \
    chroot "$py" /usr/bin/python3 /run_python_suite.py --chdir "$dir" $ids "$dir/outcomes" $MODULES \
    </dev/null >"$py$dir.log" 2>&1
  t1=$(cut -d' ' -f1 /proc/uptime)
  if [ -s "$py$dir/outcomes" ]; then
    echo "PASS python-suite $user: $(wc -l <"$py$dir/outcomes") tests run ($(echo "$t1 $t0" | awk '{printf "%.0f", $1 - $2}') s)"
  else
    echo "FAIL python-suite $user: no outcomes"; tail -20 "$py$dir.log"; rc=1
  fi
done
umount "$py/dev/pts" 2>/dev/null
umount "$py/dev" 2>/dev/null
umount "$py/proc"
exit $rc
