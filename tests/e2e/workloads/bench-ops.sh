# svfs-bench's workloads (tests/bench/svfs-bench.sh), run in a guest by the command agent
# (busybox sh, current directory the mount point). Each prints "key=value" words, the last one
# secs=<guest seconds>. Paths are relative to the mount point.

bench_now() { cut -d' ' -f1 /proc/uptime; }
bench_secs() { echo "$(bench_now) $1" | awk '{printf "%.3f", $1 - $2}'; }
# bench_drop: the guest forgets its caches (dentries, inodes, pages), so the next pass is cold.
# The harness runs it before it counts a cold workload's requests (the FORGETs are not the
# workload's).
bench_drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# bench_walk DIR: find over DIR.
bench_walk() {
  t0=$(bench_now)
  n=$(find "$1" | wc -l)
  echo "entries=$n secs=$(bench_secs "$t0")"
}

# bench_stat LIST: stat every path named in LIST (one a line). A name that cannot be stat'ed
# counts as missing.
bench_stat() {
  t0=$(bench_now)
  found=$(xargs stat -c %i <"$1" 2>/dev/null | wc -l)
  want=$(wc -l <"$1")
  echo "files=$want missing=$((want - found)) secs=$(bench_secs "$t0")"
}

# bench_untar TAR DEST: unpacks TAR (in the initramfs) into DEST, then sync: every file written
# through to the host.
bench_untar() {
  mkdir -p "$2" || return 1
  t0=$(bench_now)
  tar -xf "$1" -C "$2" || return 1
  sync
  echo "files=$(find "$2" -type f | wc -l) secs=$(bench_secs "$t0")"
}

# bench_status DIR OUT: as git status does, stat every file of DIR (name, size, mtime) into OUT
# (in the guest's /tmp) and time it.
bench_status() {
  t0=$(bench_now)
  find "$1" -type f | LC_ALL=C sort | xargs stat -c '%n %s %Y' >"$2"
  echo "files=$(wc -l <"$2") secs=$(bench_secs "$t0")"
}

# bench_changed OLD NEW: how many lines differ between two bench_status outputs (files whose
# size or mtime the guest sees changed).
bench_changed() {
  echo "changed=$(diff "$1" "$2" | grep -c '^+[^+]')"
}

# bench_touch DIR N: the change made elsewhere: appends a line to every Nth file of DIR; prints
# how many it changed.
bench_touch() {
  i=0 n=0
  for f in $(find "$1" -type f | LC_ALL=C sort); do
    if [ $((i % $2)) = 0 ]; then echo "// changed" >>"$f" && n=$((n + 1)); fi
    i=$((i + 1))
  done
  sync
  echo "touched=$n"
}

# bench_churn DIR N: creates N empty files in DIR, then unlinks them.
bench_churn() {
  mkdir -p "$1" || return 1
  t0=$(bench_now)
  i=0
  while [ "$i" -lt "$2" ]; do : >"$1/f$i" || return 1; i=$((i + 1)); done
  i=0
  while [ "$i" -lt "$2" ]; do rm "$1/f$i" || return 1; i=$((i + 1)); done
  echo "files=$2 secs=$(bench_secs "$t0")"
}

# bench_build SRC OBJ: a read-mostly build-like mix, twice: make's up-to-date check (stat of
# every source against a stamp), a read of every source (the compiler), and one object written
# in OBJ for every tenth source.
bench_build() {
  mkdir -p "$2" || return 1
  : >"$2/.stamp"
  t0=$(bench_now)
  for pass in 1 2; do
    find "$1" -type f -newer "$2/.stamp" >/dev/null
    find "$1" -type f -exec cat {} + | wc -c >/dev/null
    i=0
    for f in $(find "$1" -type f | LC_ALL=C sort); do
      [ $((i % 10)) = 0 ] && md5sum "$f" >"$2/o$i.$pass"
      i=$((i + 1))
    done
  done
  sync
  echo "files=$(find "$1" -type f | wc -l) secs=$(bench_secs "$t0")"
}
