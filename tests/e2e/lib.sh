# Shell pieces run-guest.sh and two-vm.sh share (sourced, bash).

# stop_pid PID [TENTHS]: SIGTERM, up to TENTHS tenths of a second (default 30) to exit, then
# SIGKILL; reaps it if it is our child.
stop_pid() {
  local pid=$1 tenths=${2:-30}
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null
  for _ in $(seq 1 "$tenths"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 0
}

# kmod_modules KMOD_DIR: the modules of a guest-kmod-patches/build.sh directory, in load order
# (DIR/modules; fuse.ko virtiofs.ko for a directory without it).
kmod_modules() {
  if [ -r "$1/modules" ]; then cat "$1/modules"; else printf '%s\n' fuse.ko virtiofs.ko; fi
}

# stage_kmod PAYLOAD_DIR KMOD_DIR: the guest's /init loads /kmod/NAME.ko instead of the image's
# module of that name, and then the ones the image lacks (/kmod/modules order).
stage_kmod() {
  local m
  mkdir -p "$1/kmod" || return 1
  kmod_modules "$2" >"$1/kmod/modules" || return 1
  for m in $(cat "$1/kmod/modules"); do cp "$2/$m" "$1/kmod/" || return 1; done
}

# kmod_cmdline KMOD_DIR: kernel parameters the modules need (6.12: skip the built-in fuse).
kmod_cmdline() {
  [ -r "$1/cmdline" ] && cat "$1/cmdline"
  return 0
}

# guest_initrd PAYLOAD_DIR OUT: OUT = everything under PAYLOAD_DIR as an uncompressed cpio archive,
# then the cached gzip initramfs of scripts/guest-image.sh ($SVFS_GUEST_INITRD). The kernel
# unpacks concatenated archives in order, but cannot find the start of one that follows gzip data.
guest_initrd() {
  (cd "$1" && find . -mindepth 1 | sed 's|^\./||' | cpio -o -H newc -R 0:0 --quiet) >"$2.cpio" &&
    cat "$2.cpio" "$SVFS_GUEST_INITRD" >"$2"
}

# tcg_args VCPUS: QEMU's TCG options for a guest of VCPUS vCPUs. QEMU 7.2 (Debian 12) leaves a
# guest's memory barriers and atomics out of the translated code unless the machine may have more
# than one vCPU (no CF_PARALLEL; upstream emits them since 8.1, "tcg: Do not elide memory barriers
# for !CF_PARALLEL in system mode"). Against a vhost-user backend, which runs in parallel in
# another process, the driver's store of the avail index can then pass its load of avail_event,
# while the backend stores avail_event and reads the old index: neither kicks nor polls, and the
# request waits forever (seen as a hung umount, its FORGETs never taken). Multi-threaded TCG with
# room for a second vCPU keeps the barriers; the guest still runs VCPUS.
tcg_args() {
  local vcpus=$1
  echo "-accel tcg,thread=multi -smp $vcpus,maxcpus=$((vcpus < 2 ? 2 : vcpus))"
}
