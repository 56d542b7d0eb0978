#!/usr/bin/env bash
# Real-guest end-to-end test: starts a virtio-fs daemon (svfsd or the C reference virtiofsd) on a
# fresh shared directory, boots a Debian guest kernel with a busybox initramfs in QEMU
# (vhost-user-fs-pci), runs a workload script in the guest on the virtiofs mount, and checks the
# result from the serial log plus host-side checks the workload asks for (HOSTCHECK lines).
#
# Usage: tests/e2e/run-guest.sh [options]
#   --daemon svfsd|virtiofsd   daemon under test (default svfsd)
#   --svfsd PATH               svfsd binary (default $SVFSD or build/daemon/svfsd)
#   --virtiofsd PATH           C virtiofsd (default /usr/lib/qemu/virtiofsd)
#   --cache MODE               none|auto|always (svfsd also: never|metadata|shared) (default auto)
#   --versiond PATH            start this svfs-versiond (own socket and table) and point svfsd at
#                              it; implies --cache shared. The guest's FUSE client is stock, so it
#                              does not negotiate versions: svfsd must serve it as cache=none.
#   --kernel 6.1|6.12          guest kernel line (default 6.1; scripts/guest-image.sh --kernel)
#   --kver KVER                guest kernel release (scripts/guest-image.sh --kver)
#   --kmod DIR                 load the modules of DIR (DIR/modules; 6.1: fuse.ko, virtiofs.ko,
#                              6.12: svfs_fuse.ko, plus DIR/cmdline on the kernel command line)
#                              in the guest instead of the image's
#                              (guest-kmod-patches/build.sh prints the directory); with
#                              --versiond the guest also gets versiond's table (see --table) and
#                              svfsd must negotiate shared versions (unless -o noversions)
#   --table NAME               expose /dev/shm/NAME read-only to the guest as an ivshmem-plain
#                              device (memory-backend-file ...,share=on,readonly=on); default with
#                              --kmod and --versiond: versiond's table; "none": no device
#   --mount-opts OPTS          mount -t virtiofs -o OPTS in the guest (e.g. noversions)
#   --qemu-wrapper PATH        start QEMU through PATH (packaging/kata/svfs-kata-qemu) with
#                              SVFS_QEMU and SVFS_TABLE set; the wrapper adds the table device
#   --kata-runtime-rs          start svfsd as Kata's runtime-rs 3.1+ does: --socket-path --shared-dir
#                              --cache auto, Kata's default virtio_fs_extra_args, the shared-mode
#                              extra args of docs/operations.md, then --xattr
#   --queues N                 num-request-queues of vhost-user-fs-pci (default 1; C virtiofsd: 1)
#   --dax-window SIZE          DAX: a window of SIZE (e.g. 64M; a power of 2) as the device's
#                              cache-size and svfsd's --dax-window-size, in the patched QEMU that
#                              tests/e2e/qemu-dax/build.sh builds (or --qemu)
#   --qemu PATH                this qemu-system-x86_64 (default: the one on PATH; with
#                              --dax-window: tests/e2e/qemu-dax/build.sh's)
#   --workload FILE            guest script (default tests/e2e/workloads/posix.sh)
#   --env NAME=VALUE           exported to the workload (repeatable), e.g. --env BIG_MIB=16;
#                              SVFS_DAEMON, SVFS_CACHE and SVFS_QUEUES are always exported
#   --share DIR                share this directory instead of a fresh temporary one (kept)
#   --timeout S                guest timeout in seconds (default 300)
#   --accel auto|kvm|tcg       default auto: KVM only if a probe boot under KVM finishes
#   --smp N  --memory MIB      guest CPUs (default 1) and RAM (default 512)
#   --daemon-arg ARG           extra daemon argument (repeatable)
#   --as-user USER             start the daemon as USER (setpriv, no supplementary groups), as
#                              libvirt session mode does: the share and the socket's directory
#                              are USER's (a --share given is chowned to USER and stays so);
#                              svfsd then sandboxes itself in a user namespace
#   --subids BASE:COUNT        with --as-user: give USER the subordinate IDs BASE..BASE+COUNT-1 in
#                              /etc/subuid and /etc/subgid for the run (newuidmap checks them;
#                              restored on exit), for --daemon-arg --uid-map=... maps
#   --from-doc SECTION         start svfsd and QEMU with the lines of docs/operations.md's
#                              "## SECTION" example (QEMU, DAX) as a user copies them: only its
#                              socket and share paths and its "..." (kernel, initrd, console) are
#                              the harness's; the guest mounts with the tag and -o options the
#                              example's comment gives; DAX also needs SETUPMAPPING counted
#   --keep                     keep the work directory (serial log, daemon log)
#   --quiet                    do not echo the workload output
# Host actions: a workload line "SVFS-E2E-HOSTACT ID KIND ARGS ;" makes the runner act on the host
# and then create SHARE/.hostack-ID holding the result; the workload waits for that file. KIND:
#   stats               SIGUSR1 to svfsd; the ack holds its request counter table (empty for
#                       virtiofsd, which SIGUSR1 would kill)
#   write REL TEXT      TEXT plus newline into SHARE/REL      chmod MODE REL    touch REL    rm REL
#   tableword OFFSET    the ack holds the 8 bytes at OFFSET of the --table file (hex, od order)
#   read REL OFF LEN    the ack holds LEN bytes at OFF of SHARE/REL
#   pwrite REL OFF TEXT TEXT written at OFF of SHARE/REL in place (no truncation)
#   truncate REL SIZE   SHARE/REL truncated (or extended) to SIZE bytes
# Exit status: 0 all passed, 1 failure (workload, host check, boot, timeout), 77 skipped (daemon
# lacks the vhost-user transport, not root, no QEMU), 2 usage error.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
daemon=svfsd
svfsd=${SVFSD:-$repo/build/daemon/svfsd}
virtiofsd=/usr/lib/qemu/virtiofsd
cache=auto
queues=1
workload=$here/workloads/posix.sh
envs=()
share=
timeout_s=300
accel=${SVFS_E2E_ACCEL:-auto}
smp=1
mem=512
daemon_args=()
versiond=
kmod=
image_opts=()
table_name=
mountopts=
qemu_wrapper=
qemu=
dax_window=
kata_rs=0
as_user=
subids=
from_doc=
keep=0
quiet=0

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --daemon) daemon=$2; shift 2 ;;
    --svfsd) svfsd=$2; shift 2 ;;
    --virtiofsd) virtiofsd=$2; shift 2 ;;
    --cache) cache=$2; shift 2 ;;
    --queues) queues=$2; shift 2 ;;
    --workload) workload=$2; shift 2 ;;
    --env) envs+=("$2"); shift 2 ;;
    --share) share=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --accel) accel=$2; shift 2 ;;
    --smp) smp=$2; shift 2 ;;
    --memory) mem=$2; shift 2 ;;
    --daemon-arg) daemon_args+=("$2"); shift 2 ;;
    --versiond) versiond=$2; cache=shared; shift 2 ;;
    --kmod) kmod=$2; shift 2 ;;
    --kernel|--kver) image_opts+=("$1" "$2"); shift 2 ;;
    --table) table_name=$2; shift 2 ;;
    --mount-opts) mountopts=$2; shift 2 ;;
    --qemu-wrapper) qemu_wrapper=$2; shift 2 ;;
    --qemu) qemu=$2; shift 2 ;;
    --dax-window) dax_window=$2; shift 2 ;;
    --kata-runtime-rs) kata_rs=1; shift ;;
    --as-user) as_user=$2; shift 2 ;;
    --from-doc) from_doc=$2; shift 2 ;;
    --subids) subids=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --quiet) quiet=1; shift ;;
    -h|--help) usage ;;
    *) echo "run-guest: unknown argument $1" >&2; usage ;;
  esac
done

say() { echo "run-guest: $*"; }
skip() { say "SKIP: $*"; exit 77; }
die() { say "FAIL: $*"; exit 1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

[ "$(id -u)" -eq 0 ] || skip "needs root (vhost-user daemons, packages)"
[ -r "$workload" ] || { say "no workload $workload"; exit 2; }
case "$daemon" in
  svfsd) [ -x "$svfsd" ] || die "svfsd binary $svfsd not found (build first or pass --svfsd)" ;;
  virtiofsd)
    [ -x "$virtiofsd" ] || skip "$virtiofsd missing (qemu-system-common)"
    [ "$queues" = 1 ] || { say "the C virtiofsd serves one request queue only"; exit 2; } ;;
  *) say "--daemon svfsd|virtiofsd"; exit 2 ;;
esac

# --subids: the line added to /etc/subuid and /etc/subgid, taken out again (that line alone, and
# a file this run made) once the daemon has mapped its IDs, and on exit.
subids_line=
subids_files=()
subids_made=()
add_subids() {
  local f
  subids_line="$as_user:$subids"
  for f in /etc/subuid /etc/subgid; do
    grep -qxF "$subids_line" "$f" 2>/dev/null && continue  # already granted: leave it be
    [ -e "$f" ] || subids_made+=("$f")
    echo "$subids_line" >>"$f" || die "cannot add $subids_line to $f"
    subids_files+=("$f")
  done
}
remove_subids() {
  local f rest
  for f in "${subids_files[@]}"; do
    rest=$(grep -vxF "$subids_line" "$f")
    printf '%s' "${rest:+$rest$'\n'}" >"$f"
  done
  for f in "${subids_made[@]}"; do [ -s "$f" ] || rm -f "$f"; done
  subids_files=() subids_made=()
}
work=$(mktemp -d /tmp/svfs-e2e.XXXXXX)
daemon_pid=
qemu_pid=
versiond_pid=
table=svfs-e2e-$$
cleanup() {
  [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null
  if [ -n "$versiond_pid" ]; then
    stop_pid "$versiond_pid"
    rm -f "/dev/shm/$table"
  fi
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then stop_pid "$daemon_pid" 20; fi
  remove_subids
  if [ "$keep" = 1 ]; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Shared directory and daemon.
if [ -z "$share" ]; then
  share=$work/share
  mkdir -p "$share"
fi
sock=$work/vhost-fs.sock
daemon_through=()
if [ -n "$as_user" ]; then
  # The daemon's user needs its share, a directory for its socket, and a way through $work.
  id "$as_user" >/dev/null 2>&1 || { say "--as-user: no user $as_user"; exit 2; }
  command -v setpriv >/dev/null || skip "setpriv missing (util-linux)"
  chmod 0711 "$work"
  mkdir -p "$work/daemon"
  chown "$as_user:$(id -g "$as_user")" "$share" "$work/daemon"
  sock=$work/daemon/vhost-fs.sock
  daemon_through=(setpriv "--reuid=$(id -u "$as_user")" "--regid=$(id -g "$as_user")" --clear-groups)
  if [ -n "$subids" ]; then
    command -v newuidmap >/dev/null || skip "newuidmap missing (package uidmap)"
    add_subids
  fi
elif [ -n "$subids" ]; then
  say "--subids needs --as-user"; exit 2
fi
if [ -n "$versiond" ]; then
  # With the C virtiofsd (or svfsd not in shared mode) versiond only provides the guest's table.
  [ "$daemon" = svfsd ] || [ "$cache" != shared ] || { say "cache=shared needs --daemon svfsd"; exit 2; }
  [ -x "$versiond" ] || die "svfs-versiond binary $versiond not found"
  versiond_args=()
  # An unprivileged svfsd reaches the socket and the table through its group (docs/security.md).
  [ -n "$as_user" ] && versiond_args=(--allow-gid "$(id -g "$as_user")" --table-mode 0660)
  "$versiond" --socket "$work/versiond.sock" --table "$table" --capacity 65536 \
    "${versiond_args[@]}" >"$work/versiond.log" 2>&1 &
  versiond_pid=$!
  for _ in $(seq 1 100); do [ -S "$work/versiond.sock" ] && break; sleep 0.1; done
  [ -S "$work/versiond.sock" ] || { sed 's/^/  versiond| /' "$work/versiond.log"; die "svfs-versiond did not start"; }
  if [ "$daemon" = svfsd ] && [ "$kata_rs" = 1 ]; then
    daemon_args+=(--cache=shared "--versiond-socket=$work/versiond.sock")
  elif [ "$daemon" = svfsd ]; then
    daemon_args+=(--versiond-socket "$work/versiond.sock")
  fi
  [ -n "$kmod" ] && [ -z "$table_name" ] && table_name=$table
fi
[ "$table_name" = none ] && table_name=
if [ -n "$kmod" ]; then
  for m in $(kmod_modules "$kmod"); do [ -r "$kmod/$m" ] || die "--kmod: $kmod/$m missing"; done
fi
table_file=
if [ -n "$table_name" ]; then
  table_file=/dev/shm/$table_name
  for _ in $(seq 1 50); do [ -s "$table_file" ] && break; sleep 0.1; done
  [ -s "$table_file" ] || die "--table: $table_file missing or empty"
fi
# --from-doc: the example's lines, "\"-continued lines joined, comments kept apart.
doc_qemu=()
doc_tag=
doc_dax_qemu=0
if [ -n "$from_doc" ]; then
  [ "$daemon" = svfsd ] || { say "--from-doc needs --daemon svfsd"; exit 2; }
  block=$(awk -v want="## $from_doc" '
    $0 == want { on = 1; next }
    on && /^## / { exit }
    on && /^    / { print substr($0, 5); seen = 1; next }
    on && seen && /[^ ]/ { exit }' "$repo/docs/operations.md" | sed -e ':a' -e '/\\$/N; s/\\\n *//; ta')
  [ -n "$block" ] || die "--from-doc: no indented example under '## $from_doc' in docs/operations.md"
  say "example of docs/operations.md '## $from_doc':"; echo "$block" | sed 's/^/  doc| /'
  doc_line() { echo "$block" | grep -E "$1" | head -n1 | sed -e 's/ *#.*//' -e 's/ *&$//'; }
  read -r -a cmd <<<"$(doc_line '^svfsd ')"
  [ "${#cmd[@]}" -gt 1 ] || die "--from-doc: no svfsd line in the example"
  read -r -a doc_qemu <<<"$(doc_line '^(qemu-system-x86_64|"\$SVFS_QEMU_DAX") ')"
  [ "${#doc_qemu[@]}" -gt 1 ] || die "--from-doc: no QEMU line in the example"
  mount_line=$(echo "$block" | sed -n 's/.*# in the guest: mount -t virtiofs //p' | head -n1)
  read -r -a mount_words <<<"${mount_line%%(*}"
  while [ "${#mount_words[@]}" -gt 0 ]; do
    case "${mount_words[0]}" in
      -o) mountopts=${mount_words[1]}; mount_words=("${mount_words[@]:2}") ;;
      *) doc_tag=${mount_words[0]}; break ;;
    esac
  done
  [ -n "$doc_tag" ] || die "--from-doc: no '# in the guest: mount -t virtiofs ... TAG /mnt' line"
  # The example's own paths become the harness's.
  doc_sock=$(echo "$block" | grep -o -- '--socket-path [^ ]*' | head -n1 | cut -d' ' -f2)
  doc_share=$(echo "$block" | grep -o -- '--shared-dir [^ ]*' | head -n1 | cut -d' ' -f2)
  for i in "${!cmd[@]}"; do
    case "${cmd[$i]}" in "$doc_sock") cmd[i]=$sock ;; "$doc_share") cmd[i]=$share ;; esac
  done
  cmd[0]=$svfsd
  for i in "${!doc_qemu[@]}"; do doc_qemu[i]=${doc_qemu[$i]//$doc_sock/$sock}; done
  # The example's QEMU: the DAX build it makes first (eval ... build.sh), or one on PATH;
  # --qemu overrides either.
  case "${doc_qemu[0]}" in
    '"$SVFS_QEMU_DAX"'|'$SVFS_QEMU_DAX') doc_dax_qemu=1 ;;
    *) [ -n "$qemu" ] || qemu=$(command -v "${doc_qemu[0]}") || skip "${doc_qemu[0]} missing" ;;
  esac
  doc_qemu=("${doc_qemu[@]:1}")
fi
if [ -z "$from_doc" ]; then  # else cmd is the example's
case "$daemon" in
  svfsd) if [ "$kata_rs" = 1 ]; then
      # As runtime-rs 3.1+ composes it (tests/vhost/launch_lines_test.cc cites the source): its
      # own options, the extra args, then --xattr (below).
      cmd=("$svfsd" --socket-path "$sock" --shared-dir "$share" --cache auto
        --thread-pool-size=1 -o announce_submounts)
    else
      cmd=("$svfsd" --socket-path "$sock" --shared-dir "$share" --cache "$cache" --xattr)
    fi ;;
  virtiofsd) cmd=("$virtiofsd" --socket-path="$sock" -o source="$share" -o cache="$cache" -o xattr) ;;
esac
[ -n "$dax_window" ] && [ "$daemon" = svfsd ] && cmd+=(--dax-window-size "$dax_window")
fi
cmd+=("${daemon_args[@]}")
[ "$kata_rs" = 1 ] && cmd+=(--xattr)
say "daemon: ${cmd[*]}"
"${daemon_through[@]}" "${cmd[@]}" >"$work/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 100); do
  [ -S "$sock" ] && break
  kill -0 "$daemon_pid" 2>/dev/null || break
  sleep 0.1
done
if [ ! -S "$sock" ]; then
  wait "$daemon_pid" 2>/dev/null
  rc=$?
  daemon_pid=
  sed 's/^/  daemon| /' "$work/daemon.log"
  if grep -qi "not implemented" "$work/daemon.log"; then
    skip "$daemon does not implement the vhost-user transport yet (exit $rc)"
  fi
  die "$daemon did not create $sock (exit $rc)"
fi

# The daemon has mapped its IDs (newuidmap runs before it listens): the grant can go.
remove_subids
# --as-user: the daemon must serve as that user (not root), in a user namespace of its own.
daemon_identity=
if [ -n "$as_user" ]; then
  daemon_identity="$(stat -c %U "/proc/$daemon_pid" 2>/dev/null)"
  [ "$(readlink "/proc/$daemon_pid/ns/user")" = "$(readlink /proc/self/ns/user)" ] &&
    daemon_identity+=" (in the host's user namespace)"
fi

# Guest image (cached; builds and installs packages on first use).
image_vars=$("$repo/scripts/guest-image.sh" "${image_opts[@]}") || die "scripts/guest-image.sh failed"
eval "$image_vars"
if [ -n "$kmod" ]; then
  m=$(kmod_modules "$kmod" | head -n1)
  modinfo -F vermagic "$kmod/$m" 2>/dev/null | grep -q "^$SVFS_GUEST_KVER " ||
    die "--kmod $kmod is not built for the guest kernel $SVFS_GUEST_KVER (--kernel/--kver)"
fi
if [ -z "$qemu" ] && { [ -n "$dax_window" ] || [ "$doc_dax_qemu" = 1 ]; }; then
  qemu=$(qemu_dax) || die "tests/e2e/qemu-dax/build.sh failed"
fi
[ -n "$qemu" ] || qemu=$(command -v qemu-system-x86_64) || skip "qemu-system-x86_64 missing"
[ -x "$qemu" ] || die "--qemu $qemu is not executable"

# Workload archive, prepended to the cached initramfs.
mkdir -p "$work/payload"
cp "$workload" "$work/payload/workload.sh"
cp "$here/workloads/guest-lib.sh" "$work/payload/guest-lib.sh"
cp "$here/workloads/checks.sh" "$work/payload/checks.sh"
printf 'export SVFS_DAEMON=%s SVFS_CACHE=%s SVFS_QUEUES=%s\n' "$daemon" "$cache" "$queues" \
  >"$work/payload/workload.env"
for e in "${envs[@]}"; do
  printf 'export %s=%q\n' "${e%%=*}" "${e#*=}" >>"$work/payload/workload.env"
done
if [ -n "$kmod" ]; then stage_kmod "$work/payload" "$kmod" || die "copying $kmod/*.ko"; fi
guest_initrd "$work/payload" "$work/initrd" || die "cpio"

# KVM: /dev/kvm exists on these hosts but guests may stall under it; use it only when a probe
# boot (no virtio-fs device, powers off right after loading modules) finishes quickly.
accel_probe() {
  [ -w /dev/kvm ] || return 1
  local cachef=/tmp/svfs-e2e-kvm-probe.$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)
  if [ -r "$cachef" ]; then [ "$(cat "$cachef")" = ok ]; return; fi
  (timeout 20 "$qemu" -accel kvm -cpu host -m 256 -smp 1 -nodefaults -display none -no-reboot \
    -kernel "$SVFS_GUEST_KERNEL" -initrd "$SVFS_GUEST_INITRD" \
    -append "console=ttyS0 panic=-1 quiet svfs.probe=1" \
    -chardev file,id=ser,path="$work/probe.log" -serial chardev:ser) >/dev/null 2>&1
  if grep -q SVFS-E2E-PROBE-OK "$work/probe.log" 2>/dev/null; then
    echo ok >"$cachef"; return 0
  fi
  echo stall >"$cachef"; return 1
}
case "$accel" in
  auto) if accel_probe; then accel=kvm; else accel=tcg; fi ;;
  kvm|tcg) ;;
  *) say "--accel auto|kvm|tcg"; exit 2 ;;
esac
cpu=()
[ "$accel" = kvm ] && cpu=(-cpu host)
# The version table, read-only: QEMU maps the file PROT_READ and the guest sees it as BAR 2.
table_dev=()
if [ -n "$qemu_wrapper" ]; then
  [ -x "$qemu_wrapper" ] || die "--qemu-wrapper $qemu_wrapper is not executable"
  export SVFS_QEMU=$qemu SVFS_TABLE=${table_file:-/nonexistent} SVFS_KATA_QEMU_CONF=/nonexistent
  qemu=$qemu_wrapper
elif [ -n "$table_file" ]; then
  table_dev=(-object "memory-backend-file,id=vt,mem-path=$table_file,size=$(stat -c %s "$table_file"),share=on,readonly=on"
    -device ivshmem-plain,memdev=vt)
fi
cmdline="console=ttyS0 panic=-1 quiet loglevel=4 svfs.tag=${doc_tag:-svfs}"
[ -n "$mountopts" ] && cmdline+=" svfs.mountopts=$mountopts"
[ -n "$kmod" ] && [ -n "$(kmod_cmdline "$kmod")" ] && cmdline+=" $(kmod_cmdline "$kmod")"

# Guest.
serial=$work/serial.log
if [ "$accel" = tcg ]; then
  read -r -a accel_args <<<"$(tcg_args "$smp")"
else
  accel_args=(-accel "$accel" -smp "$smp")
fi
harness_args=(-kernel "$SVFS_GUEST_KERNEL" -initrd "$work/initrd" -append "$cmdline"
  -nodefaults -display none -no-reboot -monitor none
  -chardev file,id=ser,path="$serial" -serial chardev:ser)
if [ -n "$from_doc" ]; then
  # The example's arguments, its "..." the harness's own.
  qargs=("${accel_args[@]}" "${cpu[@]}")
  for a in "${doc_qemu[@]}"; do
    if [ "$a" = ... ]; then qargs+=("${harness_args[@]}"); else qargs+=("$a"); fi
  done
else
qargs=("${accel_args[@]}" "${cpu[@]}" -machine q35 -m "$mem"
  -object memory-backend-memfd,id=mem,size="${mem}M",share=on -numa node,memdev=mem
  -chardev socket,id=vfs,path="$sock"
  -device vhost-user-fs-pci,chardev=vfs,tag=svfs,num-request-queues="$queues"${dax_window:+,cache-size=$dax_window}
  "${table_dev[@]}"
  "${harness_args[@]}")
fi
queues_said="$queues request queue(s)"
[ -n "$from_doc" ] && queues_said="the example's device"
say "guest: $SVFS_GUEST_KVER${kmod:+ (modules from $kmod)}, accel $accel, $queues_said, cache $cache${dax_window:+, DAX window $dax_window}${table_name:+, table $table_name}${mountopts:+, -o $mountopts}, $(basename "$workload") ${envs[*]}"
t_start=$(now)
timeout "$timeout_s" "$qemu" "${qargs[@]}" >"$work/qemu.log" 2>&1 &
qemu_pid=$!
# Host actions requested by the workload (see the header).
acted=0
host_action() {  # id kind args...
  local id=$1 kind=$2 ack=$share/.hostack-$1 n
  shift 2
  case "$kind" in
    stats)
      if [ "$daemon" != svfsd ]; then : >"$ack.tmp"; mv "$ack.tmp" "$ack"; return; fi  # no counters
      n=$(grep -c '^malformed ' "$work/daemon.log" 2>/dev/null)
      kill -USR1 "$daemon_pid" 2>/dev/null
      for _ in $(seq 1 50); do
        [ "$(grep -c '^malformed ' "$work/daemon.log" 2>/dev/null)" -gt "$n" ] && break
        sleep 0.1
      done
      awk '/^opcode /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$work/daemon.log" |
        sed -n '/^opcode /,/^malformed /p' >"$ack.tmp" ;;
    write) printf '%s\n' "${*:2}" >"$share/$1"; echo ok >"$ack.tmp" ;;
    chmod) chmod "$1" "$share/$2"; echo ok >"$ack.tmp" ;;
    touch) touch "$share/$1"; echo ok >"$ack.tmp" ;;
    rm) rm -f "$share/$1"; echo ok >"$ack.tmp" ;;
    tableword)
      if [ -n "$table_file" ]; then
        od -An -tx8 -j "$1" -N 8 "$table_file" | tr -d ' ' >"$ack.tmp"
      else echo none >"$ack.tmp"; fi ;;
    read) dd if="$share/$1" bs=1 skip="$2" count="$3" status=none >"$ack.tmp" ;;
    pwrite) printf '%s' "${*:3}" | dd of="$share/$1" bs=1 seek="$2" conv=notrunc status=none
      echo ok >"$ack.tmp" ;;
    truncate) truncate -s "$2" "$share/$1"; echo ok >"$ack.tmp" ;;
    *) echo "unknown" >"$ack.tmp" ;;
  esac
  echo "HOSTACT $id $kind $*: $(head -c 60 "$ack.tmp" | tr '\n' ' ')" >>"$work/hostact.log"
  mv "$ack.tmp" "$ack"
}
# Echo the workload output while it runs (progress for long workloads).
shown=0
daemon_gone=
while kill -0 "$qemu_pid" 2>/dev/null; do
  sleep 0.5
  if [ -r "$serial" ]; then
    while read -r _ id kind rest; do
      [ "$id" -gt "$acted" ] 2>/dev/null || continue
      acted=$id
      # shellcheck disable=SC2086
      host_action "$id" "$kind" ${rest% ;}
    done < <(tr -d '\r' <"$serial" | grep -a '^SVFS-E2E-HOSTACT [0-9][0-9]* .* ;$')
  fi
  if [ "$quiet" = 0 ] && [ -r "$serial" ]; then
    total=$(wc -l <"$serial")
    if [ "$total" -gt "$shown" ]; then
      sed -n "$((shown + 1)),${total}p" "$serial" | tr -d '\r' | grep -v '^\[' | sed 's/^/  guest| /'
      shown=$total
    fi
  fi
  # A daemon that dies under a running guest leaves its FUSE requests hanging until the timeout:
  # give QEMU a few seconds to finish by itself (it may be powering off), then stop it.
  if [ -z "$daemon_gone" ] && ! kill -0 "$daemon_pid" 2>/dev/null; then daemon_gone=$SECONDS; fi
  if [ -n "$daemon_gone" ] && [ $((SECONDS - daemon_gone)) -ge 5 ]; then
    say "daemon exited while the guest was running; stopping QEMU"
    echo "FAIL daemon: exited while the guest was running" >>"$work/early-failures"
    kill "$qemu_pid" 2>/dev/null
    break
  fi
done
wait "$qemu_pid"
qemu_rc=$?
qemu_pid=
t_end=$(now)
if [ "$quiet" = 0 ] && [ -r "$serial" ]; then
  sed -n "$((shown + 1)),\$p" "$serial" | tr -d '\r' | grep -v '^\[' | sed 's/^/  guest| /'
fi
host_elapsed=$(secs "$t_start" "$t_end")

# Daemon: vhost-user daemons exit when the frontend disconnects; give it a moment, then stop it.
# An exit of its own must be clean (status 0); SIGTERM from here is fine (the sanitizer and crash
# checks below still apply).
daemon_self_exit=1
for _ in $(seq 1 30); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$daemon_pid" 2>/dev/null; then
  daemon_self_exit=0
  kill "$daemon_pid" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$daemon_pid" 2>/dev/null && { say "daemon ignores SIGTERM, killing it"; kill -9 "$daemon_pid"; }
fi
wait "$daemon_pid" 2>/dev/null
daemon_rc=$?
daemon_pid=

log=$(tr -d '\r' <"$serial" 2>/dev/null)
failures=0
dump() {
  echo "---- serial log ----"; echo "$log" | tail -n 60
  echo "---- qemu (exit $qemu_rc) ----"; tail -n 20 "$work/qemu.log"
  echo "---- daemon (exit $daemon_rc) ----"; tail -n 40 "$work/daemon.log"
}
if [ -s "$work/early-failures" ] && ! echo "$log" | grep -q '^SVFS-E2E-END'; then
  dump; die "daemon $daemon exited (status $daemon_rc) while the guest was running"
fi
if [ "$qemu_rc" = 124 ]; then
  dump; die "guest timed out after ${timeout_s}s"
fi
if echo "$log" | grep -q '^SVFS-E2E-ERROR'; then
  dump; die "guest setup: $(echo "$log" | grep '^SVFS-E2E-ERROR' | head -n1)"
fi
end_line=$(echo "$log" | grep '^SVFS-E2E-END' | tail -n1)
[ -n "$end_line" ] || { dump; die "guest did not finish the workload (qemu exit $qemu_rc)"; }
guest_rc=$(echo "$end_line" | sed -n 's/.*rc=\([0-9]*\).*/\1/p')
guest_elapsed=$(echo "$end_line" | sed -n 's/.*elapsed=\([0-9.]*\).*/\1/p')
boot_uptime=$(echo "$log" | sed -n 's/^SVFS-E2E-BEGIN .*uptime=\([0-9.]*\).*/\1/p' | head -n1)
umount_rc=$(echo "$log" | sed -n 's/^SVFS-E2E-UMOUNT rc=\([0-9a-z]*\).*/\1/p' | head -n1)
if [ "$umount_rc" = hung ]; then
  # The guest printed its blocked tasks: show all of it, not the usual tail.
  echo "---- serial log from the hung umount ----"; echo "$log" | sed -n '/^SVFS-E2E-UMOUNT/,$p'
  dump
fi

# Host-side checks requested by the workload.
host_pass=0
while read -r _ kind want rel; do
  target=$share/$rel
  case "$kind" in
    sha256)
      got=$(sha256sum "$target" 2>/dev/null | cut -d' ' -f1)
      if [ "$got" = "$want" ]; then echo "PASS host-sha256 $rel"; host_pass=$((host_pass + 1))
      else echo "FAIL host-sha256 $rel: guest $want, host ${got:-missing}"; failures=$((failures + 1)); fi ;;
    owner)
      got=$(stat -c %u:%g "$target" 2>/dev/null)
      if [ "$got" = "$want" ]; then echo "PASS host-owner $rel"; host_pass=$((host_pass + 1))
      else echo "FAIL host-owner $rel: want $want, host ${got:-missing}"; failures=$((failures + 1)); fi ;;
    count)
      got=$(find "$target" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
      if [ "$got" = "$want" ]; then echo "PASS host-count $rel"; host_pass=$((host_pass + 1))
      else echo "FAIL host-count $rel: guest $want, host $got"; failures=$((failures + 1)); fi ;;
    *) echo "FAIL host-check: unknown kind $kind"; failures=$((failures + 1)) ;;
  esac
done < <(echo "$log" | grep '^HOSTCHECK ')

if [ -s "$work/early-failures" ]; then
  cat "$work/early-failures"; failures=$((failures + $(wc -l <"$work/early-failures")))
fi
if [ "$daemon_self_exit" = 1 ] && [ "$daemon_rc" != 0 ]; then
  echo "FAIL daemon: exited with status $daemon_rc"; failures=$((failures + 1))
elif [ "$daemon_self_exit" = 0 ] && [ "$daemon_rc" != 143 ] && [ "$daemon_rc" != 0 ]; then
  echo "FAIL daemon: status $daemon_rc after SIGTERM"; failures=$((failures + 1))
fi
if grep -qE 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error:' "$work/daemon.log"; then
  echo "FAIL daemon: sanitizer report in its log"; failures=$((failures + 1))
fi

if [ -n "$from_doc" ] && [[ ",$mountopts," == *,dax,* ]]; then
  maps=$(svfsd_count "$work/daemon.log" SETUPMAPPING)
  if [ "$maps" -gt 0 ]; then echo "PASS the guest mapped files through the DAX window ($maps SETUPMAPPING)"
  else echo "FAIL daemon: no SETUPMAPPING counted with -o dax"; failures=$((failures + 1)); fi
fi
if [ -n "$as_user" ]; then
  if [ "$daemon_identity" = "$as_user" ] && grep -q "unprivileged (uid $(id -u "$as_user")" "$work/daemon.log"; then
    echo "PASS daemon served as $as_user in a user namespace of its own"
  else
    echo "FAIL daemon: ran as '$daemon_identity', not $as_user in its own user namespace"; failures=$((failures + 1))
  fi
fi
if [ -n "$versiond" ] && [ "$cache" != shared ]; then
  # The table is there but the daemon is not in shared mode (a patched guest against a plain
  # daemon): the guest offers versions, is refused, and must work as a stock guest.
  if [ -n "$kmod" ] && [ -n "$table_name" ] && [[ ",$mountopts," != *,noversions,* ]]; then
    if echo "$log" | grep -q '^SVFS-E2E-KLOG .*svfs: shared versions refused by the server'; then
      echo "PASS patched guest offered versions and was refused by $daemon (cache=$cache)"
    else echo "FAIL guest: no 'shared versions refused by the server' line"; failures=$((failures + 1)); fi
  fi
elif [ -n "$versiond" ]; then
  # Shared mode with a stock guest: attached to versiond, versions not negotiated (cache=none).
  if grep -q 'attached to svfs-versiond' "$work/daemon.log"; then echo "PASS daemon attached to svfs-versiond"
  else echo "FAIL daemon: never attached to svfs-versiond"; failures=$((failures + 1)); fi
  if [ -n "$kmod" ] && [ -n "$table_name" ] && [[ ",$mountopts," != *,noversions,* ]]; then
    if grep -q 'shared versions negotiated' "$work/daemon.log"; then
      echo "PASS patched guest negotiated shared versions"
    else echo "FAIL daemon: patched guest with a table did not negotiate shared versions"; failures=$((failures + 1)); fi
  elif grep -q 'not negotiated: serving as cache=none' "$work/daemon.log"; then
    echo "PASS guest without versions served as cache=none"
  else echo "FAIL daemon: no 'not negotiated' line for a guest without versions"; failures=$((failures + 1)); fi
  if ! kill -0 "$versiond_pid" 2>/dev/null; then
    echo "FAIL svfs-versiond died"; sed 's/^/  versiond| /' "$work/versiond.log" | tail -n 20
    failures=$((failures + 1))
  fi
fi

summary=$(echo "$log" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -n1)
[ "$guest_rc" = 0 ] || failures=$((failures + 1))
[ "${umount_rc:-0}" = 0 ] || { echo "FAIL guest umount: rc $umount_rc"; failures=$((failures + 1)); }
say "daemon $daemon, cache $cache, queues $queues, accel $accel: guest workload rc $guest_rc;" \
  "guest: ${summary:-no summary}; host checks passed: $host_pass; failures: $failures"
say "times: boot to mount ${boot_uptime:-?} s (guest uptime), workload ${guest_elapsed:-?} s (guest)," \
  "QEMU total ${host_elapsed} s (host wall clock)"
if [ "$failures" -gt 0 ]; then
  [ "$quiet" = 1 ] && dump
  echo "---- daemon log (exit $daemon_rc) ----"; tail -n 20 "$work/daemon.log"
  die "$failures failure(s)"
fi
say "PASS"
exit 0
