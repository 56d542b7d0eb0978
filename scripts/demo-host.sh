#!/usr/bin/env bash
# The main job on a built-in default: builds svfsd, generates a sample tree, mounts it through
# svfsd on a host mount point in each cache mode, runs a short metadata workload (walk, stat
# twice, create/rename/unlink, long listing), and prints per-opcode request counts and the time.
# Needs root (installs packages, mounts FUSE). Usage: scripts/demo-host.sh [MODES...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
modes=("$@")
[ ${#modes[@]} -eq 0 ] && modes=(none auto always)

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root: it installs packages and mounts a FUSE file system" >&2
  exit 1
fi
"$root/scripts/build.sh" "$root/build" >/dev/null
svfsd="$root/build/daemon/svfsd"

work=$(mktemp -d /tmp/svfs-demo.XXXXXX)
src="$work/src" mnt="$work/mnt"
mkdir -p "$src" "$mnt"
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  mountpoint -q "$mnt" && umount -l "$mnt"
  rm -rf "$work"
}
trap cleanup EXIT

dirs=20 files=100
echo "demo: generating a sample tree of $dirs directories x $files files in $src"
for d in $(seq 1 $dirs); do
  mkdir -p "$src/dir$d/sub"
  for f in $(seq 1 $files); do echo "file $d/$f" >"$src/dir$d/file$f.txt"; done
done

workload() {
  local m=$1
  find "$m" | wc -l >/dev/null                       # walk: READDIR(PLUS) + LOOKUP
  find "$m" -type f -printf '%s\n' >/dev/null        # stat every file
  find "$m" -type f -printf '%s\n' >/dev/null        # again: served from cache where allowed
  for i in $(seq 1 200); do echo "new $i" >"$m/dir1/new$i"; done
  for i in $(seq 1 200); do mv "$m/dir1/new$i" "$m/dir2/moved$i"; done
  rm -f "$m"/dir2/moved*
  ls -lR "$m" >/dev/null
}

summary=()
for mode in "${modes[@]}"; do
  log="$work/svfsd-$mode.log"
  "$svfsd" --shared-dir "$src" --mount "$mnt" --cache "$mode" 2>"$log" &
  pid=$!
  for _ in $(seq 1 100); do mountpoint -q "$mnt" && break; sleep 0.05; done
  mountpoint -q "$mnt" || { cat "$log"; echo "demo: svfsd did not mount" >&2; exit 1; }
  start=$(date +%s.%N)
  workload "$mnt"
  end=$(date +%s.%N)
  kill -USR1 "$pid"; sleep 0.3
  kill -TERM "$pid"; wait "$pid"; pid=""
  table=$(awk '/^opcode +requests +errors/{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$log" |
          sed -n '/^opcode/,/^malformed/p')
  elapsed=$(awk -v a="$start" -v b="$end" 'BEGIN{print b-a}')
  echo
  echo "== cache=$mode: workload took $(printf '%.2f' "$elapsed") s; requests served by svfsd:"
  echo "$table"
  count() { echo "$table" | awk -v op="$1" '$1==op{print $2; f=1} END{if(!f) print 0}'; }
  summary+=("$(printf '%-8s %10.2f %10s %10s %10s %12s' "$mode" "$elapsed" "$(count total)" \
    "$(count LOOKUP)" "$(count GETATTR)" "$(( $(count READDIR) + $(count READDIRPLUS) ))")")
done

echo
echo "== summary ($dirs x $files files; walk, stat x2, 200 create+rename+unlink, ls -lR)"
printf '%-8s %10s %10s %10s %10s %12s\n' mode seconds requests LOOKUP GETATTR READDIR*
for line in "${summary[@]}"; do echo "$line"; done
