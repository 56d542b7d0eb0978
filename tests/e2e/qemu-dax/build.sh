#!/usr/bin/env bash
# Builds the DAX-capable QEMU the e2e tests use: Debian's own qemu source package at the version
# of the installed qemu-system-x86 (so its firmware in /usr/share/qemu matches), plus
# vhost-user-fs-dax-window.patch (README.md), configured for x86_64-softmmu only. Cached: a
# second call with the same patch, configure options and source version prints the path at once.
#
# Usage: tests/e2e/qemu-dax/build.sh [--force]
# Prints SVFS_QEMU_DAX=/path/to/qemu-system-x86_64 on stdout; progress and errors on stderr.
# Needs root (apt-get: build dependencies, and a deb-src entry if the machine has none).
# Cache: $SVFS_QEMU_DAX_CACHE (default /var/cache/svfs-qemu-dax).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
patch=$here/vhost-user-fs-dax-window.patch
force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    *) echo "qemu-dax: unknown option $arg (--force)" >&2; exit 2 ;;
  esac
done
log() { echo "qemu-dax: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then log "run as root: it installs build dependencies"; exit 1; fi
export DEBIAN_FRONTEND=noninteractive
apt_quiet() { apt-get -q -y "$@" >/tmp/svfs-qemu-dax-apt.log 2>&1 || { tail -n 20 /tmp/svfs-qemu-dax-apt.log >&2; return 1; }; }
if ! dpkg-query -W -f '${Status}' qemu-system-x86 2>/dev/null | grep -q 'ok installed'; then
  log "installing qemu-system-x86 (its version picks the source)"
  apt_quiet update && apt_quiet install qemu-system-x86
fi
version=$(dpkg-query -W -f '${source:Version}' qemu-system-x86)
config=(--target-list=x86_64-softmmu --without-default-features --enable-tcg --enable-kvm
  --enable-vhost-user --disable-docs --disable-werror
  --firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu)
# The build is keyed by what goes into it: the patch and the configure options.
stamp=$({ cat "$patch"; echo "${config[*]}"; } | sha256sum | cut -c1-16)
cache=${SVFS_QEMU_DAX_CACHE:-/var/cache/svfs-qemu-dax}/${version//:/_}-$stamp
binary=$cache/qemu-system-x86_64
if [ "$force" = 0 ] && [ -x "$binary" ]; then
  echo "SVFS_QEMU_DAX=$binary"
  exit 0
fi

started=$SECONDS
deps=(dpkg-dev ninja-build meson pkg-config python3 flex bison libglib2.0-dev libpixman-1-dev
  zlib1g-dev libfdt-dev)
missing=()
for p in "${deps[@]}"; do dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing build dependencies: ${missing[*]}"
  apt_quiet update && apt_quiet install "${missing[@]}"
fi

work=$cache.build
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
cd "$work"
# The source package comes from the machine's own Debian mirror: add deb-src entries for the
# suites it already uses when it has none.
if ! apt-get source --download-only "qemu=$version" >/dev/null 2>&1; then
  src_list=/etc/apt/sources.list.d/svfs-deb-src.sources
  if [ -r /etc/apt/sources.list.d/debian.sources ]; then
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$src_list"
  elif [ -r /etc/apt/sources.list ]; then
    sed -n 's/^deb \(.*\)/deb-src \1/p' /etc/apt/sources.list >"${src_list%.sources}.list"
  fi
  log "fetching the qemu $version source package (added deb-src entries)"
  apt_quiet update
  apt-get source --download-only "qemu=$version" >/tmp/svfs-qemu-dax-apt.log 2>&1 ||
    { tail -n 20 /tmp/svfs-qemu-dax-apt.log >&2; log "apt-get source qemu=$version failed"; exit 1; }
fi
log "unpacking qemu $version (Debian's patches applied) and applying $(basename "$patch")"
dpkg-source -x qemu_*.dsc src >"$work/unpack.log" 2>&1 ||
  { tail -n 20 "$work/unpack.log" >&2; log "dpkg-source -x failed"; exit 1; }
(cd src && patch -p1 --quiet <"$patch")
mkdir -p src/build
cd src/build
log "configuring (x86_64-softmmu, TCG and KVM, vhost-user; nothing else)"
../configure "${config[@]}" >"$work/configure.log" 2>&1 ||
  { tail -n 30 "$work/configure.log" >&2; log "configure failed"; exit 1; }
log "compiling on $(nproc) cores (about 4 minutes on 2)"
# ninja prints [done/total] per step: show every tenth of the way.
{ ninja -j"$(nproc)" qemu-system-x86_64 2>&1 || true; } | tee "$work/build.log" |
  awk -F'[][/]' '/^\[[0-9]+\/[0-9]+\]/ { p = int($2 * 10 / $3); if (p > last) { last = p;
    printf "qemu-dax: %d%% (%d of %d)\n", p * 10, $2, $3 > "/dev/stderr" } }'
[ -x qemu-system-x86_64 ] || { tail -n 30 "$work/build.log" >&2; log "build failed"; exit 1; }
install -D -m 755 qemu-system-x86_64 "$binary"
log "built $binary in $((SECONDS - started)) s"
echo "SVFS_QEMU_DAX=$binary"
