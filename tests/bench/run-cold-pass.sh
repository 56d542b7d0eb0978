#!/usr/bin/env bash
# The two-VM cold stat pass, repeated: shared against always (issue 13's 1.1x target). One run of
# tests/e2e/two-vm.sh varies by tens of percent on a TCG host, so this runs --rounds rounds, each
# both modes (order alternating per round, so drift hits both), and prints every round and the
# median per mode and of the per-round ratio shared/always.
#
#   tests/bench/run-cold-pass.sh [--rounds N] [--files N]  (default 5 rounds, 10,000 files)
#
# About 2 minutes per round on 2 cores. Needs what two-vm.sh needs (root, QEMU, the guest image).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
rounds=5
files=10000
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --files) files=$2; shift 2 ;;
    *) echo "usage: $0 [--rounds N] [--files N]" >&2; exit 2 ;;
  esac
done
work=$(mktemp -d /var/tmp/cold-pass.XXXXXX)
trap 'rm -rf "$work"' EXIT
# Column 7 of two-vm.sh's table: "B's time per pass (s)", the cold pass first.
cold_of() { awk -F'|' -v mode="$2" '$2 ~ "^ *"mode" *$" { split($7, t, "/"); gsub(/ /, "", t[1]); print t[1] }' "$1"; }
printf '| round | order          | always (s) | shared (s) | shared / always |\n'
printf '|------:|----------------|-----------:|-----------:|----------------:|\n'
for ((r = 1; r <= rounds; r++)); do
  order=always,shared
  ((r % 2 == 0)) && order=shared,always
  echo "round $r/$rounds ($order)..." >&2
  if ! "$repo/tests/e2e/two-vm.sh" --modes "$order" --files "$files" --passes 2 --creates 0 \
      --table-out "$work/round$r.txt" > "$work/round$r.log" 2>&1; then
    echo "two-vm.sh failed in round $r; its log:" >&2
    tail -20 "$work/round$r.log" >&2
    exit 1
  fi
  a=$(cold_of "$work/round$r.txt" always)
  s=$(cold_of "$work/round$r.txt" shared)
  printf '| %5d | %-14s | %10s | %10s | %15s |\n' "$r" "$order" "$a" "$s" \
    "$(awk -v a="$a" -v s="$s" 'BEGIN { printf "%.2f", s / a }')"
  echo "$a $s" >> "$work/pairs"
done
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ma=$(awk '{ print $1 }' "$work/pairs" | median)
ms=$(awk '{ print $2 }' "$work/pairs" | median)
mr=$(awk '{ printf "%.4f\n", $2 / $1 }' "$work/pairs" | median)
printf '| median |               | %10s | %10s | %15.2f |\n' "$ma" "$ms" "$mr"
