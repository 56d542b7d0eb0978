#!/usr/bin/env bash
# The main job on a built-in default: builds svfsd and a guest image, generates a sample tree,
# and for each guest kernel (Linux 6.1 and 6.12) and cache mode boots a real Linux guest in QEMU
# whose virtio-fs is served by svfsd (vhost-user), runs a metadata workload in it (walk, stat every
# file twice, create/rename/unlink 200 files) and prints one table: the guest's elapsed time and
# the FUSE requests svfsd served. Then two guests, one 6.1 and one 6.12 (a mixed fleet, as hosts
# upgrade one pod at a time), share the sample tree in each mode.
# Needs root (installs packages, runs vhost-user daemons). Usage: scripts/demo.sh [MODES...]
# SVFS_DEMO_KERNELS="6.1 6.12" picks the kernels of the first table; SVFS_DEMO_TWO_VM_KERNELS=6.1,6.12
# the kernels of VM A and VM B.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
modes=("$@")
[ ${#modes[@]} -eq 0 ] && modes=(none auto always)

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root: it installs packages and serves vhost-user devices" >&2
  exit 1
fi
build=${SVFS_BUILD_DIR:-$root/build}
echo "demo: building svfsd in $build (first run: a few minutes)"
"$root/scripts/build.sh" "$build" >/dev/null
read -r -a kernels <<<"${SVFS_DEMO_KERNELS:-6.1 6.12}"
for kernel in "${kernels[@]}"; do
  echo "demo: preparing the Linux $kernel guest image (first run: installs the kernel and QEMU packages)"
  "$root/scripts/guest-image.sh" --kernel "$kernel"
done

work=$(mktemp -d /tmp/svfs-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
dirs=20 files=50
echo "demo: generating a sample tree of $dirs directories x $files files"
mkdir -p "$work/share/sample"
for d in $(seq 1 $dirs); do
  mkdir -p "$work/share/sample/dir$d"
  for f in $(seq 1 $files); do echo "file $d/$f" >"$work/share/sample/dir$d/file$f.txt"; done
done

count() {  # count OPCODE TABLE
  echo "$2" | awk -v op="$1" '$1==op{print $2; f=1} END{if(!f) print 0}'
}
rows=()
runs=$(( ${#kernels[@]} * ${#modes[@]} )) run=0
for kernel in "${kernels[@]}"; do
for mode in "${modes[@]}"; do
  run=$((run + 1))
  echo "demo: [$run/$runs] Linux $kernel, cache=$mode: booting a guest served by svfsd (TCG: about 30 s)"
  out="$work/run-$kernel-$mode.txt"
  if ! "$root/tests/e2e/run-guest.sh" --daemon svfsd --svfsd "$build/daemon/svfsd" \
      --kernel "$kernel" --cache "$mode" --share "$work/share" \
      --workload "$root/tests/e2e/workloads/metadata.sh" \
      --env TREE=sample --keep --quiet >"$out" 2>&1; then
    cat "$out"; echo "demo: the Linux $kernel guest run in cache=$mode failed" >&2; exit 1
  fi
  kept=$(sed -n 's/.*kept \(\/tmp\/svfs-e2e\.[A-Za-z0-9]*\).*/\1/p' "$out" | tail -n 1)
  elapsed=$(tr -d '\r' <"$kept/serial.log" | sed -n 's/.*metadata elapsed: \([0-9.]*\) s.*/\1/p' | tail -n 1)
  # svfsd prints its per-opcode table at exit; take the last one.
  table=$(awk '/^opcode +requests +errors/{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' \
          "$kept/daemon.log" | sed -n '/^opcode/,/^malformed/p')
  rm -rf "$kept"
  rows+=("$(printf '%-7s %-8s %12s %12s %10s %10s %10s %8s' "$kernel" "$mode" "${elapsed:-?}" \
    "$(count total "$table")" "$(count LOOKUP "$table")" "$(count GETATTR "$table")" \
    "$(( $(count READDIR "$table") + $(count READDIRPLUS "$table") ))" \
    "$(count CREATE "$table")")")
done
done

echo
echo "== svfsd under a real guest: $dirs x $files sample files; walk, stat x2, 200 create/rename/unlink"
printf '%-7s %-8s %12s %12s %10s %10s %10s %8s\n' kernel cache guest-secs requests LOOKUP GETATTR READDIR* CREATE
for row in "${rows[@]}"; do echo "$row"; done

# Two VMs sharing the sample tree (tests/e2e/two-vm.sh): VM A or the host changes something, VM B
# looks (stale results out of the checks), then B stats every sample file three times (LOOKUP and
# GETATTR svfsd B served in passes 2-3, B's time per pass). SVFS_DEMO_TWO_VM=0 skips it.
if [ "${SVFS_DEMO_TWO_VM:-1}" = 1 ]; then
  if [ -x "$build/versiond/svfs-versiond" ]; then
    echo
    two_vm_kernels=${SVFS_DEMO_TWO_VM_KERNELS:-6.1,6.12}
    echo "demo: two VMs (Linux ${two_vm_kernels/,/ and }) sharing the sample tree, modes shared" \
      "(patched guest modules), none, auto, always (TCG: about 1 minute per mode; the first run" \
      "builds the guest modules)"
    if ! "$root/tests/e2e/two-vm.sh" --svfsd "$build/daemon/svfsd" --kernels "$two_vm_kernels" \
        --versiond "$build/versiond/svfs-versiond" --modes shared,none,auto,always \
        --tree "$work/share/sample" >"$work/two-vm.txt" 2>&1; then
      cat "$work/two-vm.txt"; echo "demo: the two-VM run failed" >&2; exit 1
    fi
    echo
    echo "== two VMs, one shared directory (stale: B saw the old state after A's or the host's change)"
    sed -n '/^Two VMs, one shared directory/,$p' "$work/two-vm.txt" | grep -v '^two-vm:'
  else
    echo "demo: $build/versiond/svfs-versiond missing: two-VM part skipped"
  fi
fi
