#!/usr/bin/env bash
# run-guest.sh with the patched guest modules: builds (or reuses the cached) fuse.ko/virtiofs.ko
# from guest-kmod-patches/ (build.sh checks that image, headers and source versions agree), then
# runs tests/e2e/run-guest.sh --kmod DIR with the remaining arguments.
#   tests/e2e/kmod-guest.sh --versiond build/versiond/svfs-versiond \
#       --workload tests/e2e/workloads/versions.sh
# Exit status: as run-guest.sh; 77 (skipped) if not root; 1 if the modules cannot be built.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
[ "$(id -u)" -eq 0 ] || { echo "kmod-guest: SKIP: needs root"; exit 77; }
# The guest image first: it installs the kernel image package build.sh checks against.
"$repo/scripts/guest-image.sh" >/dev/null || { echo "kmod-guest: FAIL: scripts/guest-image.sh"; exit 1; }
vars=$("$repo/guest-kmod-patches/build.sh") || { echo "kmod-guest: FAIL: guest-kmod-patches/build.sh"; exit 1; }
eval "$vars"
exec "$here/run-guest.sh" --kmod "$SVFS_KMOD_DIR" "$@"
