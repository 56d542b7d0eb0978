#!/bin/sh
# POSIX workload for the svfs real-guest e2e tests. Runs in the guest under busybox sh with the
# virtio-fs mount as $1 (default /mnt). Prints "PASS name", "FAIL name: details" or
# "SKIP name: why" per check, "HOSTCHECK ..." lines the host runner verifies against the shared
# directory after the guest exits, and a summary "N passed, N failed, N skipped".
# Knobs (set by tests/e2e/run-guest.sh --env): BIG_MIB (size of the checksummed file, default 64),
# DIR_ENTRIES (entries of the big directory, default 10000), XATTR=off (the daemon serves no
# xattrs: the xattr check is skipped).
root=${1:-/mnt}
BIG_MIB=${BIG_MIB:-64}
DIR_ENTRIES=${DIR_ENTRIES:-10000}
. /checks.sh
up() { cut -d' ' -f1 /proc/uptime; }
since() { echo "$(up) $1" | awk '{printf "%.2f", $1 - $2}'; }

w=$root/posix.$$
rm -rf "$w"
mkdir "$w" || { echo "FAIL setup: mkdir $w"; echo "0 passed, 1 failed, 0 skipped"; exit 1; }
cd "$w" || exit 1

# create + read back
t_create() { echo hello >f && [ "$(cat f)" = hello ] && [ "$(stat -c %s f)" = 6 ]; }
check create t_create

# rename: old name gone, content kept; rename over an existing file replaces it
t_rename() {
  mv f g && [ ! -e f ] && [ "$(cat g)" = hello ] &&
    echo other >r && mv r g && [ "$(cat g)" = other ] && [ ! -e r ] &&
    echo hello >g
}
check rename t_rename

# hard link: nlink 2 on both names, same inode; unlink drops it back to 1
t_link() {
  ln g h && [ "$(stat -c %h g)" = 2 ] && [ "$(stat -c %h h)" = 2 ] &&
    [ "$(stat -c %i g)" = "$(stat -c %i h)" ] && [ "$(cat h)" = hello ] &&
    rm h && [ "$(stat -c %h g)" = 1 ]
}
check link t_link

# symlink + readlink + follow
t_symlink() {
  ln -s g s && [ -L s ] && [ "$(readlink s)" = g ] && [ "$(cat s)" = hello ] &&
    ln -s /nonexistent/target dangling && [ "$(readlink dangling)" = /nonexistent/target ]
}
check symlink t_symlink

# truncate: shrink keeps the prefix, grow reads zeros
t_truncate() {
  truncate -s 3 g && [ "$(stat -c %s g)" = 3 ] && [ "$(cat g)" = hel ] &&
    truncate -s 8192 g && [ "$(stat -c %s g)" = 8192 ] &&
    [ "$(dd if=g bs=1 skip=3 count=16 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 00000000000000000000000000000000 ]
}
check truncate t_truncate

# mkdir / rmdir / chmod / mkfifo
t_dirs() {
  mkdir -p a/b/c && [ -d a/b/c ] && rmdir a/b/c && [ ! -e a/b/c ] &&
    ! rmdir a 2>/dev/null && rmdir a/b a
}
check mkdir-rmdir t_dirs
t_chmod() { : >m && chmod 640 m && [ "$(stat -c %a m)" = 640 ] && chmod 755 m && [ "$(stat -c %a m)" = 755 ]; }
check chmod t_chmod
t_fifo() { mkfifo p && [ -p p ]; }
check mkfifo t_fifo

# append + overwrite in the middle
t_append() {
  printf 'abc' >ap && printf 'def' >>ap && printf 'X' | dd of=ap bs=1 seek=1 conv=notrunc 2>/dev/null &&
    [ "$(cat ap)" = aXcdef ]
}
check append-pwrite t_append

# xattr, locks, shared mmap: busybox has no applets for these; the guest image carries a static
# helper (tests/e2e/guest/svfs-guest-tool.c) when gcc could build it.
tool=svfs-guest-tool
if command -v $tool >/dev/null 2>&1; then
  t_xattr() {
    : >x && $tool setxattr x user.svfs e2e && [ "$($tool getxattr x user.svfs)" = e2e ] &&
      $tool listxattr x | grep -qx user.svfs && $tool removexattr x user.svfs &&
      ! $tool getxattr x user.svfs >/dev/null 2>&1
  }
  # The daemon runs with xattr support (svfsd --xattr, virtiofsd -o xattr) unless XATTR=off.
  if [ "${XATTR:-on}" = off ]; then skip xattr "the daemon serves no xattrs (XATTR=off)"
  else check xattr t_xattr; fi
  check flock $tool flock lk
  check posix-lock $tool posixlock plk
  # Linux < 6.6 refuses MAP_SHARED on FOPEN_DIRECT_IO files (ENODEV), which is what cache=none
  # gives; newer guests honour FUSE_DIRECT_IO_ALLOW_MMAP.
  if out=$($tool mmap mm 2>&1); then
    pass mmap-shared
  elif echo "$out" | grep -q 'No such device' &&
    { [ "$SVFS_CACHE" = none ] || [ "$SVFS_CACHE" = never ] || [ "$SVFS_CACHE" = shared ]; }; then
    skip mmap-shared "guest kernel $(uname -r) refuses MAP_SHARED on direct-io files (cache=$SVFS_CACHE)"
  else
    fail mmap-shared "$(echo "$out" | tr '\n' ' ')"
  fi
elif command -v setfattr >/dev/null 2>&1 && command -v getfattr >/dev/null 2>&1; then
  t_xattr() {
    : >x && setfattr -n user.svfs -v e2e x && [ "$(getfattr --only-values -n user.svfs x)" = e2e ] &&
      setfattr -x user.svfs x && ! getfattr -n user.svfs x >/dev/null 2>&1
  }
  check xattr t_xattr
  skip flock "busybox has no flock applet and the image has no svfs-guest-tool"
else
  skip xattr "busybox has no setfattr/getfattr and the image has no svfs-guest-tool"
  skip flock "busybox has no flock applet and the image has no svfs-guest-tool"
fi

# big directory: create DIR_ENTRIES entries, list them all, and let the host count them too
t0=$(up)
mkdir bigdir
i=0
while [ $i -lt "$DIR_ENTRIES" ]; do
  : >"bigdir/entry-$i" || break
  i=$((i + 1))
done
created=$i
listed=$(ls -a bigdir | grep -c '^entry-')
if [ "$created" = "$DIR_ENTRIES" ] && [ "$listed" = "$DIR_ENTRIES" ]; then
  pass "bigdir-$DIR_ENTRIES"
else
  fail "bigdir-$DIR_ENTRIES" "created $created, listed $listed"
fi
# a second listing after dropping caches must see the same count
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
listed2=$(ls bigdir | wc -l)
if [ "$listed2" = "$DIR_ENTRIES" ]; then pass bigdir-relist; else fail bigdir-relist "listed $listed2"; fi
echo "HOSTCHECK count $DIR_ENTRIES posix.$$/bigdir"
echo "TIME bigdir $(since "$t0")"

# big file: write BIG_MIB MiB, checksum, drop caches, read back, compare; host compares too
t0=$(up)
if dd if=/dev/urandom of=big bs=1M count="$BIG_MIB" 2>/dev/null && sync; then
  sum1=$(sha256sum big | cut -d' ' -f1)
  echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
  sum2=$(sha256sum big | cut -d' ' -f1)
  size=$(stat -c %s big)
  if [ "$sum1" = "$sum2" ] && [ "$size" = $((BIG_MIB * 1048576)) ]; then
    pass "bigfile-${BIG_MIB}MiB"
  else
    fail "bigfile-${BIG_MIB}MiB" "size $size, sums $sum1 / $sum2"
  fi
  echo "HOSTCHECK sha256 $sum1 posix.$$/big"
else
  fail "bigfile-${BIG_MIB}MiB" "dd failed"
fi
echo "TIME bigfile $(since "$t0")"

# unlink everything that is not checked by the host
t_cleanup() { rm -f g s dangling m p ap x lk plk mm && [ -z "$(ls | grep -v -e '^bigdir$' -e '^big$')" ]; }
check unlink-readdir t_cleanup

summary
