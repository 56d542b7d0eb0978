#!/usr/bin/env bash
# Two VMs sharing one host directory: coherence and cost per cache mode.
#
# Per mode: one svfs-versiond (modes that need it), two daemons (one per VM) on the same fresh host
# directory under /var/tmp, two QEMU guests (vhost-user-fs-pci, the image of scripts/guest-image.sh,
# the patched fuse.ko/virtiofs.ko of guest-kmod-patches/ where the mode says so, versiond's table
# through ivshmem-plain backed read-only by /dev/shm/<table>). Each guest runs
# workloads/two-vm-agent.sh, a command agent on its second serial port (a QEMU pipe chardev per
# guest): the harness drives both guests step by step through that channel, never through the
# shared directory under test.
#
#   Coherence: for each step of workloads/two-vm-ops.sh (create, unlink, rename over an existing
#     name and to a new name, mkdir, rmdir, chmod, chown, truncate, write changing the size, write
#     of the same size, utimens, setxattr, link, symlink): B observes the items of the step (stat
#     fields, directory listing, content, link target, xattr) so it has the old state cached; A
#     makes the change; B observes again. Each item whose state changed on the host is one check;
#     it is stale if B's second observation differs from the host directory's. The same steps are
#     then made on the host directly (versiond's fanotify path; B observes after --settle seconds).
#   Cost: B stats (test -e) every file of an unchanged tree of --files files (made on the host
#     before boot) --passes times; the harness reads B's daemon's LOOKUP and GETATTR counters
#     between passes (svfsd: SIGUSR1 table; C virtiofsd: its -d debug log) and the guest time of
#     each pass.
#
# Usage: tests/e2e/two-vm.sh [options]
#   --modes LIST      comma-separated (default shared):
#                       shared       svfsd --cache shared, patched modules with the table
#                       noversions   as shared, mounted -o noversions (stock behaviour)
#                       none|auto|always  svfsd --cache MODE, stock modules
#                       virtiofsd    /usr/lib/qemu/virtiofsd -o cache=auto, stock modules
#                       stock-shared svfsd --cache shared, stock modules (must be served as none)
#                       federated    two "hosts": as shared, but each VM's svfsd attaches to a
#                                    versiond of its own (own socket and table), the two
#                                    federated over a nats-server the harness starts (JetStream,
#                                    loopback); B's versiond runs --host-changes none, so A's and
#                                    the host's changes reach B's table only through federation
#                                    (as on another host's NFS mount, where fanotify sees none)
#                     "all" = shared,noversions,none,auto,always,virtiofsd,stock-shared
#   --files N         tree size of the cost run, a multiple of 100 (default 10000)
#   --passes K        stat passes of the cost run (default 3)
#   --creates N       files B creates after the stat passes, timed (default 1000)
#   --tree DIR        cost run on a copy of DIR instead (every regular file in it is stat'ed; the
#                     list of names travels in the guest's initramfs, not through the share)
#   --settle S        wait after a host-side change before B looks (default 0.5)
#   --check           exit 1 unless every mode has 0 stale results and (shared) passes 2..K sent
#                     fewer than files*(K-1)/20 LOOKUP+GETATTR (cache=none sends at least one
#                     request per file and pass)
#   --svfsd PATH  --versiond PATH  --virtiofsd PATH
#   --kernel 6.1|6.12  --kver KVER   guest kernel of both VMs (default 6.1; scripts/guest-image.sh)
#   --kernel-a K  --kernel-b K  --kver-a KVER  --kver-b KVER   the kernel of one VM (mixed fleet)
#   --kernels KA,KB   the same as --kernel-a KA --kernel-b KB (e.g. --kernels 6.1,6.12)
#                     (the last option naming a VM's kernel wins)
#   --kmod DIR        patched modules of both VMs; --kmod-a DIR / --kmod-b DIR for one VM (default:
#                     guest-kmod-patches/build.sh --kver <that VM's kernel>, once per kernel)
#   --timeout S       per guest command (default 600)   --keep   keep the work directories
#   --daemon-log-level L  svfsd --log-level L; with trace, a failed cost check names the nodes
#                     whose entries B looked up again and the versions B's daemon replied with
#   --table-out FILE  also write the result table to FILE
# Exit status: 0 done (and --check passed), 1 failure, 77 skipped (not root, no QEMU), 2 usage.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
svfsd=${SVFSD:-$repo/build/daemon/svfsd}
versiond=${SVFS_VERSIOND:-$repo/build/versiond/svfs-versiond}
virtiofsd=/usr/lib/qemu/virtiofsd
declare -A kopt_kind=([A]=--kernel [B]=--kernel) kopt_val=([A]=6.1 [B]=6.1) kmodv=([A]="" [B]="")
declare -A gkernel ginitrd gkver
modes=shared
files=10000
passes=3
creates=1000
settle=0.5
check=0
cmd_timeout=600
keep=0
daemon_log_level=
table_out=
tree_src=

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --modes) modes=$2; shift 2 ;;
    --files) files=$2; shift 2 ;;
    --passes) passes=$2; shift 2 ;;
    --creates) creates=$2; shift 2 ;;
    --tree) tree_src=$2; shift 2 ;;
    --settle) settle=$2; shift 2 ;;
    --check) check=1; shift ;;
    --svfsd) svfsd=$2; shift 2 ;;
    --versiond) versiond=$2; shift 2 ;;
    --virtiofsd) virtiofsd=$2; shift 2 ;;
    --kmod) kmodv[A]=$2; kmodv[B]=$2; shift 2 ;;
    --kmod-a) kmodv[A]=$2; shift 2 ;;
    --kmod-b) kmodv[B]=$2; shift 2 ;;
    --kernel|--kver) kopt_kind[A]=$1; kopt_val[A]=$2; kopt_kind[B]=$1; kopt_val[B]=$2; shift 2 ;;
    --kernel-a|--kver-a) kopt_kind[A]=${1%-a}; kopt_val[A]=$2; shift 2 ;;
    --kernel-b|--kver-b) kopt_kind[B]=${1%-b}; kopt_val[B]=$2; shift 2 ;;
    --kernels)
      case "$2" in *,*) ;; *) echo "two-vm: --kernels wants KA,KB (e.g. 6.1,6.12)" >&2; exit 2 ;; esac
      kopt_kind[A]=--kernel; kopt_val[A]=${2%%,*}; kopt_kind[B]=--kernel; kopt_val[B]=${2#*,}; shift 2 ;;
    --timeout) cmd_timeout=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --daemon-log-level) daemon_log_level=$2; shift 2 ;;
    --table-out) table_out=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "two-vm: unknown argument $1" >&2; usage ;;
  esac
done
[ "$modes" = all ] && modes=shared,noversions,none,auto,always,virtiofsd,stock-shared
[ $((files % 100)) = 0 ] && [ "$files" -gt 0 ] || { echo "two-vm: --files must be a multiple of 100" >&2; exit 2; }
[ "$passes" -ge 2 ] 2>/dev/null || { echo "two-vm: --passes must be at least 2" >&2; exit 2; }
dirs=$((files / 100))
if [ -n "$tree_src" ]; then
  [ -d "$tree_src" ] || { echo "two-vm: --tree $tree_src: not a directory" >&2; exit 2; }
  files=$(find "$tree_src" -type f | wc -l)
  [ "$files" -gt 0 ] || { echo "two-vm: --tree $tree_src: no files" >&2; exit 2; }
fi
# shellcheck source=workloads/two-vm-ops.sh
. "$here/workloads/two-vm-ops.sh"

say() { echo "two-vm: $*"; }
skip() { say "SKIP: $*"; exit 77; }
die() { say "FAIL: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || skip "needs root (vhost-user daemons, chown, packages)"
qemu=$(command -v qemu-system-x86_64) || skip "qemu-system-x86_64 missing"
command -v setfattr >/dev/null && command -v getfattr >/dev/null || skip "setfattr/getfattr missing (package attr)"
# Each VM's image (kernel and initramfs of scripts/guest-image.sh); one call per distinct kernel.
for vm in A B; do
  if [ "$vm" = B ] && [ "${kopt_kind[B]} ${kopt_val[B]}" = "${kopt_kind[A]} ${kopt_val[A]}" ]; then
    gkernel[B]=${gkernel[A]}; ginitrd[B]=${ginitrd[A]}; gkver[B]=${gkver[A]}
    continue
  fi
  image_vars=$("$repo/scripts/guest-image.sh" "${kopt_kind[$vm]}" "${kopt_val[$vm]}") ||
    die "scripts/guest-image.sh ${kopt_kind[$vm]} ${kopt_val[$vm]} (VM $vm) failed"
  eval "$image_vars"
  gkernel[$vm]=$SVFS_GUEST_KERNEL; ginitrd[$vm]=$SVFS_GUEST_INITRD; gkver[$vm]=$SVFS_GUEST_KVER
done
needs_kmod=0
needs_svfsd=0
needs_versiond=0
IFS=, read -ra mode_list <<<"$modes"
for m in "${mode_list[@]}"; do
  case "$m" in
    shared|noversions) needs_kmod=1; needs_svfsd=1; needs_versiond=1 ;;
    stock-shared) needs_svfsd=1; needs_versiond=1 ;;
    federated) needs_kmod=1; needs_svfsd=1; needs_versiond=1
      command -v nats-server >/dev/null || skip "nats-server missing (apt-get install nats-server)" ;;
    none|auto|always) needs_svfsd=1 ;;
    virtiofsd) [ -x "$virtiofsd" ] || skip "$virtiofsd missing (qemu-system-common)" ;;
    *) echo "two-vm: unknown mode $m" >&2; exit 2 ;;
  esac
done
[ "$needs_svfsd" = 0 ] || [ -x "$svfsd" ] || die "svfsd $svfsd not found (build it or pass --svfsd)"
[ "$needs_versiond" = 0 ] || [ -x "$versiond" ] || die "svfs-versiond $versiond not found (--versiond)"
# Each VM gets the modules built for its own kernel (build.sh per kernel, cached).
if [ "$needs_kmod" = 1 ]; then
  declare -A built
  for vm in A B; do
    [ -n "${kmodv[$vm]}" ] && continue
    if [ -z "${built[${gkver[$vm]}]:-}" ]; then
      say "patched modules for ${gkver[$vm]} (guest-kmod-patches/build.sh, cached)..."
      kvars=$("$repo/guest-kmod-patches/build.sh" --kver "${gkver[$vm]}") ||
        die "guest-kmod-patches/build.sh --kver ${gkver[$vm]} failed"
      eval "$kvars"
      built[${gkver[$vm]}]=$SVFS_KMOD_DIR
    fi
    kmodv[$vm]=${built[${gkver[$vm]}]}
  done
  for vm in A B; do
    m=$(kmod_modules "${kmodv[$vm]}" | head -n1)
    modinfo -F vermagic "${kmodv[$vm]}/$m" 2>/dev/null | grep -q "^${gkver[$vm]} " ||
      die "--kmod ${kmodv[$vm]} is not built for VM $vm's kernel ${gkver[$vm]} (--kernel/--kver, --kmod-a/-b)"
  done
fi
say "guest kernels: A ${gkver[A]}, B ${gkver[B]}"

# State of the mode being run; cleanup() stops whatever is left.
work=
pids=()
table=
table_b=
share_mount=
cleanup_mode() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done  # all at once; then each gets 3 s
  for p in "${pids[@]}"; do stop_pid "$p"; done
  pids=()
  agent_close_all
  [ -n "$table" ] && rm -f "/dev/shm/$table"
  [ -n "$table_b" ] && rm -f "/dev/shm/$table_b"
  table= table_b=
  if [ -n "$share_mount" ] && [ "$keep" = 1 ]; then
    say "the federated share stays mounted (tmpfs) on $share_mount: umount it when done"
  elif [ -n "$share_mount" ]; then
    umount -l "$share_mount"
  fi
  share_mount=
  if [ -n "$work" ]; then
    if [ "$keep" = 1 ]; then say "kept $work"; else rm -rf "$work"; fi
  fi
  work=
}
trap cleanup_mode EXIT
trap 'exit 130' INT TERM

# gcmd VM COMMAND: run COMMAND in guest VM (A or B) through its agent (lib.sh agent_cmd).
gcmd() { agent_cmd "$1" "$cmd_timeout" "${@:2}"; }

# counters VM: "LOOKUP GETATTR" served so far by VM's daemon.
declare -A dpid dlog dkind qpid
counters() {
  local vm=$1
  if [ "${dkind[$vm]}" = virtiofsd ]; then
    echo "$(grep -c 'opcode: LOOKUP ' "${dlog[$vm]}") $(grep -c 'opcode: GETATTR ' "${dlog[$vm]}")"
    return
  fi
  svfsd_dump_counters "${dpid[$vm]}" "${dlog[$vm]}"
  awk '/^opcode /{l=0; g=0} $1=="LOOKUP"{l=$2} $1=="GETATTR"{g=$2} END{print l+0, g+0}' "${dlog[$vm]}"
}

# run_mode MODE: prints the result row to $work/row.
results=()
overall=0
run_mode() {
  local mode=$1 dkind_m cache_m use_kmod=0 mountopts= use_table=0 federated=0 versioned=0 vm
  case "$mode" in
    shared) dkind_m=svfsd; cache_m=shared; use_kmod=1; use_table=1; versioned=1 ;;
    noversions) dkind_m=svfsd; cache_m=shared; use_kmod=1; use_table=1; mountopts=noversions ;;
    stock-shared) dkind_m=svfsd; cache_m=shared ;;
    federated) dkind_m=svfsd; cache_m=shared; use_kmod=1; use_table=1; versioned=1; federated=1 ;;
    none|auto|always) dkind_m=svfsd; cache_m=$mode ;;
    virtiofsd) dkind_m=virtiofsd; cache_m=auto ;;
  esac
  mkdir -p /var/tmp/svfs-two-vm
  work=$(mktemp -d /var/tmp/svfs-two-vm/"$mode".XXXXXX)
  local share=$work/share
  mkdir -p "$share"
  # Federated: the volume on a private tmpfs, so that only this run's changes are published (its
  # host filesystem's other writers would be, as on a real volume's filesystem).
  if [ "$federated" = 1 ]; then
    mount -t tmpfs -o size=1g svfs-two-vm "$share" || { say "$mode: cannot mount a tmpfs on $share"; return 1; }
    share_mount=$share
  fi
  mkdir -p "$share/tree"
  # The cost run's tree and the coherence run's old state, made before boot.
  local i statcmd="twovm_statpass tree $dirs 100"
  if [ -n "$tree_src" ]; then
    cp -a "$tree_src/." "$share/tree/" || return 1
    (cd "$share" && find tree -type f | LC_ALL=C sort) >"$work/files.list"
    statcmd="twovm_statlist /two-vm-files.list"
  else
    for ((i = 0; i < dirs; i++)); do
      mkdir "$share/tree/d$i"
      (cd "$share/tree/d$i" && touch f{0..99})
    done
  fi
  (cd "$share" && twovm_setup co && twovm_setup ho) ||
    { say "$mode: setup of the shared directory failed"; return 1; }
  sleep 1  # the changes below get a later ctime/mtime second than the old state

  # Each VM's versiond socket and table: one versiond for both, or (federated) one each.
  local -A vsock vtable
  vsock[A]=$work/versiond.sock vsock[B]=$work/versiond.sock
  local federation_url=
  if [ "$federated" = 1 ]; then
    # A port of the server's choosing (-p -1), read from its log: no race for a free one.
    nats-server -js -sd "$work/nats" -a 127.0.0.1 -p -1 >"$work/nats.log" 2>&1 &
    pids+=($!)
    local listening=
    for _ in $(seq 1 100); do
      listening=$(sed -n 's/.*Listening for client connections on \(127\.0\.0\.1:[0-9]*\).*/\1/p' "$work/nats.log")
      [ -n "$listening" ] && break
      sleep 0.1
    done
    [ -n "$listening" ] || { sed 's/^/  nats| /' "$work/nats.log"; say "$mode: nats-server did not start"; return 1; }
    federation_url=nats://$listening
    vsock[A]=$work/versiond-A.sock vsock[B]=$work/versiond-B.sock
  fi
  if [ "$cache_m" = shared ]; then
    table=svfs-two-vm-$$-$mode
    vtable[A]=$table vtable[B]=$table
    [ "$federated" = 1 ] && { table_b=$table-B; vtable[B]=$table_b; }
    local started=() vargs
    for vm in A B; do
      case " ${started[*]} " in *" ${vsock[$vm]} "*) continue ;; esac
      started+=("${vsock[$vm]}")
      vargs=(--socket "${vsock[$vm]}" --table "${vtable[$vm]}" --capacity 65536)
      if [ "$federated" = 1 ]; then
        vargs+=(--federation "$federation_url" --volume two-vm --volume-dir "$share")
        [ "$vm" = B ] && vargs+=(--host-changes none)
      fi
      "$versiond" "${vargs[@]}" >"$work/versiond-$vm.log" 2>&1 &
      pids+=($!)
      for _ in $(seq 1 100); do [ -S "${vsock[$vm]}" ] && [ -s "/dev/shm/${vtable[$vm]}" ] && break; sleep 0.1; done
      [ -S "${vsock[$vm]}" ] || { sed 's/^/  versiond| /' "$work/versiond-$vm.log"; say "$mode: svfs-versiond ($vm) did not start"; return 1; }
    done
  fi
  # Payload: the agent, the step library, the environment, and the patched modules if asked for.
  for vm in A B; do
    local pay=$work/payload-$vm
    mkdir -p "$pay"
    cp "$here/workloads/two-vm-agent.sh" "$pay/workload.sh"
    cp "$here/workloads/two-vm-ops.sh" "$pay/two-vm-ops.sh"
    printf 'export TWOVM_NAME=%s SVFS_DAEMON=%s SVFS_CACHE=%s\n' "$vm" "$dkind_m" "$cache_m" >"$pay/workload.env"
    if [ -n "$tree_src" ]; then cp "$work/files.list" "$pay/two-vm-files.list"; fi
    if [ "$use_kmod" = 1 ]; then stage_kmod "$pay" "${kmodv[$vm]}" || return 1; fi
    SVFS_GUEST_INITRD=${ginitrd[$vm]} guest_initrd "$pay" "$work/initrd-$vm" || return 1
    agent_open "$vm" "$work" || return 1
  done
  say "$mode: booting two guests ($dkind_m cache=$cache_m$([ "$use_kmod" = 1 ] && echo ", patched modules")$([ "$use_table" = 1 ] && echo ", table $table")${mountopts:+, -o $mountopts})..."

  # start_vm VM: its daemon and its QEMU.
  start_vm() {
    local vm=$1 sock=$work/vfs-$1.sock dcmd
    rm -f "$sock"
    dlog[$vm]=$work/daemon-$vm.log
    dkind[$vm]=$dkind_m
    if [ "$dkind_m" = svfsd ]; then
      dcmd=("$svfsd" --socket-path "$sock" --shared-dir "$share" --cache "$cache_m" --xattr)
      [ "$cache_m" = shared ] && dcmd+=(--versiond-socket "${vsock[$vm]}")
      [ -n "$daemon_log_level" ] && dcmd+=(--log-level "$daemon_log_level")
    else
      dcmd=("$virtiofsd" --socket-path="$sock" -o source="$share" -o cache="$cache_m" -o xattr -d)
    fi
    "${dcmd[@]}" >"${dlog[$vm]}" 2>&1 &
    dpid[$vm]=$!
    pids+=($!)
    for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done
    [ -S "$sock" ] || { sed 's/^/  daemon| /' "${dlog[$vm]}"; say "$mode: daemon $vm did not start"; return 1; }
    local tdev=()
    if [ "$use_table" = 1 ]; then
      tdev=(-object "memory-backend-file,id=vt,mem-path=/dev/shm/${vtable[$vm]},size=$(stat -c %s "/dev/shm/${vtable[$vm]}"),share=on,readonly=on"
        -device ivshmem-plain,memdev=vt)
    fi
    local cmdline="console=ttyS0 panic=-1 quiet loglevel=4 svfs.tag=svfs"
    [ -n "$mountopts" ] && cmdline+=" svfs.mountopts=$mountopts"
    [ "$use_kmod" = 1 ] && [ -n "$(kmod_cmdline "${kmodv[$vm]}")" ] && cmdline+=" $(kmod_cmdline "${kmodv[$vm]}")"
    guest_qemu_start "$vm" "$work" "${gkernel[$vm]}" "$work/initrd-$vm" "$cmdline" \
      -chardev socket,id=vfs,path="$sock" -device vhost-user-fs-pci,chardev=vfs,tag=svfs "${tdev[@]}"
    qpid[$vm]=${agent_qemu[$vm]}
    agent_daemon_log[$vm]=${dlog[$vm]}
    pids+=("${qpid[$vm]}")
  }
  # One guest at a time (less CPU contention while it mounts). Before patch 0004 waited for
  # the INIT reply, a request prepared before it lacked the version trailer's buffer (svfsd:
  # "does not fit the guest's ... buffer", EIO in the guest): boot that guest again, and let
  # --check fail on it.
  local t0=$SECONDS attempt
  for vm in A B; do
    for attempt in 1 2 3; do
      start_vm "$vm" || return 1
      agent_wait_ready "$vm" && break
      tr -d '\r' <"$work/serial-$vm.log" | grep -v '^\[' | tail -n 8 | sed "s/^/  guest $vm| /"
      if [ "$attempt" -lt 3 ] && grep -q "does not fit the guest's" "${dlog[$vm]}"; then
        say "$mode: guest $vm hit the INIT/first-request race (a reply did not fit its buffer): booting it again"
        retries+=("$mode:$vm")
        kill "${qpid[$vm]}" "${dpid[$vm]}" 2>/dev/null
        wait "${qpid[$vm]}" "${dpid[$vm]}" 2>/dev/null
        mv "${dlog[$vm]}" "${dlog[$vm]}.attempt$attempt"
        mv "$work/serial-$vm.log" "$work/serial-$vm.log.attempt$attempt"
        continue
      fi
      say "$mode: guest $vm did not come up"; return 1
    done
  done
  say "$mode: both guests up after $((SECONDS - t0)) s"
  # The kernel each guest runs, from the guest itself (uname -r): shown in the result table.
  local -A ran
  for vm in A B; do
    ran[$vm]=$(gcmd "$vm" "uname -r") || { say "$mode: uname -r failed in guest $vm"; return 1; }
    say "$mode: guest $vm runs Linux ${ran[$vm]}"
    [ "${ran[$vm]}" = "${gkver[$vm]}" ] || { say "$mode: guest $vm runs ${ran[$vm]}, not ${gkver[$vm]}"; return 1; }
  done
  if [ "$use_kmod" = 1 ]; then
    for vm in A B; do gcmd "$vm" "dmesg | grep 'svfs:' | sed 's/^\[[ 0-9.]*\] //'" | sed "s/^/  guest $vm| /"; done
  fi

  # Coherence run: A's changes in co/, then the host's in ho/, B observing.
  coh_stale=0 coh_checks=0 coh_same=0 coh_list=
  local who dir
  for who in A host; do
    dir=co; [ "$who" = host ] && dir=ho
    coherence_run "$share" "$settle" "$cmd_timeout" "$who" "$dir" B 2>&1 || { say "$mode: coherence run failed"; return 1; }
  done
  local stale=$coh_stale checks=$coh_checks same=$coh_same stale_list=$coh_list
  say "$mode: coherence: $stale stale of $checks checks ($same items unchanged by their step)"
  if [ "$federated" = 1 ]; then
    # What reached B's table came through NATS: B's versiond counts the slots it bumped for A.
    local svfsctl remote
    svfsctl=$(dirname "$versiond")/svfsctl
    [ -x "$svfsctl" ] || svfsctl=$(command -v svfsctl) || { say "$mode: no svfsctl beside $versiond or on PATH"; return 1; }
    remote=$("$svfsctl" --socket "${vsock[B]}" --json federation |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["volumes"][0]["remote_bumps"])') ||
      { say "$mode: svfsctl federation on B's versiond failed"; return 1; }
    say "$mode: B's versiond bumped $remote slots for A's and the host's changes (svfsctl federation)"
    [ "$remote" -gt 0 ] || { say "$mode: FAIL: nothing reached B through federation"; stale=$((stale + 1)); }
  fi

  # Cost run.
  local p c0 c1 lk ga req23=0 times= out req1=
  c0=$(counters B)
  local warm_from=
  for ((p = 1; p <= passes; p++)); do
    [ "$p" = 2 ] && warm_from=$(wc -l <"${dlog[B]}")
    out=$(gcmd B "$statcmd") || { say "$mode: stat pass $p failed"; return 1; }
    c1=$(counters B)
    lk=$(($(echo "$c1" | cut -d' ' -f1) - $(echo "$c0" | cut -d' ' -f1)))
    ga=$(($(echo "$c1" | cut -d' ' -f2) - $(echo "$c0" | cut -d' ' -f2)))
    c0=$c1
    say "$mode: stat pass $p: $out LOOKUP=$lk GETATTR=$ga"
    case "$out" in *missing=0*) ;; *) say "$mode: files missing in pass $p"; return 1 ;; esac
    local s=${out##*secs=}
    times+="${times:+ / }$s"
    if [ "$p" = 1 ]; then req1=$((lk + ga)); else req23=$((req23 + lk + ga)); fi
  done
  # What B's daemon served in the warm passes, by parent node and by replied version (with
  # --daemon-log-level trace): the evidence when a check below fails.
  if [ -n "$warm_from" ]; then
    tail -n +"$((warm_from + 1))" "${dlog[B]}" |
      awk '/  lookup /{n[$NF]++} /  (attr|entry) node /{l=$0; sub(/^.*\] +/, "", l); v[l]++}
           END{for (k in n) print "lookups in node " k ": " n[k];
               for (k in v) print v[k] "x" k}' | sort | head -40 >"$work/warm-requests"
    [ -s "$work/warm-requests" ] && say "$mode: B's daemon in passes 2..$passes: $(tr '\n' ';' <"$work/warm-requests")"
  fi
  # Creating files: B makes $creates new ones (each a LOOKUP of a new name and a CREATE).
  local made
  made=$(gcmd B "twovm_createpass created-by-B $creates") || { say "$mode: create pass failed"; return 1; }
  say "$mode: create pass: $made"
  case "$made" in "created=$creates "*) ;; *) say "$mode: not every file was created"; return 1 ;; esac
  local create_secs=${made##*secs=}
  for vm in A B; do gcmd "$vm" quit >/dev/null; done
  for vm in A B; do
    for _ in $(seq 1 100); do kill -0 "${qpid[$vm]}" 2>/dev/null || break; sleep 0.2; done
  done
  # Negotiation as the mode expects (from the daemons' logs).
  local neg=ok
  for vm in A B; do
    if [ "$versioned" = 1 ]; then
      grep -q 'shared versions negotiated' "${dlog[$vm]}" || neg="NOT negotiated ($vm)"
    elif [ "$cache_m" = shared ]; then
      grep -q 'not negotiated: serving as cache=none' "${dlog[$vm]}" || neg="no 'served as none' line ($vm)"
    fi
  done
  [ "$neg" = ok ] || say "$mode: FAIL negotiation: $neg"
  local note= guest=stock
  [ "$dkind_m" = virtiofsd ] && note="*"
  [ "$use_kmod" = 1 ] && guest="patched${mountopts:+, -o $mountopts}"
  row=$(printf '| %-12s | %-37s | %-20s | %-22s | %7s / %-6s | %-14s | %-24s | %-10s |' "$mode" \
    "${ran[A]} / ${ran[B]}" "$dkind_m cache=$cache_m" "$guest" "$stale" "$checks" "$req23$note" \
    "$times" "$create_secs")
  echo "$row" >"$work/row"
  echo "$mode $stale $checks $req23 $req1 $versioned $neg${stale_list:+ stale:$stale_list}" >"$work/summary"
  return 0
}

rows=()
retries=()
for m in "${mode_list[@]}"; do
  start=$SECONDS
  if run_mode "$m"; then
    rows+=("$(cat "$work/row")")
    read -r _ st ch rq r1 versioned ng rest <"$work/summary"
    say "$m: done in $((SECONDS - start)) s"
    if [ "$check" = 1 ]; then
      [ "$st" = 0 ] || { say "CHECK FAIL $m: $st stale result(s)"; overall=1; }
      [ "$ng" = ok ] || { say "CHECK FAIL $m: negotiation"; overall=1; }
      if [ "$versioned" = 1 ] && [ "$rq" -ge $((files * (passes - 1) / 20)) ]; then
        say "CHECK FAIL $m: passes 2..$passes sent $rq LOOKUP+GETATTR for $files files"; overall=1
        [ -s "$work/warm-requests" ] && sed "s/^/  B's daemon, warm passes| /" "$work/warm-requests"
      fi
    fi
  else
    rows+=("$(printf '| %-13s | %s |' "$m" "FAILED to run")")
    overall=1
  fi
  cleanup_mode
done

table_txt=$(
  echo "Two VMs, one shared directory (TCG guests, kernels A ${gkver[A]} and B ${gkver[B]}, $files-file tree, $passes stat passes):"
  echo
  printf '| %-12s | %-37s | %-20s | %-22s | %-16s | %-14s | %-24s | %-10s |\n' mode \
    "kernel A / B (uname -r)" daemon "guest modules" \
    "stale / checks" "LOOKUP+GETATTR" "B's time per pass (s)" "B creates $creates (s)"
  printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' -------------- --------------------------------------- \
    ---------------------- ------------------------ \
    ------------------ ---------------- -------------------------- ------------
  printf '%s\n' "${rows[@]}"
  echo
  echo "stale / checks: B's view after A's or the host's change differs from the host directory."
  echo "Each item (stat fields, listing, content, link target, xattr) a step changed is one check."
  echo "LOOKUP+GETATTR: served by B's daemon in stat passes 2..$passes ($files files per pass)."
  case ",$modes," in *,virtiofsd,*) echo "*: counted from the C virtiofsd's -d log." ;; esac
)
echo
echo "$table_txt"
[ -n "$table_out" ] && echo "$table_txt" >"$table_out"
if [ "${#retries[@]}" != 0 ]; then
  # Fixed in patch 0004 (requests wait for the INIT reply before choosing their buffers): a
  # retry now means the fix regressed.
  say "guests booted again after the INIT race: ${retries[*]}"
  [ "$check" = 1 ] && overall=1
fi
[ "$overall" = 0 ] && say "PASS" || say "FAIL"
exit "$overall"
