#!/usr/bin/env bash
# Builds (once, cached) the guest used by the real-guest end-to-end tests: the Debian 12 kernel that
# linux-image-amd64 depends on (or the 6.12 kernel of Debian 12's security archive), and a busybox
# initramfs holding only the virtio/fuse/virtiofs modules in load order (none for 6.12, which has
# them built in) and the virtio-9p ones (loaded only for svfs.fstype=9p), plus an /init that mounts
# virtiofs, runs a workload and powers off.
#
# Usage: scripts/guest-image.sh [--force] [--kernel 6.1|6.12] [--kver KVER]
#   --kernel 6.1   (default) the kernel linux-image-amd64 depends on, e.g. 6.1.0-56-amd64
#   --kernel 6.12  linux-image-KVER-unsigned, KVER from the candidate version of linux-source-6.12
#                  (6.12.118-1~deb12u1 -> 6.12.118+deb12-amd64), so image, headers and source of
#                  guest-kmod-patches/build.sh are at one version
#   --kver KVER    this kernel release (linux-image-KVER or linux-image-KVER-unsigned)
# Prints, on stdout, shell assignments for the runner:
#   SVFS_GUEST_KERNEL=<vmlinuz>  SVFS_GUEST_INITRD=<initramfs.cpio.gz>  SVFS_GUEST_KVER=<version>
# Progress goes to stderr. Cache: $SVFS_GUEST_CACHE (default /var/cache/svfs-guest)/<kernel version>,
# rebuilt only when missing, when this script changes, or with --force.
#
# Workloads are not baked in: the runner puts a small uncompressed cpio archive holding
# /workload.sh and /workload.env in front of this one; the kernel unpacks concatenated archives.
#
# /init protocol on the serial console (ttyS0):
#   SVFS-E2E-BOOTED uptime=<s>              modules loaded, about to mount
#   SVFS-E2E-BEGIN tag=<tag> uptime=<s>     virtiofs mounted on /mnt, workload starting
#   ... workload output ...
#   SVFS-E2E-END rc=<rc> elapsed=<s>        workload exit status and guest elapsed seconds
#   SVFS-E2E-UMOUNT rc=<rc>|hung ...        umount of the virtiofs mount
#   SVFS-E2E-ERROR <what>                   setup failure (module load, mount)
# Kernel command line: svfs.tag=TAG (default svfs), svfs.probe=1 (print SVFS-E2E-PROBE-OK after
# module loading and power off without mounting: used to check that KVM actually runs guests),
# svfs.mountopts=OPTS (mount -o OPTS, e.g. noversions), svfs.fstype=9p (mount virtio-9p instead,
# trans=virtio, version=9p2000.L; OPTS are added, e.g. cache=loose).
# Module override: a module /kmod/NAME.ko (put there by an archive in front of this one, e.g.
# run-guest.sh --kmod DIR) is loaded instead of the image's; /init prints SVFS-E2E-KMOD NAME.ko.
# Modules named in /kmod/modules that the image does not have (6.12: svfs_fuse.ko) are loaded
# after the image's, in that order.
set -euo pipefail

force=0
line=
kver=
while [ $# -gt 0 ]; do
  case "$1" in
    --force) force=1; shift ;;
    --kernel) line=$2; shift 2 ;;
    --kver) kver=$2; shift 2 ;;
    *) echo "guest-image: unknown argument $1 (--force, --kernel 6.1|6.12, --kver KVER)" >&2; exit 2 ;;
  esac
done
log() { echo "guest-image: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "need root (installs packages, writes the cache)"
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  log "installing ${missing[*]} (this takes a minute)"
  apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "${missing[@]}" >&2 ||
    { apt-get -o DPkg::Lock::Timeout=900 update -q >&2 &&
      apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "${missing[@]}" >&2; }
}

# 6.12: the release named by linux-source-6.12's candidate version (the security archive carries
# image, headers and source at that one version).
kver_612() {
  local v
  v=$(apt-cache policy linux-source-6.12 2>/dev/null | sed -n 's/^ *Candidate: \([0-9][^ ]*\)$/\1/p')
  [ -n "$v" ] || return 1
  echo "${v%%-*}+deb12-amd64"   # 6.12.118-1~deb12u1 -> 6.12.118+deb12-amd64
}
pkg_known() { apt-cache show "$1" >/dev/null 2>&1; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
case "$line" in
  ''|6.1)
    if [ -z "$kver" ]; then
      # The kernel image package linux-image-amd64 points at (e.g. linux-image-6.1.0-56-amd64).
      image_pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n1)
      if [ -z "$image_pkg" ]; then
        apt-get -o DPkg::Lock::Timeout=900 update -q >&2
        image_pkg=$(apt-cache depends linux-image-amd64 |
          sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n1)
      fi
      [ -n "$image_pkg" ] || { log "cannot resolve the kernel package behind linux-image-amd64"; exit 1; }
      kver=${image_pkg#linux-image-}
    fi
    ;;
  6.12)
    if [ -z "$kver" ]; then
      kver=$(kver_612) || { apt-get -o DPkg::Lock::Timeout=900 update -q >&2; kver=$(kver_612); } ||
        { log "no linux-source-6.12 in the apt sources (Debian 12: bookworm-security)"; exit 1; }
    fi
    ;;
  *) log "--kernel $line: 6.1 or 6.12"; exit 2 ;;
esac
if [ -z "${image_pkg:-}" ]; then   # from --kver or --kernel 6.12
  # 6.12 comes as the -unsigned image (the signed one installs the same files; either will do
  # if already there).
  image_pkg=linux-image-$kver
  case "$kver" in
    6.1.*) pkg_known "$image_pkg" || installed "$image_pkg" || image_pkg=$image_pkg-unsigned ;;
    *) installed "$image_pkg" || image_pkg=$image_pkg-unsigned ;;
  esac
fi

apt_install "$image_pkg" busybox-static qemu-system-x86 qemu-system-common kmod cpio xz-utils gzip

kernel=/boot/vmlinuz-$kver
moddir=/lib/modules/$kver
[ -r "$kernel" ] || { log "$kernel missing after installing $image_pkg"; exit 1; }
[ -d "$moddir" ] || { log "$moddir missing after installing $image_pkg"; exit 1; }

cache=${SVFS_GUEST_CACHE:-/var/cache/svfs-guest}/$kver
initrd=$cache/initramfs.cpio.gz
tool_src=$(cd "$(dirname "$0")/.." && pwd)/tests/e2e/guest/svfs-guest-tool.c
stamp_want=$(cat "$0" "$tool_src" 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ "$force" = 0 ] && [ -s "$initrd" ] && [ "$(cat "$cache/stamp" 2>/dev/null)" = "$stamp_want" ]; then
  echo "SVFS_GUEST_KERNEL=$kernel"
  echo "SVFS_GUEST_INITRD=$initrd"
  echo "SVFS_GUEST_KVER=$kver"
  exit 0
fi

log "building initramfs for $kver in $cache"
mkdir -p "$cache"
stage=$(mktemp -d "$cache/stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,dev,proc,sys,mnt,tmp,lib/modules,etc}
cp /bin/busybox "$stage/bin/busybox"
# Applet links are created at boot by busybox --install; sh is needed before that.
ln -s busybox "$stage/bin/sh"
# Static helper for what busybox lacks (xattr, flock, posix locks, shared mmap); optional.
if [ -r "$tool_src" ] && command -v gcc >/dev/null 2>&1 &&
  gcc -static -O2 -o "$stage/bin/svfs-guest-tool" "$tool_src" 2>"$stage/tool.log"; then
  log "built svfs-guest-tool"
else
  log "svfs-guest-tool not built (no gcc or static libc?); xattr/lock checks will be skipped"
fi
rm -f "$stage/tool.log"
# The kernel opens /dev/console before running /init; without the node /init starts without
# stdio (it re-opens the console after mounting devtmpfs, so this is only best effort).
mknod -m 600 "$stage/dev/console" c 5 1 2>/dev/null || true

# closure MODULE...: the paths of the modules MODULE needs, dependencies first, as modprobe
# resolves them from modules.dep (depmod), each once. modprobe takes one module per call.
closure() {
  local m verb path _ seen=" "
  for m in "$@"; do
    while read -r verb path _; do
      [ "$verb" = insmod ] || continue
      case "$seen" in *" $path "*) continue ;; esac
      seen+="$path "
      echo "$path"
    done < <(modprobe -S "$kver" --show-depends "$m")
  done
}
# stage_modules LIST PATH...: decompresses each module into the initramfs and names it, in
# order, in /etc/LIST.
stage_modules() {
  local list=$1 path name
  shift
  : >"$stage/etc/$list"
  for path in "$@"; do
    name=$(basename "$path")
    case "$name" in
      *.ko.xz) xz -dc "$path" >"$stage/lib/modules/${name%.xz}"; name=${name%.xz} ;;
      *.ko.zst) zstd -dqc "$path" >"$stage/lib/modules/${name%.zst}"; name=${name%.zst} ;;
      *.ko.gz) gzip -dc "$path" >"$stage/lib/modules/${name%.gz}"; name=${name%.gz} ;;
      *) cp "$path" "$stage/lib/modules/$name" ;;
    esac
    echo "$name" >>"$stage/etc/$list"
  done
}
mapfile -t order < <(closure virtio_pci virtiofs)
# Built-in drivers (6.12: virtio_pci, fuse and virtiofs are =y) need no module.
builtin=0
for m in virtio_pci virtiofs; do
  modprobe -S "$kver" --show-depends "$m" 2>/dev/null | grep -q "^builtin $m" && builtin=$((builtin + 1))
done
if [ "$builtin" = 2 ]; then
  [ "${#order[@]}" -eq 0 ] || { log "unexpected module list: ${order[*]}"; exit 1; }
else
  [ "${#order[@]}" -ge 3 ] || { log "unexpected module list: ${order[*]}"; exit 1; }
fi
stage_modules modules.order "${order[@]}"
# virtio-9p (svfs.fstype=9p, svfs-bench's reference daemon): loaded only for a 9p mount, after
# modules.order, so what it shares with virtiofs (virtio, virtio_ring) is not listed twice.
mapfile -t order9p < <(closure 9pnet_virtio 9p | grep -vxF -f <(printf '%s\n' "${order[@]}" /dev/null))
[ "${#order9p[@]}" -ge 3 ] || { log "unexpected 9p module list: ${order9p[*]}"; exit 1; }
stage_modules modules.9p "${order9p[@]}"
log "modules: $(tr '\n' ' ' <"$stage/etc/modules.order")(9p: $(tr '\n' ' ' <"$stage/etc/modules.9p" | sed 's/ $//'))"

cat >"$stage/init" <<'EOF'
#!/bin/sh
# svfs e2e guest init (generated by scripts/guest-image.sh)
/bin/busybox mkdir -p /proc /sys /dev /mnt /tmp
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
up() { cut -d' ' -f1 /proc/uptime; }
finish() { sync; poweroff -f; sleep 5; echo o >/proc/sysrq-trigger; }

tag=svfs
probe=0
mountopts=
fstype=virtiofs
for word in $(cat /proc/cmdline); do
  case "$word" in
    svfs.tag=*) tag=${word#svfs.tag=} ;;
    svfs.probe=*) probe=${word#svfs.probe=} ;;
    svfs.mountopts=*) mountopts=${word#svfs.mountopts=} ;;
    svfs.fstype=*) fstype=${word#svfs.fstype=} ;;
  esac
done

for m in $(cat /etc/modules.order); do
  f=/lib/modules/$m
  if [ -r /kmod/$m ]; then f=/kmod/$m; echo "SVFS-E2E-KMOD $m"; fi
  if ! insmod $f; then echo "SVFS-E2E-ERROR insmod $f"; finish; fi
done
# Modules the image does not have (a kernel with fuse built in: the patched svfs_fuse.ko).
for m in $(cat /kmod/modules 2>/dev/null); do
  grep -qx "$m" /etc/modules.order && continue
  echo "SVFS-E2E-KMOD $m"
  if ! insmod /kmod/$m; then echo "SVFS-E2E-ERROR insmod /kmod/$m"; dmesg | tail -n 20; finish; fi
done
echo "SVFS-E2E-BOOTED uptime=$(up)"
if [ "$probe" = 1 ]; then echo "SVFS-E2E-PROBE-OK"; finish; fi

if [ "$fstype" = 9p ]; then
  for m in $(cat /etc/modules.9p); do
    insmod /lib/modules/$m || { echo "SVFS-E2E-ERROR insmod /lib/modules/$m"; finish; }
  done
  # msize 256 KiB: under the virtio transport's limit (about 500 KiB), far above the 8 KiB default.
  mountopts=trans=virtio,version=9p2000.L,msize=262144${mountopts:+,$mountopts}
fi
if ! mount -t $fstype ${mountopts:+-o "$mountopts"} "$tag" /mnt; then
  echo "SVFS-E2E-ERROR mount -t $fstype ${mountopts:+-o $mountopts} $tag /mnt failed"
  dmesg | tail -n 20
  finish
fi
[ -r /workload.env ] && . /workload.env
if [ ! -r /workload.sh ]; then echo "SVFS-E2E-ERROR no /workload.sh"; finish; fi
start=$(up)
echo "SVFS-E2E-BEGIN tag=$tag uptime=$start"
cd /mnt && sh /workload.sh /mnt
rc=$?
end=$(up)
cd /
echo "SVFS-E2E-END rc=$rc elapsed=$(echo "$end $start" | awk '{printf "%.2f", $1 - $2}')"
# What the (patched) FUSE module said about shared versions, for the host-side checks.
dmesg | grep 'svfs: ' | sed 's/^\[[ 0-9.]*\] /SVFS-E2E-KLOG /'
# A umount that never returns would hold the guest until the host's timeout: give it two minutes
# (TCG), then print the blocked tasks' stacks (sysrq w) so the log says where it waits.
umount /mnt &
umount_pid=$!
waited=0
while kill -0 $umount_pid 2>/dev/null && [ $waited -lt 120 ]; do sleep 1; waited=$((waited + 1)); done
if kill -0 $umount_pid 2>/dev/null; then
  echo "SVFS-E2E-UMOUNT rc=hung after ${waited}s; blocked tasks:"
  echo 7 >/proc/sys/kernel/printk
  echo w >/proc/sysrq-trigger
  sleep 2
  # No sync: it would wait for the superblock the umount holds.
  echo o >/proc/sysrq-trigger; sleep 5; poweroff -n -f
fi
wait $umount_pid
echo "SVFS-E2E-UMOUNT rc=$?"
finish
EOF
chmod 755 "$stage/init"

log "packing $(du -sh "$stage" | cut -f1) into $initrd"
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) |
  gzip -6 >"$initrd.tmp"
mv "$initrd.tmp" "$initrd"
echo "$stamp_want" >"$cache/stamp"
log "done"
echo "SVFS_GUEST_KERNEL=$kernel"
echo "SVFS_GUEST_INITRD=$initrd"
echo "SVFS_GUEST_KVER=$kver"
