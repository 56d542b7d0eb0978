#!/bin/sh
# Metadata workload for the svfs demo/benchmark. Runs in the guest under busybox sh with the
# virtio-fs mount as $1. Builds a tree (unless one is there: run-guest.sh --share DIR can bring a
# host tree, walked read-only under $TREE), walks it, stats every file twice (the second pass shows
# what the attribute cache saves), then creates, renames and unlinks FILES files.
# Prints "TIME phase seconds" per phase and "metadata elapsed: S s" (guest clock).
# Knobs: TREE (directory to walk, relative to the mount; default: build meta-tree), DIRS (20),
# PER_DIR (25), FILES (200).
root=${1:-/mnt}
DIRS=${DIRS:-20}
PER_DIR=${PER_DIR:-25}
FILES=${FILES:-200}
up() { cut -d' ' -f1 /proc/uptime; }
since() { echo "$(up) $1" | awk '{printf "%.2f", $1 - $2}'; }
failed=0
cd "$root" || exit 1
start=$(up)

if [ -n "$TREE" ]; then
  tree=$TREE
else
  tree=meta-tree
  if [ ! -d "$tree" ]; then
    t0=$(up)
    d=0
    while [ $d -lt "$DIRS" ]; do
      mkdir -p "$tree/d$d" || failed=1
      f=0
      while [ $f -lt "$PER_DIR" ]; do
        echo "$d/$f" >"$tree/d$d/f$f" || failed=1
        f=$((f + 1))
      done
      d=$((d + 1))
    done
    echo "TIME populate $(since "$t0")"
  fi
fi

# Cold caches: the walk and the first stat pass go to the daemon.
sync
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
t0=$(up)
nfiles=$(find "$tree" -type f | wc -l)
echo "TIME walk $(since "$t0") ($nfiles files)"
t0=$(up)
find "$tree" -type f -exec stat -c '%s %Y' {} + >/dev/null || failed=1
echo "TIME stat-pass-1 $(since "$t0")"
t0=$(up)
find "$tree" -type f -exec stat -c '%s %Y' {} + >/dev/null || failed=1
echo "TIME stat-pass-2 $(since "$t0")"

t0=$(up)
mkdir -p churn
i=0
while [ $i -lt "$FILES" ]; do : >"churn/c$i" || failed=1; i=$((i + 1)); done
echo "TIME create-$FILES $(since "$t0")"
t0=$(up)
i=0
while [ $i -lt "$FILES" ]; do mv "churn/c$i" "churn/r$i" || failed=1; i=$((i + 1)); done
echo "TIME rename-$FILES $(since "$t0")"
t0=$(up)
i=0
while [ $i -lt "$FILES" ]; do rm "churn/r$i" || failed=1; i=$((i + 1)); done
rmdir churn || failed=1
echo "TIME unlink-$FILES $(since "$t0")"

echo "metadata elapsed: $(since "$start") s"
if [ "$failed" = 0 ]; then echo "1 passed, 0 failed"; else echo "0 passed, 1 failed"; fi
[ "$failed" = 0 ]
