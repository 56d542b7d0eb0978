#!/usr/bin/env bash
# run-guest.sh with the patched guest modules: builds (or reuses the cached) fuse.ko/virtiofs.ko
# (6.12: svfs_fuse.ko) from guest-kmod-patches/ (build.sh checks that image, headers and source
# versions agree), then runs tests/e2e/run-guest.sh --kmod DIR with the remaining arguments.
#   tests/e2e/kmod-guest.sh [--kernel 6.12] [--runner tests/e2e/dax.sh] \
#       --versiond build/versiond/svfs-versiond --workload tests/e2e/workloads/versions.sh
# --runner: a wrapper of run-guest.sh that passes on its arguments (default run-guest.sh itself).
# Exit status: as run-guest.sh; 77 (skipped) if not root; 1 if the modules cannot be built.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
[ "$(id -u)" -eq 0 ] || { echo "kmod-guest: SKIP: needs root"; exit 77; }
# --kernel 6.1|6.12 / --kver KVER pick the guest kernel (scripts/guest-image.sh); the rest goes to
# run-guest.sh.
image_opts=()
rest=()
runner=$here/run-guest.sh
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel|--kver) image_opts+=("$1" "$2"); shift 2 ;;
    --runner) runner=$2; shift 2 ;;
    *) rest+=("$1"); shift ;;
  esac
done
# The guest image first: it installs the kernel image package build.sh checks against.
image_vars=$("$repo/scripts/guest-image.sh" "${image_opts[@]}") ||
  { echo "kmod-guest: FAIL: scripts/guest-image.sh"; exit 1; }
eval "$image_vars"
vars=$("$repo/guest-kmod-patches/build.sh" --kver "$SVFS_GUEST_KVER") ||
  { echo "kmod-guest: FAIL: guest-kmod-patches/build.sh"; exit 1; }
eval "$vars"
exec "$runner" "${image_opts[@]}" --kmod "$SVFS_KMOD_DIR" "${rest[@]}"
