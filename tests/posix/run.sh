#!/usr/bin/env bash
# POSIX conformance through svfsd: CPython's own file-system tests (Debian's
# libpython3.11-testsuite: test_os, test_posix, test_shutil, ...) run on a host directory (the
# reference) and on an svfsd /dev/fuse mount of a directory on the same file system, as root and
# as an unprivileged user; every test whose outcome differs must be listed, with its reason, in
# tests/posix/expected-differences.txt (and the list must not hold a difference that is gone).
#
#   tests/posix/run.sh --svfsd build/daemon/svfsd [--cache auto] [--modules "test_os ..."]
#                      [--daemon-arg ARG]...   (default --xattr, so the xattr tests run too)
#   tests/posix/run.sh --guest 6.12 [--modules ...]   the same suite inside a real guest
#
# --guest KERNEL: instead of a host mount, a Linux guest (tests/e2e/run-guest.sh, cache auto)
# runs the suite on its virtiofs mount, chrooted into a minimal root with Debian's python3 that
# this script puts in the share (so the interpreter and its modules are read through svfsd too);
# the reference is the same modules on a host directory. Differences are listed per user as
# guest-root / guest-nobody in the same file.
#
# Needs root (mount). About 1 minute on an idle 2-core machine; --guest about 3 minutes (TCG).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
svfsd=$here/../../build/daemon/svfsd
cache=auto
modules="test_os test_posix test_shutil test_stat test_fileio test_pathlib test_glob test_tempfile test_posixpath"
python=/usr/bin/python3  # Debian's, which the testsuite package matches
daemon_args=()
guest_kernel=
while [[ $# -gt 0 ]]; do
  case $1 in
    --svfsd) svfsd=$2; shift 2 ;;
    --cache) cache=$2; shift 2 ;;
    --modules) modules=$2; shift 2 ;;
    --daemon-arg) daemon_args+=("$2"); shift 2 ;;
    --guest) guest_kernel=$2; shift 2 ;;
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
# The runner where the unprivileged user can read it (a checkout under /root or a mktemp -d is not).
cp "$here/run_python_suite.py" "$work/run_python_suite.py"
chmod 644 "$work/run_python_suite.py"
chmod 755 "$work" "$work/ref" "$work/share"  # the unprivileged runs reach their directories
if [ -z "$guest_kernel" ]; then
  "$svfsd" --shared-dir "$work/share" --mount "$work/mnt" --cache "$cache" "${daemon_args[@]}" \
    2>"$work/daemon.log" &
  daemon=$!
  for _ in $(seq 100); do mountpoint -q "$work/mnt" && break; sleep 0.1; done
  mountpoint -q "$work/mnt" || { cat "$work/daemon.log"; echo "posix: svfsd did not mount" >&2; exit 1; }
fi

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
     "${as[@]}" "$python" "$work/run_python_suite.py" "$dir/outcomes" $modules \
     </dev/null >"$work/out/$name.log" 2>&1) || true
  if [ ! -s "$dir/outcomes" ]; then
    tail -20 "$work/out/$name.log"; echo "posix: the suite did not run in $dir" >&2; exit 1
  fi
  cp "$dir/outcomes" "$work/out/$name"
  echo "posix: $name: $(awk '{n[$1]++} END{for (k in n) printf "%s %d  ", k, n[k]}' "$work/out/$name")($((SECONDS - start)) s)"
}

# A root for the guest's chroot, in the share: python3, the libraries it and its extension
# modules load, its standard library with the test suite, and the host's passwd/group.
make_pyroot() {
  local r=$work/share/pyroot lib
  mkdir -p "$r/usr/bin" "$r/usr/lib/x86_64-linux-gnu" "$r/etc" "$r/tmp" "$r/work"
  ln -s usr/lib "$r/lib"
  ln -s usr/lib64 "$r/lib64"
  mkdir -p "$r/usr/lib64"
  cp /usr/lib64/ld-linux-x86-64.so.2 "$r/usr/lib64/"
  cp "$(readlink -f "$python")" "$r/usr/bin/python3"
  cp -a /usr/lib/python3.11 "$r/usr/lib/"
  rm -rf "$r/usr/lib/python3.11/dist-packages" "$r/usr/lib/python3.11/site-packages"
  for lib in $(ldd "$python" /usr/lib/python3.11/lib-dynload/*.so 2>/dev/null |
               awk '$3 ~ /^\// {print $3}' | sort -u); do
    cp -L "$lib" "$r/usr/lib/x86_64-linux-gnu/"
  done
  cp /etc/passwd /etc/group "$r/etc/"
  cp "$here/run_python_suite.py" "$r/"
  chmod 1777 "$r/tmp"
  for user in root nobody; do
    mkdir -p "$r/work/guest-$user"
  done
  chmod -R a+rX "$r"
}

# compare NAME-OF-REFERENCE NAME-UNDER-TEST USER-TAG: differing outcomes, "ID TAG HOST->SVFSD".
compare() {
  join -j 2 -o 0,1.1,2.1 <(sort -k2 "$work/out/$1") <(sort -k2 "$work/out/$2") |
    awk -v u="$3" '$2 != $3 {print $1, u, $2 "->" $3}' >>"$work/out/differences"
}

status=0
if [ -z "$guest_kernel" ]; then
  for user in root nobody; do
    run_suite "host-$user" "$work/ref" "$user"
    run_suite "svfsd-$user" "$work/mnt" "$user"
    compare "host-$user" "svfsd-$user" "$user"
  done
else
  make_pyroot
  echo "posix: Linux $guest_kernel guest: the suite as root and as nobody on its virtiofs mount" \
       "(TCG: a few minutes)"
  start=$SECONDS
  if ! "$here/../e2e/run-guest.sh" --daemon svfsd --svfsd "$svfsd" --kernel "$guest_kernel" \
      --cache "$cache" --share "$work/share" --memory 1024 --timeout 1200 \
      --workload "$here/../e2e/workloads/python-suite.sh" --env MODULES="$modules" \
      >"$work/out/guest.log" 2>&1; then
    tail -40 "$work/out/guest.log"; echo "posix: the guest run failed" >&2; exit 1
  fi
  for user in root nobody; do
    if ! grep -q "PASS python-suite $user:" "$work/out/guest.log"; then
      tail -40 "$work/out/guest.log"; echo "posix: the guest ran no suite as $user" >&2; exit 1
    fi
  done
  grep -o 'PASS python-suite.*' "$work/out/guest.log" | sed 's/^/posix: guest: /'
  echo "posix: guest run took $((SECONDS - start)) s"
  for user in root nobody; do
    cp "$work/share/pyroot/work/guest-$user/outcomes" "$work/out/guest-$user"
    cp "$work/share/pyroot/work/guest-$user.log" "$work/out/svfsd-guest-$user.log"
    run_suite "host-$user" "$work/ref" "$user"
    compare "host-$user" "guest-$user" "guest-$user"
  done
fi
touch "$work/out/differences"
sort -o "$work/out/differences" "$work/out/differences"
# Only the entries for the users this run compared (root, nobody; or guest-root, guest-nobody).
if [ -z "$guest_kernel" ]; then tags="root nobody"; else tags="guest-root guest-nobody"; fi
awk -v tags=" $tags " '!/^#/ && NF && index(tags, " " $2 " ") {print $1, $2, $3}' \
  "$here/expected-differences.txt" | sort >"$work/out/expected"
unexpected=$(comm -23 "$work/out/differences" "$work/out/expected")
gone=$(comm -13 "$work/out/differences" "$work/out/expected")
echo "posix: $(wc -l <"$work/out/differences") tests differ from the host, $(wc -l <"$work/out/expected") listed"
if [ -n "$unexpected" ]; then
  echo "posix: differences from the host not in tests/posix/expected-differences.txt (bugs, or list them with the reason):"
  echo "$unexpected" | sed 's/^/  /'
  for name in $(echo "$unexpected" | awk '{print "svfsd-" $2}' | sort -u); do
    [ -r "$work/out/$name.log" ] || continue
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
