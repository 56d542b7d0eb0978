#!/usr/bin/env bash
# Runs tests/e2e/workloads/metadata.sh in a real guest against the C virtiofsd and svfsd (when it
# serves vhost-user) and prints the per-phase guest times side by side.
# Usage: tests/e2e/bench-metadata.sh [--cache MODE] [--svfsd PATH] [--env NAME=VALUE]...
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
args=()
svfsd_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --svfsd) svfsd_args=(--svfsd "$2"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
declare -A times
daemons=()
phases=()
for d in virtiofsd svfsd; do
  extra=()
  [ "$d" = svfsd ] && extra=("${svfsd_args[@]}")
  out=$("$here/run-guest.sh" --daemon "$d" "${extra[@]}" --workload "$here/workloads/metadata.sh" \
    "${args[@]}" 2>&1)
  rc=$?
  if [ "$rc" = 77 ]; then echo "bench: $d skipped: $(echo "$out" | grep SKIP | tail -n1)"; continue; fi
  if [ "$rc" != 0 ]; then echo "bench: $d failed:"; echo "$out" | tail -n 20; continue; fi
  daemons+=("$d")
  while read -r _ _ phase secs _; do
    [ -n "${times[$d/$phase]+x}" ] || [[ " ${phases[*]} " == *" $phase "* ]] || phases+=("$phase")
    times[$d/$phase]=$secs
  done \
    < <(echo "$out" | grep -E '^  guest\| TIME ')
  times[$d/total]=$(echo "$out" | sed -n 's/.*metadata elapsed: \([0-9.]*\) s.*/\1/p')
done
[ "${#daemons[@]}" -gt 0 ] || exit 1
printf '%-16s' phase; for d in "${daemons[@]}"; do printf '%12s' "$d"; done; echo
for phase in "${phases[@]}" total; do
  printf '%-16s' "$phase"
  for d in "${daemons[@]}"; do printf '%11ss' "${times[$d/$phase]:--}"; done
  echo
done
