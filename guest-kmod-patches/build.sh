#!/usr/bin/env bash
# Builds the guest's FUSE client with svfs shared versions: extracts fs/fuse from Debian's
# linux-source tarball, applies the patch series of the kernel line (series file order) and builds
# out of tree against the matching linux-headers package.
#   6.1  (KVER 6.1.*):  the series in this directory; fuse.ko and virtiofs.ko
#   6.12 (KVER 6.12.*): the series in 6.12/; one module, svfs_fuse.ko (the kernel has FUSE and
#                       virtiofs built in: the guest boots with the cmdline in DIR/cmdline)
#
# Usage: guest-kmod-patches/build.sh [--kver KVER] [--out DIR] [--force] [--check-each]
#   --kver KVER    guest kernel release (default: the one linux-image-amd64 depends on, as
#                  scripts/guest-image.sh picks it, e.g. 6.1.0-56-amd64; 6.12.118+deb12-amd64
#                  for the 6.12 line)
#   --out DIR      output directory (default /var/cache/svfs-guest/kmod-KVER)
#   --force        rebuild even if DIR holds modules built from the same patches
#   --check-each   also build after each patch (every patch must compile on its own)
# Prints SVFS_KMOD_DIR=<dir> on stdout; progress goes to stderr. DIR holds the modules, in load
# order in DIR/modules, and DIR/cmdline when the guest kernel needs extra boot parameters.
#
# Refuses (exit 1) unless the kernel image (linux-image-KVER or linux-image-KVER-unsigned),
# headers and source packages have the same Debian version (e.g. 6.1.192-2): a module built from
# other sources or against other headers may load and misbehave. Missing headers/source packages
# are installed at the image's version.
# The output is cached by a hash of this script, the series and the patches (DIR/stamp).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
kver=
out=
force=0
check_each=0
while [ $# -gt 0 ]; do
  case "$1" in
    --kver) kver=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --force) force=1; shift ;;
    --check-each) check_each=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
log() { echo "kmod: $*" >&2; }
die() { echo "kmod: ERROR: $*" >&2; exit 1; }

if [ -z "$kver" ]; then
  image_pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n1)
  [ -n "$image_pkg" ] || die "cannot resolve the kernel behind linux-image-amd64; pass --kver"
  kver=${image_pkg#linux-image-}
fi
out=${out:-${SVFS_GUEST_CACHE:-/var/cache/svfs-guest}/kmod-$kver}
series_name=$(echo "$kver" | sed -n 's/^\([0-9]*\.[0-9]*\)\..*/\1/p')   # 6.1.0-56-amd64 -> 6.1
case "$series_name" in
  6.1) pdir=$here ;;
  *) pdir=$here/$series_name ;;
esac
series=$pdir/series
[ -r "$series" ] || die "no patch series for Linux ${series_name:-?} (kernel $kver): $series missing"

pkg_version() {  # installed version of package $1, or nothing
  { dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null || true; } | sed -n 's/^install ok installed //p'
}

# Versions: image, headers and source must be the same Debian package version.
image_pkg=linux-image-$kver
image_ver=$(pkg_version "$image_pkg")
if [ -z "$image_ver" ]; then   # 6.12 in bookworm's security archive: only the -unsigned image
  image_pkg=linux-image-$kver-unsigned
  image_ver=$(pkg_version "$image_pkg")
fi
[ -n "$image_ver" ] ||
  die "linux-image-$kver(-unsigned) is not installed (scripts/guest-image.sh installs it)"
src_pkg=linux-source-$series_name
hdr_pkg=linux-headers-$kver
missing=()
[ -n "$(pkg_version "$hdr_pkg")" ] || missing+=("$hdr_pkg=$image_ver")
[ -n "$(pkg_version "$src_pkg")" ] || missing+=("$src_pkg=$image_ver")
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]} (install as root)"
  log "installing ${missing[*]} (a minute or two)"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -q \
    --no-install-recommends "${missing[@]}" >&2 ||
    die "could not install ${missing[*]}: the mirror may no longer carry version $image_ver;" \
      "upgrade the guest kernel image (apt-get install linux-image-amd64) so all three agree"
fi
hdr_ver=$(pkg_version "$hdr_pkg")
src_ver=$(pkg_version "$src_pkg")
if [ "$image_ver" != "$hdr_ver" ] || [ "$image_ver" != "$src_ver" ]; then
  die "version mismatch: $image_pkg $image_ver, $hdr_pkg ${hdr_ver:-none}," \
    "$src_pkg ${src_ver:-none}. They must be the same Debian version; install matching ones," \
    "e.g. apt-get install $hdr_pkg=$image_ver $src_pkg=$image_ver"
fi
kbuild=/lib/modules/$kver/build
[ -r "$kbuild/Makefile" ] || die "$kbuild/Makefile missing (is $hdr_pkg complete?)"
# A kernel with FUSE built in (6.12) cannot load a patched fuse.ko over it: the series then
# builds one module with both parts, and the guest skips the built-in init functions.
make_vars=(CONFIG_CUSE=n)   # CUSE is left out: its module would have to match the patched fuse.ko.
modules=(fuse virtiofs)
cmdline=
if grep -q '^CONFIG_FUSE_FS=y' "$kbuild/.config" 2>/dev/null; then
  grep -q 'SVFS_ONE_MODULE' "$series" "$pdir"/0001-*.patch 2>/dev/null ||
    die "$kver has FUSE built in, but the $series_name series does not build one module"
  make_vars+=(SVFS_ONE_MODULE=1)
  modules=(svfs_fuse)
  cmdline="initcall_blacklist=fuse_init,virtio_fs_init"
fi
tarball=/usr/src/$src_pkg.tar.xz
[ -r "$tarball" ] || die "$tarball missing (is $src_pkg complete?)"
log "kernel $kver: image, headers and source all at $image_ver"

patches=()
while read -r p; do
  case "$p" in ''|'#'*) continue ;; esac
  [ -r "$pdir/$p" ] || die "series names $p, which is missing"
  patches+=("$pdir/$p")
done <"$series"
stamp_want=$( (echo "$kver $image_ver"; cat "$0" "$series" "${patches[@]}") | sha256sum | cut -d' ' -f1)
have_all=1
for m in "${modules[@]}"; do [ -s "$out/$m.ko" ] || have_all=0; done
if [ "$force" = 0 ] && [ "$have_all" = 1 ] &&
  [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp_want" ]; then
  log "up to date: $out"
  echo "SVFS_KMOD_DIR=$out"
  exit 0
fi

mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/var/tmp}/svfs-kmod.XXXXXX")
trap 'rm -rf "$work"' EXIT
log "extracting fs/fuse from $tarball (about 15 s)"
tar -xJf "$tarball" -C "$work" "$src_pkg/fs/fuse"
tree=$work/$src_pkg
jobs=$(nproc 2>/dev/null || echo 2)
build() {  # build the modules in $tree/fs/fuse; $1 = what for the log
  log "building ${modules[*]/%/.ko} ($1; about 20 s)"
  if ! make -C "$kbuild" M="$tree/fs/fuse" "${make_vars[@]}" -j"$jobs" modules \
    >"$work/build.log" 2>&1; then
    cp "$work/build.log" "$out/build.log"; grep -E 'error|warning' "$work/build.log" | head -n 30 >&2
    die "build failed ($1); full log in $out/build.log"
  fi
  if grep -E '(warning|error):' "$work/build.log" >&2; then
    cp "$work/build.log" "$out/build.log"
    die "compiler warnings ($1); full log in $out/build.log"
  fi
  make -C "$kbuild" M="$tree/fs/fuse" clean >/dev/null 2>&1 || true
}
n=0
for p in "${patches[@]}"; do
  n=$((n + 1))
  log "applying [$n/${#patches[@]}] $(basename "$p")"
  patch -d "$tree" -p1 -s --no-backup-if-mismatch <"$p" || die "$(basename "$p") does not apply"
  if [ "$check_each" = 1 ] && [ "$n" -lt "${#patches[@]}" ]; then build "after $(basename "$p")"; fi
done
log "building ${modules[*]/%/.ko} (about 20 s)"
make -C "$kbuild" M="$tree/fs/fuse" "${make_vars[@]}" -j"$jobs" modules >"$work/build.log" 2>&1 || {
  cp "$work/build.log" "$out/build.log"; tail -n 30 "$work/build.log" >&2
  die "build failed; full log in $out/build.log"
}
if grep -E '(warning|error):' "$work/build.log" >&2; then
  cp "$work/build.log" "$out/build.log"
  die "compiler warnings; full log in $out/build.log"
fi
for m in "${modules[@]}"; do
  [ -s "$tree/fs/fuse/$m.ko" ] || die "$m.ko not built"
  cp "$tree/fs/fuse/$m.ko" "$out/$m.ko.tmp" && mv "$out/$m.ko.tmp" "$out/$m.ko"
  modinfo -F vermagic "$out/$m.ko" | grep -q "^$kver " ||
    die "$m.ko vermagic $(modinfo -F vermagic "$out/$m.ko") does not name $kver"
done
printf '%s.ko\n' "${modules[@]}" >"$out/modules"
if [ -n "$cmdline" ]; then echo "$cmdline" >"$out/cmdline"; else rm -f "$out/cmdline"; fi
printf '%s\n' "kernel $kver ($image_ver)" "patches:" "${patches[@]##*/}" >"$out/BUILDINFO"
echo "$stamp_want" >"$out/stamp"
log "built $(printf '%s.ko ' "${modules[@]/#/$out/}")"
echo "SVFS_KMOD_DIR=$out"
