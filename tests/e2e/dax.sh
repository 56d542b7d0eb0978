#!/usr/bin/env bash
# DAX end to end: a real guest mounts the svfsd share with -o dax in the patched QEMU
# (tests/e2e/qemu-dax/, built and cached on first use) and runs workloads/dax.sh.
# The host puts files larger together than the window in the share first, so reading them
# through the window needs reclaim.
# Usage: tests/e2e/dax.sh [--window-mib N] [run-guest.sh options...]
#   --window-mib N   the DAX window (default 16; a power of 2, at least 2)
# Exit status as run-guest.sh (0 pass, 1 fail, 77 skip).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
window_mib=16
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --window-mib) window_mib=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done

share=$(mktemp -d /tmp/svfs-dax-share.XXXXXX)
trap 'rm -rf "$share"' EXIT
files=
add() {  # NAME KIB: a file of random bytes
  head -c "$(($2 * 1024))" /dev/urandom >"$share/$1"
  files+=" $1:$(sha256sum "$share/$1" | cut -d' ' -f1)"
}
# Twice the window in one file, plus files of a few ranges and one smaller than a page.
add big $((window_mib * 2 * 1024))
add medium 5000
add small 3
truncate -s 3M "$share/tiny-hole"  # sparse: reads zeros through the window
files+=" tiny-hole:$(sha256sum "$share/tiny-hole" | cut -d' ' -f1)"

"$here/run-guest.sh" --share "$share" --dax-window "${window_mib}M" --mount-opts dax \
  --workload "$here/workloads/dax.sh" --env WINDOW_MIB="$window_mib" --env FILES="${files# }" \
  "${args[@]}"
