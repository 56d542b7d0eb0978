# Guest side of tests/e2e/two-vm.sh: a command agent on the second serial port (ttyS1), so the
# harness coordinates the two guests without going through the shared directory under test.
# Protocol (one line each way): the harness sends "ID COMMAND"; the agent runs COMMAND with sh in
# the mount point (the functions of two-vm-ops.sh, and of bench-ops.sh if present, are defined) and answers
# "R ID RC OUTPUT", newlines of OUTPUT turned into tabs. "ID quit" ends the workload.
# A command still running after TWOVM_WATCHDOG seconds (default 90) gets the blocked tasks'
# stacks (sysrq w) printed on the console, so a hang says where the guest waits.
mnt=${1:-/mnt}
. /two-vm-ops.sh
# svfs-bench's workloads (tests/bench/svfs-bench.sh puts them in the initramfs).
[ -r /bench-ops.sh ] && . /bench-ops.sh
ctl=/dev/ttyS1
if ! stty -F "$ctl" raw -echo 2>/dev/null; then echo "FAIL no control port $ctl"; exit 1; fi
exec 3<>"$ctl"
echo "two-vm agent ${TWOVM_NAME:-?}: ready on $ctl"
echo "READY ${TWOVM_NAME:-?}" >&3
while IFS= read -r line <&3; do
  id=${line%% *}
  cmd=${line#* }
  if [ "$cmd" = quit ]; then echo "R $id 0 bye" >&3; break; fi
  (
    sleep "${TWOVM_WATCHDOG:-90}"
    echo "two-vm agent: '$cmd' still running after ${TWOVM_WATCHDOG:-90} s; blocked tasks:" >/dev/console
    echo 7 >/proc/sys/kernel/printk
    echo w >/proc/sysrq-trigger
  ) &
  watchdog=$!
  out=$(cd "$mnt" && eval "$cmd" 2>&1)
  rc=$?
  kill "$watchdog" 2>/dev/null
  wait "$watchdog" 2>/dev/null
  printf 'R %s %s %s\n' "$id" "$rc" "$(printf '%s' "$out" | tr '\n' '\t')" >&3
done
echo "1 passed, 0 failed"
