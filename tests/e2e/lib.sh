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

# stage_kmod PAYLOAD_DIR KMOD_DIR: the guest's /init loads /kmod/NAME.ko instead of the image's
# module of that name.
stage_kmod() {
  mkdir -p "$1/kmod" && cp "$2/fuse.ko" "$2/virtiofs.ko" "$1/kmod/"
}

# guest_initrd PAYLOAD_DIR OUT: OUT = everything under PAYLOAD_DIR as an uncompressed cpio archive,
# then the cached gzip initramfs of scripts/guest-image.sh ($SVFS_GUEST_INITRD). The kernel
# unpacks concatenated archives in order, but cannot find the start of one that follows gzip data.
guest_initrd() {
  (cd "$1" && find . -mindepth 1 | sed 's|^\./||' | cpio -o -H newc -R 0:0 --quiet) >"$2.cpio" &&
    cat "$2.cpio" "$SVFS_GUEST_INITRD" >"$2"
}
