#!/usr/bin/env bash
# POSIX conformance through svfsd: CPython's own file-system tests (Debian's
# libpython3.11-testsuite: test_os, test_posix, test_shutil, ...) run on a host directory (the
# reference) and on an svfsd /dev/fuse mount of a directory on the same file system, as root and
# as an unprivileged user; every test whose outcome differs must be listed, with its reason, in
# tests/posix/expected-differences.txt (and the list must not hold a difference that is gone).
#
#   tests/posix/run.sh --svfsd build/daemon/svfsd [--cache auto] [--modules "test_os ..."]
#                      [--daemon-arg ARG]...   (default --xattr, so the xattr tests run too)
#
# Needs root (mount). About 1 minute on an idle 2-core machine.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
svfsd=$here/../../build/daemon/svfsd
cache=auto
modules="test_os test_posix test_shutil test_stat test_fileio test_pathlib test_glob test_tempfile test_posixpath"
python=/usr/bin/python3  # Debian's, which the testsuite package matches
daemon_args=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --svfsd) svfsd=$2; shift 2 ;;
    --cache) cache=$2; shift 2 ;;
    --modules) modules=$2; shift 2 ;;
    --daemon-arg) daemon_args+=("$2"); shift 2 ;;
    *) echo "usage: $0 [--svfsd PATH] [--cache MODE] [--modules \"test_os ...\"] [--daemon-arg ARG]..." >&2
       exit 2 ;;
  esac
done
[ ${#daemon_args[@]} -eq 0 ] && daemon_args=(--xattr)
if [ "$(id -u)" -ne 0 ]; then echo "posix: run as root (it mounts svfsd)" >&2; exit 1; fi
if ! "$python" -c 'import test.test_os' 2>/dev/null; then
  echo "posix: CPython's test suite is missing: apt-get install libpython3.11-testsuite" \
       "(scripts/install-deps.sh installs it)" >&2
  exit 1
fi

work=$(mktemp -d /var/tmp/svfs-posix.XXXXXX)
daemon=
cleanup() {
  if mountpoint -q "$work/mnt" 2>/dev/null; then umount "$work/mnt" || umount -l "$work/mnt"; fi
  [ -n "$daemon" ] && wait "$daemon" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/ref" "$work/share" "$work/mnt" "$work/out"
chmod 755 "$work" "$work/ref" "$work/share"  # the unprivileged runs reach their directories
"$svfsd" --shared-dir "$work/share" --mount "$work/mnt" --cache "$cache" "${daemon_args[@]}" \
  2>"$work/daemon.log" &
daemon=$!
for _ in $(seq 100); do mountpoint -q "$work/mnt" && break; sleep 0.1; done
mountpoint -q "$work/mnt" || { cat "$work/daemon.log"; echo "posix: svfsd did not mount" >&2; exit 1; }

# run_suite NAME DIR USER: the suite in DIR/NAME as USER (root or nobody), outcomes to out/NAME.
run_suite() {
  local name=$1 dir=$2/$1 user=$3 start=$SECONDS
  mkdir -p "$dir"
  local as=()
  if [ "$user" != root ]; then
    chown "$user:" "$dir"
    as=(setpriv --reuid="$user" --regid="$(id -g "$user")" --clear-groups)
  fi
  # shellcheck disable=SC2086
  (cd "$dir" && env -i PATH=/usr/bin:/bin HOME="$dir" TMPDIR="$dir" LANG=C.UTF-8 \
     "${as[@]}" "$python" "$here/run_python_suite.py" "$dir/outcomes" $modules \
     >"$work/out/$name.log" 2>&1) || true
  if [ ! -s "$dir/outcomes" ]; then
    tail -20 "$work/out/$name.log"; echo "posix: the suite did not run in $dir" >&2; exit 1
  fi
  cp "$dir/outcomes" "$work/out/$name"
  echo "posix: $name: $(awk '{n[$1]++} END{for (k in n) printf "%s %d  ", k, n[k]}' "$work/out/$name")($((SECONDS - start)) s)"
}

status=0
for user in root nobody; do
  run_suite "host-$user" "$work/ref" "$user"
  run_suite "svfsd-$user" "$work/mnt" "$user"
  # Outcome pairs that differ: "ID USER HOST->SVFSD".
  join -j 2 -o 0,1.1,2.1 <(sort -k2 "$work/out/host-$user") <(sort -k2 "$work/out/svfsd-$user") |
    awk -v u="$user" '$2 != $3 {print $1, u, $2 "->" $3}' >>"$work/out/differences"
done
touch "$work/out/differences"
sort -o "$work/out/differences" "$work/out/differences"
awk '!/^#/ && NF {print $1, $2, $3}' "$here/expected-differences.txt" | sort >"$work/out/expected"
unexpected=$(comm -23 "$work/out/differences" "$work/out/expected")
gone=$(comm -13 "$work/out/differences" "$work/out/expected")
echo "posix: $(wc -l <"$work/out/differences") tests differ from the host, $(wc -l <"$work/out/expected") listed"
if [ -n "$unexpected" ]; then
  echo "posix: differences from the host not in tests/posix/expected-differences.txt (bugs, or list them with the reason):"
  echo "$unexpected" | sed 's/^/  /'
  for name in $(echo "$unexpected" | awk '{print "svfsd-" $2}' | sort -u); do
    echo "--- $name log (failures):"; grep -A12 -E '^(FAIL|ERROR):' "$work/out/$name.log" | head -80 || true
  done
  status=1
fi
if [ -n "$gone" ]; then
  echo "posix: listed differences that are gone (remove them from the list):"
  echo "$gone" | sed 's/^/  /'
  status=1
fi
[ "$status" = 0 ] && echo "posix: PASS: svfsd matches the host file system but for the listed differences"
exit "$status"
