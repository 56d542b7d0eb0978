# PASS/FAIL/SKIP lines and their counts for guest workloads (posix.sh, ids.sh); run-guest.sh
# puts this file at /checks.sh in the guest. A workload sources it: . /checks.sh
passed=0
failed=0
skipped=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }
skip() { echo "SKIP $1: $2"; skipped=$((skipped + 1)); }
# check NAME COMMAND...: PASS if the command succeeds, else FAIL with its output.
check() {
  name=$1
  shift
  if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "$(echo "$out" | tr '\n' ' ')"; fi
}
# summary: the "N passed, N failed, N skipped" line run-guest.sh reads; fails if any failed.
summary() {
  echo "$passed passed, $failed failed, $skipped skipped"
  [ "$failed" = 0 ]
}
