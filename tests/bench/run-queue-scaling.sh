#!/usr/bin/env bash
# Request queues against one queue: a 6.12 guest with 2 vCPUs runs tests/e2e/workloads/queues.sh
# (parallel processes making, stat'ing and removing files on a cache=none mount) with
# num-request-queues 1, 2 and 4, --rounds times each (order rotating per round), and prints each
# run's per-queue request counts and the median time per queue count.
#
#   tests/bench/run-queue-scaling.sh [--rounds N] [--kernel 6.12] [--smp 2] [--procs 4]
#                                    [--daemon-arg ARG]...
#
# About 15 s per run under TCG on 2 cores. Needs what run-guest.sh needs (root, QEMU, the image).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
rounds=3
kernel=6.12
smp=2
procs=4
daemon_args=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --kernel) kernel=$2; shift 2 ;;
    --smp) smp=$2; shift 2 ;;
    --procs) procs=$2; shift 2 ;;
    --daemon-arg) daemon_args+=(--daemon-arg "$2"); shift 2 ;;
    *) echo "usage: $0 [--rounds N] [--kernel 6.1|6.12] [--smp N] [--procs N] [--daemon-arg ARG]..." >&2
       exit 2 ;;
  esac
done
work=$(mktemp -d /var/tmp/queue-scaling.XXXXXX)
trap 'rm -rf "$work"' EXIT
counts=(1 2 4)
printf '| round | queues | time (s) | requests.0 | requests.1 | requests.2 | requests.3 |\n'
printf '|------:|-------:|---------:|-----------:|-----------:|-----------:|-----------:|\n'
for ((r = 1; r <= rounds; r++)); do
  for ((i = 0; i < ${#counts[@]}; i++)); do
    q=${counts[$(((i + r - 1) % ${#counts[@]}))]}
    echo "round $r/$rounds: $q queue(s)..." >&2
    log=$work/r$r-q$q.log
    if ! "$repo/tests/e2e/run-guest.sh" --kernel "$kernel" --smp "$smp" --queues "$q" --cache none \
        --workload "$repo/tests/e2e/workloads/queues.sh" --env PROCS="$procs" \
        "${daemon_args[@]}" --timeout 600 > "$log" 2>&1; then
      echo "run-guest.sh failed ($q queues, round $r); its log:" >&2
      tail -20 "$log" >&2
      exit 1
    fi
    result=$(tr -d '\r' < "$log" | grep -o 'QUEUERESULT .*' | tail -1)
    field() { echo "$result" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
    printf '| %5d | %6d | %8s | %10s | %10s | %10s | %10s |\n' "$r" "$q" "$(field secs)" \
      "$(field requests.0)" "$(field requests.1)" "$(field requests.2)" "$(field requests.3)"
    echo "$q $(field secs)" >> "$work/times"
  done
done
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
one=$(awk '$1 == 1 { print $2 }' "$work/times" | median)
echo
printf '| queues | median time (s) | against 1 queue |\n'
printf '|-------:|----------------:|----------------:|\n'
for q in "${counts[@]}"; do
  m=$(awk -v q="$q" '$1 == q { print $2 }' "$work/times" | median)
  printf '| %6d | %15s | %15s |\n' "$q" "$m" "$(awk -v a="$one" -v m="$m" 'BEGIN { printf "%.2fx", a / m }')"
done
