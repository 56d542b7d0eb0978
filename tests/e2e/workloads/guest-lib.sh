# Helpers the guest workloads share; run-guest.sh puts this file at /guest-lib.sh in the guest.
# A workload sets mnt (the virtiofs mount) and sources it: . /guest-lib.sh
pass=0
fail=0
ok() { echo "PASS $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
check() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: got '$2', want '$3'"; fi; }

echo 0 >/tmp/hostact.id
# hostact KIND ARGS: ask the runner to act on the host (SVFS-E2E-HOSTACT, see run-guest.sh),
# wait for its ack file, print the ack. The request goes to the console (stderr): stdout is often
# captured. Ids are kept in a file because callers run this in a subshell.
hostact() {
  act=$(($(cat /tmp/hostact.id) + 1))
  echo "$act" >/tmp/hostact.id
  echo "SVFS-E2E-HOSTACT $act $* ;" >&2
  n=0
  while [ ! -e "$mnt/.hostack-$act" ]; do
    n=$((n + 1))
    if [ "$n" -gt 300 ]; then echo "hostact $act ($*): no ack after 60 s" >&2; return 1; fi
    sleep 0.2
  done
  cat "$mnt/.hostack-$act"
}
# requests OPCODE... < stats ack: the sum of their request counts
requests() { awk -v ops=" $* " 'index(ops, " " $1 " ") { n += $2 } END { print n + 0 }'; }
