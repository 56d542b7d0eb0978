#!/usr/bin/env bash
# ctest package.deb: builds svfs_<version>_amd64.deb from the build tree (CPack), installs it on
# this machine with apt-get, checks what a user would look for, and removes it again:
#   - the binaries at their paths run (--version, --help; /usr/bin/svfsd and the virtiofsd entry
#     point are links to /usr/libexec/svfsd), the Depends computed by dpkg-shlibdeps
#   - man pages for svfsd(1), svfsctl(1), svfs-versiond(8), naming every option of --help
#   - 50-svfsd.json parses, says "type": "fs" and names the installed svfsd; libvirt's lookup
#     (JSON files in name order) picks it, or with qemu-system-common's 50-qemu-virtiofsd.json
#     picks the C daemon until docs/operations.md's /etc link is made
#   - systemd-analyze verify passes on the units (when systemd-analyze is there)
#   - the installed svfs-versiond and svfsctl work together: by hand on a temp socket, started by
#     systemd-socket-activate (the activation protocol without systemd as PID 1), and through
#     svfs-versiond.socket when systemd is PID 1 (else says it skipped that)
#   - svfsd@.service's command line, with a config like examples/svfsd.conf, mounts and serves
#     the directory and unmounts on SIGTERM
#   - the guest patches and their build script under /usr/share/svfs
#   - dpkg -r leaves none of the package's files or directories behind; dpkg -P forgets it
# Needs root (exit 77 otherwise). Usage: deb-install.sh BUILD_DIR VERSION BUILD_SVFSD
set -euo pipefail

build_dir=$1
version=$2
build_svfsd=$3

if [ "$(id -u)" -ne 0 ]; then
  echo "package.deb: skipped: needs root (installs the package on this machine)"
  exit 77
fi
for tool in cpack dpkg dpkg-deb apt-get python3; do
  command -v "$tool" >/dev/null || { echo "package.deb: $tool not found (scripts/install-deps.sh)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/svfs-package-test.XXXXXX)
installed=0
versiond_pid=
svfsd_pid=
cleanup() {
  set +e
  [ -n "$versiond_pid" ] && kill "$versiond_pid" 2>/dev/null && wait "$versiond_pid" 2>/dev/null
  [ -n "$svfsd_pid" ] && kill -KILL "$svfsd_pid" 2>/dev/null
  umount -l "$work/mnt" 2>/dev/null || true
  if [ "$installed" = 1 ]; then
    echo "package.deb: removing svfs after a failure" >&2
    apt-get -o DPkg::Lock::Timeout=120 purge -y -q svfs >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "package.deb: FAIL: $*" >&2; exit 1; }
step() { echo "package.deb: [${SECONDS}s] $*"; }

arch=$(dpkg --print-architecture)
step "cpack -G DEB"
(cd "$build_dir" && cpack -G DEB -B "$work/out" >"$work/cpack.log" 2>&1) ||
  { cat "$work/cpack.log" >&2; fail "cpack failed"; }
deb=$work/out/svfs_${version}_${arch}.deb
[ -f "$deb" ] || fail "no $deb (cpack made: $(ls "$work/out"))"
depends=$(dpkg-deb -f "$deb" Depends)
step "Depends: $depends"
for lib in libc6 libstdc++6 libcapnp libseccomp2 libcap-ng0; do
  grep -q "$lib" <<<"$depends" || fail "Depends lacks $lib (dpkg-shlibdeps did not run?)"
done

if dpkg-query -W -f='${Status}' svfs 2>/dev/null | grep -q 'install ok installed'; then
  step "note: svfs was installed already; it is replaced and then removed"
fi
step "apt-get install $deb"
apt-get -o DPkg::Lock::Timeout=120 install -y -q --no-install-recommends "$deb" >"$work/apt.log" 2>&1 ||
  { cat "$work/apt.log" >&2; fail "apt-get install failed"; }
installed=1
dpkg-query -L svfs >"$work/files"
[ "$(dpkg-query -W -f='${Version}' svfs)" = "$version" ] || fail "installed version is not $version"

step "binaries"
[ -x /usr/libexec/svfsd ] && [ ! -L /usr/libexec/svfsd ] || fail "/usr/libexec/svfsd missing"
[ "$(readlink -f /usr/bin/svfsd)" = /usr/libexec/svfsd ] || fail "/usr/bin/svfsd is not a link to /usr/libexec/svfsd"
[ "$(readlink -f /usr/libexec/svfs/virtiofsd)" = /usr/libexec/svfsd ] ||
  fail "/usr/libexec/svfs/virtiofsd is not a link to /usr/libexec/svfsd"
[ -x /usr/libexec/svfs/svfs-kata-qemu ] || fail "/usr/libexec/svfs/svfs-kata-qemu missing"
# Without a vhost-user-fs device the wrapper is QEMU itself (Kata probes it so).
command -v qemu-system-x86_64 >/dev/null || fail "qemu-system-x86_64 missing (scripts/install-deps.sh installs it)"
[ "$(SVFS_KATA_QEMU_CONF=/nonexistent /usr/libexec/svfs/svfs-kata-qemu -version | head -n1)" = \
  "$(qemu-system-x86_64 -version | head -n1)" ] || fail "svfs-kata-qemu -version is not QEMU's"
[ "$(/usr/sbin/svfs-versiond --version)" = "svfs-versiond $version" ] || fail "svfs-versiond --version"
[ "$(/usr/bin/svfsctl --version)" = "svfsctl $version" ] || fail "svfsctl --version"
# svfsd's own --version/--print-capabilities: the installed one answers as the built one does.
same_as_build() {  # INSTALLED ARGS...
  local installed_svfsd=$1; shift
  local want got
  want=$("$build_svfsd" "$@" 2>&1; echo "exit $?")
  got=$("$installed_svfsd" "$@" 2>&1; echo "exit $?")
  [ "$got" = "$want" ] || fail "$installed_svfsd $* differs from the build's: $got"
}
same_as_build /usr/bin/svfsd --version
same_as_build /usr/bin/svfsd --help
same_as_build /usr/bin/svfsd --print-capabilities
same_as_build /usr/libexec/svfs/virtiofsd --print-capabilities
python3 -c 'import json,sys; c=json.load(sys.stdin); assert c["type"]=="fs", c' \
  < <(/usr/libexec/svfsd --print-capabilities) || fail "svfsd --print-capabilities is not fs JSON"

step "man pages"
check_man() {  # NAME SECTION COMMAND...: page present, titled, naming every --option of COMMAND --help
  local name=$1 section=$2; shift 2
  local page=/usr/share/man/man$section/$name.$section.gz
  [ -f "$page" ] || fail "$page missing"
  local text
  text=$(zcat "$page" | sed 's/\\-/-/g')
  grep -qi "^\.TH \"\?$name\"\? \"\?$section\"\?" <<<"$text" || fail "$page has no .TH $name $section"
  for opt in $("$@" --help | grep -o -- '--[a-z][a-z0-9-]*' | sort -u); do
    grep -q -- "$opt" <<<"$text" || fail "$page does not mention $opt (from $* --help)"
  done
}
check_man svfsd 1 /usr/libexec/svfsd
check_man svfsctl 1 /usr/bin/svfsctl
check_man svfs-versiond 8 /usr/sbin/svfs-versiond
# svfsctl's page carries each subcommand's --help too.
subcommands=$(/usr/bin/svfsctl --help | sed -n '/^Subcommands:/,$p' | awk '/^  [a-z]/ {print $1}')
[ -n "$subcommands" ] || fail "svfsctl --help lists no subcommands"
for sub in $subcommands; do
  grep -q "^\.SS \"$sub\"" <<<"$(zcat /usr/share/man/man1/svfsctl.1.gz)" || fail "svfsctl.1 has no section for $sub"
  check_man svfsctl 1 /usr/bin/svfsctl "$sub"
done

step "vhost-user JSON"
json=/usr/share/qemu/vhost-user/50-svfsd.json
python3 - "$json" <<'PY' || fail "$json"
import json, os, sys
d = json.load(open(sys.argv[1]))
assert d["type"] == "fs", d
assert d["binary"] == "/usr/libexec/svfsd", d
assert os.access(d["binary"], os.X_OK), d
assert d.get("description"), d
PY

# The backend libvirt picks for a <filesystem> without <binary path>, as qemuInteropFetchConfigs
# (src/qemu/qemu_interop_config.c) and qemuVhostUserFillDomainFS find it: file names from
# /usr/share, /etc and ~/.config's qemu/vhost-user (a later directory's file replaces the same
# name), sorted by name, empty files skipped (they mask), the first whose type is "fs".
libvirt_fs_backend() {
  python3 - <<'PY'
import json, os
files = {}
for d in ("/usr/share/qemu/vhost-user", "/etc/qemu/vhost-user",
          os.path.expanduser("~/.config/qemu/vhost-user")):
    if os.path.isdir(d):
        for name in os.listdir(d):
            if not name.startswith("."):
                files[name] = os.path.join(d, name)
for name in sorted(files):
    path = files[name]
    if os.path.getsize(path) == 0:
        continue
    d = json.load(open(path))
    if d.get("type") == "fs":
        print(d["binary"])
        break
PY
}
picked=$(libvirt_fs_backend) || fail "libvirt's lookup over the vhost-user JSON files failed"
if [ -f /usr/share/qemu/vhost-user/50-qemu-virtiofsd.json ] && [ ! -e /etc/qemu/vhost-user/50-qemu-virtiofsd.json ]; then
  [ "$picked" != /usr/libexec/svfsd ] || fail "libvirt would pick svfsd before the C virtiofsd's JSON"
  # docs/operations.md's way to make svfsd libvirt's default.
  made_dir=0
  [ -d /etc/qemu/vhost-user ] || { mkdir -p /etc/qemu/vhost-user; made_dir=1; }
  ln -s /usr/share/qemu/vhost-user/50-svfsd.json /etc/qemu/vhost-user/50-qemu-virtiofsd.json
  picked=$(libvirt_fs_backend) || picked="(the lookup failed)"
  rm /etc/qemu/vhost-user/50-qemu-virtiofsd.json  # never left behind: it changes libvirt's choice
  [ "$made_dir" = 0 ] || rmdir /etc/qemu/vhost-user
  [ "$picked" = /usr/libexec/svfsd ] || fail "with docs/operations.md's link libvirt picks '$picked', not svfsd"
  echo "package.deb: libvirt's lookup picks the C virtiofsd, and svfsd with the documented /etc link"
else
  [ "$picked" = /usr/libexec/svfsd ] || fail "libvirt's lookup picks '$picked', not svfsd"
  echo "package.deb: libvirt's lookup picks svfsd"
fi

step "guest patches, docs"
patches=/usr/share/svfs/guest-kmod-patches
[ -x "$patches/build.sh" ] || fail "$patches/build.sh missing or not executable"
for series in "$patches/series" "$patches/6.12/series"; do
  [ -f "$series" ] || fail "$series missing"
  while read -r patch; do
    [ -z "$patch" ] || [ -f "$(dirname "$series")/$patch" ] || fail "$patch of $series missing"
  done < <(grep -v '^#' "$series")
done
status=0; "$patches/build.sh" --help >/dev/null 2>"$work/build-help" || status=$?
[ "$status" = 2 ] && grep -q -- '--kver' "$work/build-help" || fail "$patches/build.sh --help"
for doc in operations.md security.md README.md examples/svfsd.conf; do
  [ -f "/usr/share/doc/svfs/$doc" ] || fail "/usr/share/doc/svfs/$doc missing"
done

units=/usr/lib/systemd/system
for unit in svfs-versiond.service svfs-versiond.socket svfsd@.service; do
  [ -f "$units/$unit" ] || fail "$units/$unit missing"
done
if command -v systemd-analyze >/dev/null; then
  step "systemd-analyze verify"
  # A template is verified through an instance of it.
  systemd-analyze verify "$units/svfs-versiond.socket" "$units/svfs-versiond.service" \
    svfsd@example.service >"$work/verify.log" 2>&1 || { cat "$work/verify.log" >&2; fail "systemd-analyze verify"; }
  if [ -s "$work/verify.log" ]; then cat "$work/verify.log" >&2; fail "systemd-analyze verify warned"; fi
else
  step "skipped systemd-analyze verify: systemd-analyze not installed"
fi

step "installed svfs-versiond and svfsctl"
table=svfs-package-test-$$
/usr/sbin/svfs-versiond --socket "$work/versiond.sock" --table "$table" --capacity 64 \
  >"$work/versiond.log" 2>&1 &
versiond_pid=$!
for _ in $(seq 100); do [ -S "$work/versiond.sock" ] && break; sleep 0.05; done
/usr/bin/svfsctl --socket "$work/versiond.sock" status >"$work/status" 2>&1 ||
  { cat "$work/versiond.log" "$work/status" >&2; fail "svfsctl status against the installed versiond"; }
grep -q "$table" "$work/status" || fail "svfsctl status does not name table $table"
kill "$versiond_pid"; wait "$versiond_pid" || fail "svfs-versiond did not exit 0 on SIGTERM"
versiond_pid=
rm -f "/dev/shm/$table"

if command -v systemd-socket-activate >/dev/null; then
  # systemd's own implementation of the activation protocol, without systemd as PID 1: it
  # listens, and on the first connection starts versiond with the socket as fd 3.
  step "socket activation by systemd-socket-activate"
  table=svfs-package-test-act-$$
  systemd-socket-activate -l "$work/activated.sock" /usr/sbin/svfs-versiond --table "$table" \
    --capacity 64 >"$work/activated.log" 2>&1 &
  versiond_pid=$!
  for _ in $(seq 100); do [ -S "$work/activated.sock" ] && break; sleep 0.05; done
  /usr/bin/svfsctl --socket "$work/activated.sock" --json status >"$work/status" 2>&1 ||
    { cat "$work/activated.log" "$work/status" >&2; fail "svfsctl status through systemd-socket-activate"; }
  grep -q "\"table\": \"$table\"" "$work/status" || fail "svfsctl --json status does not name $table"
  grep -q "serving $work/activated.sock (socket passed by systemd)" "$work/activated.log" ||
    { cat "$work/activated.log" >&2; fail "svfs-versiond did not serve the socket passed to it"; }
  kill "$versiond_pid"; wait "$versiond_pid" || fail "activated svfs-versiond did not exit 0 on SIGTERM"
  versiond_pid=
  rm -f "/dev/shm/$table"
else
  step "skipped socket activation by systemd-socket-activate: not installed"
fi

if [ -c /dev/fuse ]; then
  # What svfsd@NAME.service runs: its ExecStart= with the variables of a config made like
  # examples/svfsd.conf (expanded as the shell does; the paths here have no spaces), stopped the
  # way its KillMode=mixed stops it (SIGTERM to svfsd alone).
  step "svfsd@.service's command line on a host mount"
  mkdir "$work/share" "$work/mnt"
  echo "served by svfsd@" >"$work/share/file"
  sed -e "s|^SVFS_SHARED_DIR=.*|SVFS_SHARED_DIR=$work/share|" -e "s|^SVFS_MOUNT=.*|SVFS_MOUNT=$work/mnt|" \
    /usr/share/doc/svfs/examples/svfsd.conf >"$work/test.conf"
  exec_start=$(sed -n 's/^ExecStart=//p' "$units/svfsd@.service")
  (
    # EnvironmentFile= syntax: KEY=VALUE, the value is the rest of the line.
    while IFS= read -r line; do
      case "$line" in ''|'#'*) continue ;; esac
      export "${line%%=*}=${line#*=}"
    done <"$work/test.conf"
    eval "exec $exec_start"
  ) >"$work/svfsd.log" 2>&1 &
  svfsd_pid=$!
  for _ in $(seq 100); do grep -q " $work/mnt fuse" /proc/mounts && break; sleep 0.05; done
  [ "$(cat "$work/mnt/file" 2>&1)" = "served by svfsd@" ] ||
    { cat "$work/svfsd.log" >&2; kill -KILL "$svfsd_pid"; umount -l "$work/mnt" 2>/dev/null; fail "svfsd@ command line: $work/mnt/file not served"; }
  kill -TERM "$svfsd_pid"
  status=0; wait "$svfsd_pid" || status=$?
  [ "$status" = 0 ] || { cat "$work/svfsd.log" >&2; fail "svfsd@ command line: exit $status on SIGTERM"; }
  svfsd_pid=
  ! grep -q " $work/mnt fuse" /proc/mounts || fail "svfsd left $work/mnt mounted"
else
  step "skipped the svfsd@ command line: no /dev/fuse"
fi

if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && [ -d /run/systemd/system ]; then
  step "systemd: socket activation"
  [ ! -e /run/svfs/versiond.sock ] || fail "/run/svfs/versiond.sock exists already (a versiond runs?)"
  systemctl start svfs-versiond.socket
  /usr/bin/svfsctl status >"$work/status" 2>&1 || { cat "$work/status" >&2; fail "svfsctl status via the socket unit"; }
  systemctl is-active -q svfs-versiond.service || fail "the connection did not start svfs-versiond.service"
  journalctl -u svfs-versiond.service -b --no-pager | grep -c "socket passed by systemd" >/dev/null ||
    fail "svfs-versiond did not serve the socket systemd passed"
  systemctl stop svfs-versiond.service svfs-versiond.socket
  rm -f /dev/shm/svfs-versions
else
  step "skipped starting svfs-versiond through systemd: systemd is not PID 1 here"
fi

step "dpkg -r svfs"
apt-get -o DPkg::Lock::Timeout=120 remove -y -q svfs >"$work/remove.log" 2>&1 ||
  { cat "$work/remove.log" >&2; fail "removing svfs"; }
left=()
while read -r path; do
  [ -e "$path" ] || [ -L "$path" ] || continue
  # Directories other packages own (/usr/bin, /usr/share/man/man1, ...) stay.
  if [ -d "$path" ] && [ ! -L "$path" ] && [ -n "$(dpkg-query -S "$path" 2>/dev/null)" ]; then continue; fi
  left+=("$path")
done <"$work/files"
[ "${#left[@]}" -eq 0 ] || fail "left behind: ${left[*]}"
# The maintainer scripts keep dpkg's record until a purge (svfs ships no conffiles).
step "dpkg -P svfs"
apt-get -o DPkg::Lock::Timeout=120 purge -y -q svfs >"$work/purge.log" 2>&1 ||
  { cat "$work/purge.log" >&2; fail "purging svfs"; }
installed=0
if dpkg-query -W -f='${Status}' svfs 2>/dev/null | grep -q 'installed\|config-files'; then
  fail "dpkg still lists svfs after the purge: $(dpkg-query -W -f='${Status}' svfs)"
fi
step "ok: built, installed, checked and removed svfs $version"
