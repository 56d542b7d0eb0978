#!/usr/bin/env bash
# Request queues against one queue: a 6.12 guest with 2 vCPUs runs tests/e2e/workloads/queues.sh
# (parallel processes making, stat'ing and removing files on a cache=none mount) on svfsd with
# num-request-queues 1, 2 and 4 and on the C virtiofsd (one request queue, all it serves),
# --rounds times each (order rotating per round), and prints each run's per-queue request counts
# (svfsd's) and the median time per daemon and queue count.
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
# daemon:queues; the C virtiofsd serves one request queue.
configs=(svfsd:1 svfsd:2 svfsd:4 virtiofsd:1)
printf '| round | daemon | queues | time (s) | requests.0 | requests.1 | requests.2 | requests.3 |\n'
printf '|------:|--------|-------:|---------:|-----------:|-----------:|-----------:|-----------:|\n'
for ((r = 1; r <= rounds; r++)); do
  for ((i = 0; i < ${#configs[@]}; i++)); do
    config=${configs[$(((i + r - 1) % ${#configs[@]}))]}
    daemon=${config%:*} q=${config#*:}
    echo "round $r/$rounds: $daemon, $q queue(s)..." >&2
    log=$work/r$r-$daemon-q$q.log
    args=(--daemon "$daemon" --env PROCS="$procs")
    if [[ $daemon == svfsd ]]; then args+=("${daemon_args[@]}"); else args+=(--env STATS=0); fi
    if ! "$repo/tests/e2e/run-guest.sh" --kernel "$kernel" --smp "$smp" --queues "$q" --cache none \
        --workload "$repo/tests/e2e/workloads/queues.sh" "${args[@]}" --timeout 600 \
        > "$log" 2>&1; then
      echo "run-guest.sh failed ($daemon, $q queues, round $r); its log:" >&2
      tail -20 "$log" >&2
      exit 1
    fi
    result=$(tr -d '\r' < "$log" | grep -o 'QUEUERESULT .*' | tail -1)
    field() { echo "$result" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
    counted() { [[ $daemon == svfsd ]] && field "$1" || echo "-"; }
    printf '| %5d | %-6s | %6d | %8s | %10s | %10s | %10s | %10s |\n' "$r" "$daemon" "$q" \
      "$(field secs)" "$(counted requests.0)" "$(counted requests.1)" "$(counted requests.2)" \
      "$(counted requests.3)"
    echo "$config $(field secs)" >> "$work/times"
  done
done
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
of() { awk -v c="$1" '$1 == c { print $2 }' "$work/times" | median; }
one=$(of svfsd:1)
vfsd=$(of virtiofsd:1)
echo
printf '| daemon | queues | median time (s) | against svfsd, 1 queue | C virtiofsd / svfsd |\n'
printf '|--------|-------:|----------------:|-----------------------:|--------------------:|\n'
for config in "${configs[@]}"; do
  m=$(of "$config")
  printf '| %-6s | %6s | %15s | %22s | %19s |\n' "${config%:*}" "${config#*:}" "$m" \
    "$(awk -v a="$one" -v m="$m" 'BEGIN { printf "%.2fx", a / m }')" \
    "$(awk -v v="$vfsd" -v m="$m" 'BEGIN { printf "%.2fx", v / m }')"
done
