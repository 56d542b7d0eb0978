#!/usr/bin/env bash
# svfs-bench: metadata-heavy workloads in real guests, across cache modes, daemons and numbers of
# VMs sharing one host directory, with the coherence checks alongside.
#
# For each configuration (daemon, mode, N VMs): a fresh shared directory under --out holding a
# tree of --files empty files (100 a directory) and the coherence steps' old state; the daemons
# (one per VM; versiond and the patched guest modules for shared); N TCG guests (the image of
# scripts/guest-image.sh) driven through their command agents (tests/e2e/lib.sh), never through
# the directory under test. Then:
#   coherence  the steps of tests/e2e/workloads/two-vm-ops.sh: with N >= 2 made by the last VM and
#              observed by the others, then made on the host and observed by every VM; with N = 1
#              made on the host. A check is stale when a guest still sees the old state.
#   Workloads on the first VM (tests/e2e/workloads/bench-ops.sh), each timed in the guest, with
#   the requests its daemon served (svfsd: its counters; the C virtiofsd: its -d log; 9p: none):
#   untar      unpack a tar of this source tree (git archive HEAD) into the share, then sync
#   walk       find over the host-made tree, the guest's caches dropped first
#   stat-cold  stat every file of the host-made tree by path, caches dropped first
#   stat-warm  the same again
#   status     stat (name, size, mtime) every file of the unpacked tree, after every tenth file was
#              changed elsewhere (by the last VM, or by the host when N = 1): "git status" after a
#              pull in another pod. A changed file the first VM does not see is stale.
#   churn      create and unlink 500 files
#   build      twice: stat every source against a stamp, read every source, write an object per
#              tenth source
#
# Daemons and the modes each has (other combinations are skipped):
#   svfsd      none, metadata, auto, always, shared, dax (cache=auto with a --dax-window 64M
#              window, the guest mounted -o dax, in the DAX-capable QEMU tests/e2e/qemu-dax/build.sh
#              builds: about 4 minutes on 2 cores the first time, then cached)
#   virtiofsd  none, auto, always (QEMU's C virtiofsd, /usr/lib/qemu/virtiofsd; run with -d to
#              count requests, which slows it a little; without it these are skipped, saying so)
#   9p         none (cache=none), always (cache=loose): QEMU's virtio-9p, local, passthrough
#
# Usage: tests/bench/svfs-bench.sh [options]
#   --configs LIST    exactly these configurations, DAEMON:MODE:VMS each (e.g. svfsd:shared:2,9p:none:1)
#   --quick           2 VMs, a 500-file tree, svfsd none/always/shared/dax, virtiofsd always,
#                     9p always (a few minutes on 2 cores, plus the DAX QEMU's first build)
#   --daemons LIST    svfsd,virtiofsd,9p (default: all)
#   --modes LIST      none,metadata,auto,always,shared,dax (default: all)
#   --vms LIST        numbers of VMs (default 1,2,4)
#   --files N         the host-made tree, a multiple of 100 (default 2000)
#   --workloads LIST  untar,walk,stat-cold,stat-warm,status,churn,build (default: all)
#   --kernel 6.1|6.12 the guest kernel (default 6.12)
#   --out DIR         results.csv, results.md and the plots (default /var/tmp/svfs-bench/<time>)
#   --check           exit 1 if svfsd in none or shared mode has a stale check
#   --timeout S       per guest command (default 900)   --keep   keep each configuration's files
#   --svfsd PATH  --versiond PATH  --virtiofsd PATH
# Exit status: 0 done (and --check passed), 1 failure, 77 skipped (not root, no QEMU), 2 usage.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
e2e=$repo/tests/e2e
# shellcheck source=../e2e/lib.sh
. "$e2e/lib.sh"
svfsd=${SVFSD:-$repo/build/daemon/svfsd}
versiond=${SVFS_VERSIOND:-$repo/build/versiond/svfs-versiond}
virtiofsd=/usr/lib/qemu/virtiofsd
daemons=svfsd,virtiofsd,9p
modes=none,metadata,auto,always,shared,dax
dax_window=64M
vms_list=1,2,4
files=2000
workloads=untar,walk,stat-cold,stat-warm,status,churn,build
kernel=6.12
out=
check=0
cmd_timeout=900
keep=0
quick=0
settle=0.5
churn_files=500
config_list=

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1; shift ;;
    --configs) config_list=$2; shift 2 ;;
    --daemons) daemons=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --vms) vms_list=$2; shift 2 ;;
    --files) files=$2; shift 2 ;;
    --workloads) workloads=$2; shift 2 ;;
    --kernel) kernel=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --check) check=1; shift ;;
    --timeout) cmd_timeout=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --svfsd) svfsd=$2; shift 2 ;;
    --versiond) versiond=$2; shift 2 ;;
    --virtiofsd) virtiofsd=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "svfs-bench: unknown argument $1" >&2; usage ;;
  esac
done
say() { echo "svfs-bench: $*"; }
skip() { say "SKIP: $*"; exit 77; }
die() { say "FAIL: $*"; exit 1; }

# The configurations: "daemon mode vms", in the order they run.
configs=()
if [ "$quick" = 1 ]; then
  vms_list=2 files=500
  config_list=svfsd:none:2,svfsd:always:2,svfsd:shared:2,svfsd:dax:2,virtiofsd:always:2,9p:always:2
fi
if [ -n "$config_list" ]; then
  IFS=, read -ra cl <<<"$config_list"
  for c in "${cl[@]}"; do
    case "$c" in
      svfsd:none:[1-9]|svfsd:metadata:[1-9]|svfsd:auto:[1-9]|svfsd:always:[1-9]|svfsd:shared:[1-9]) ;;
      svfsd:dax:[1-9]) ;;
      virtiofsd:none:[1-9]|virtiofsd:auto:[1-9]|virtiofsd:always:[1-9]|9p:none:[1-9]|9p:always:[1-9]) ;;
      *) echo "svfs-bench: --configs $c: DAEMON:MODE:VMS with a mode that daemon has (see --help)" >&2; exit 2 ;;
    esac
    configs+=("${c//:/ }")
  done
else
  IFS=, read -ra dl <<<"$daemons"
  IFS=, read -ra ml <<<"$modes"
  IFS=, read -ra nl <<<"$vms_list"
  for n in "${nl[@]}"; do
    [[ "$n" =~ ^[1-9]$ ]] || { echo "svfs-bench: --vms $n: a number of VMs, 1 to 9" >&2; exit 2; }
    for d in "${dl[@]}"; do
      case "$d" in svfsd|virtiofsd|9p) ;; *) echo "svfs-bench: --daemons $d: svfsd, virtiofsd or 9p" >&2; exit 2 ;; esac
      for m in "${ml[@]}"; do
        case "$d:$m" in
          svfsd:none|svfsd:metadata|svfsd:auto|svfsd:always|svfsd:shared|svfsd:dax) ;;
          virtiofsd:none|virtiofsd:auto|virtiofsd:always|9p:none|9p:always) ;;
          *:none|*:metadata|*:auto|*:always|*:shared|*:dax) continue ;;  # the daemon has no such mode
          *) echo "svfs-bench: --modes $m: none, metadata, auto, always, shared or dax" >&2; exit 2 ;;
        esac
        configs+=("$d $m $n")
      done
    done
  done
fi
[ "${#configs[@]}" -gt 0 ] || { echo "svfs-bench: no daemon has any of the modes $modes" >&2; exit 2; }
[ $((files % 100)) = 0 ] && [ "$files" -gt 0 ] || { echo "svfs-bench: --files must be a multiple of 100" >&2; exit 2; }
IFS=, read -ra wl <<<"$workloads"
for w in "${wl[@]}"; do
  case "$w" in untar|walk|stat-cold|stat-warm|status|churn|build) ;;
    *) echo "svfs-bench: --workloads $w: untar, walk, stat-cold, stat-warm, status, churn or build" >&2; exit 2 ;;
  esac
done
# status and build work on the unpacked tree.
case ",$workloads," in *,status,*|*,build,*) case ",$workloads," in *,untar,*) ;; *) wl=(untar "${wl[@]}") ;; esac ;; esac

[ "$(id -u)" -eq 0 ] || skip "needs root (vhost-user daemons, the guests' images, chown)"
command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 missing (apt-get install qemu-system-x86)"
command -v setfattr >/dev/null || skip "setfattr/getfattr missing (apt-get install attr)"
need_kmod=0
need_dax=0
kept=()
for c in "${configs[@]}"; do
  read -r d m _ <<<"$c"
  case "$d" in
    svfsd) [ -x "$svfsd" ] || die "--svfsd $svfsd: not found (build it: scripts/build.sh)"
      if [ "$m" = shared ]; then
        need_kmod=1
        [ -x "$versiond" ] || die "--versiond $versiond: not found (build it: scripts/build.sh)"
      fi
      [ "$m" = dax ] && need_dax=1 ;;
    virtiofsd)
      if [ ! -x "$virtiofsd" ]; then
        # Asked for by name: an error; part of a matrix: left out, saying so.
        [ -z "$config_list" ] || [ "$quick" = 1 ] ||
          die "--virtiofsd $virtiofsd: not found (apt-get install qemu-system-common)"
        say "no $virtiofsd (apt-get install qemu-system-common): virtiofsd cache=$m left out"
        continue
      fi ;;
  esac
  kept+=("$c")
done
configs=("${kept[@]}")
[ "${#configs[@]}" -gt 0 ] || die "nothing left to run"
. "$e2e/workloads/two-vm-ops.sh"
. "$e2e/workloads/bench-ops.sh"

image_vars=$("$repo/scripts/guest-image.sh" --kernel "$kernel") || die "scripts/guest-image.sh --kernel $kernel failed"
eval "$image_vars"
kmod=
if [ "$need_kmod" = 1 ]; then
  say "patched guest modules for $SVFS_GUEST_KVER (guest-kmod-patches/build.sh, cached)..."
  kvars=$("$repo/guest-kmod-patches/build.sh" --kver "$SVFS_GUEST_KVER") || die "guest-kmod-patches/build.sh --kver $SVFS_GUEST_KVER failed"
  eval "$kvars"
  kmod=$SVFS_KMOD_DIR
fi
qemu_dax_bin=
if [ "$need_dax" = 1 ]; then
  say "the DAX-capable QEMU (tests/e2e/qemu-dax/build.sh: cached, or about 4 minutes to build)..."
  qemu_dax_bin=$(qemu_dax) || die "tests/e2e/qemu-dax/build.sh failed (needed by svfsd cache=dax)"
fi
[ -n "$out" ] || out=/var/tmp/svfs-bench/$(date +%Y%m%d-%H%M%S)
mkdir -p "$out" || die "--out $out: cannot create it"
out=$(cd "$out" && pwd)
csv=$out/results.csv
echo "daemon,mode,vms,workload,secs,requests,files,requests_per_file,stale,checks" >"$csv"
# The untar workload's tree: this checkout's files at HEAD (or the working tree without git).
src_tar=$out/src.tar
if ! git -C "$repo" archive --format=tar -o "$src_tar" HEAD 2>/dev/null; then
  tar -C "$repo" --exclude=./build --exclude=./.git -cf "$src_tar" .
fi
say "${#configs[@]} configurations, kernel $SVFS_GUEST_KVER, $files-file tree, workloads ${wl[*]}; results in $out"

# State of the configuration being run; cleanup_config stops whatever is left.
work=
pids=()
table=
declare -A dpid dlog
cleanup_config() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do stop_pid "$p"; done
  pids=()
  agent_close_all
  [ -n "$table" ] && rm -f "/dev/shm/$table"
  table=
  if [ -n "$work" ] && [ "$keep" = 0 ]; then rm -rf "$work"; fi
  work=
}
trap cleanup_config EXIT
trap 'exit 130' INT TERM

gcmd() { agent_cmd "$1" "$cmd_timeout" "${@:2}"; }

# requests VM: what VM's daemon has served so far (empty for 9p: QEMU serves it and counts nothing).
requests() {
  local vm=$1
  case "$cur_daemon" in
    9p) echo "" ;;
    virtiofsd) grep -c 'opcode: ' "${dlog[$vm]}" ;;
    svfsd)
      svfsd_dump_counters "${dpid[$vm]}" "${dlog[$vm]}"
      awk '$1=="total"{t=$2} END{print t+0}' "${dlog[$vm]}" ;;
  esac
}

# row WORKLOAD SECS REQUESTS FILES STALE CHECKS: one line of results.csv.
row() {
  local rpf=
  [ -n "$3" ] && [ -n "$4" ] && [ "$4" -gt 0 ] && rpf=$(awk -v r="$3" -v f="$4" 'BEGIN{printf "%.2f", r / f}')
  echo "$cur_daemon,$cur_mode,$cur_vms,$1,$2,$3,$4,$rpf,$5,$6" >>"$csv"
}

# field OUTPUT KEY: the value of KEY=VALUE in a workload's output.
field() { printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n1; }

# workload VM NAME COMMAND: runs a timed workload in VM, adds its row, says how it went.
workload() {
  local vm=$1 name=$2 r0 r1 res secs n req=
  r0=$(requests "$vm")
  res=$(gcmd "$vm" "$3") || { say "  $name failed in $vm: $res"; return 1; }
  r1=$(requests "$vm")
  [ -n "$r0" ] && req=$((r1 - r0))
  secs=$(field "$res" secs)
  n=$(field "$res" files); [ -n "$n" ] || n=$(field "$res" entries)
  if [ -n "$(field "$res" missing)" ] && [ "$(field "$res" missing)" != 0 ]; then
    say "  $name: $(field "$res" missing) files missing in $vm"; return 1
  fi
  row "$name" "$secs" "$req" "$n" "" ""
  say "  $name: $res${req:+ requests=$req}"
}

# cold VM: VM drops its caches; a second later (its FORGETs served) a cold workload can start.
cold() { gcmd "$1" bench_drop >/dev/null && sleep 1; }

# run_config DAEMON MODE N
failed=()
strict_stale=0
run_config() {
  cur_daemon=$1 cur_mode=$2 cur_vms=$3
  local n=$3 i vm share vsock=
  mkdir -p "$out/work"
  work=$(mktemp -d "$out/work/$1-$2-$3vm.XXXXXX")
  share=$work/share
  mkdir -p "$share/t"
  for ((i = 0; i < files / 100; i++)); do mkdir "$share/t/d$i" && (cd "$share/t/d$i" && touch f{0..99}); done
  (cd "$share" && find t -type f | LC_ALL=C sort) >"$work/files.list"
  (cd "$share" && twovm_setup co && twovm_setup ho) || { say "  setup of the shared directory failed"; return 1; }
  sleep 1  # the changes below get a later ctime/mtime second than the old state
  if [ "$2" = shared ]; then
    vsock=$work/versiond.sock
    table=svfs-bench-$$-$n
    "$versiond" --socket "$vsock" --table "$table" --capacity 65536 >"$work/versiond.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do [ -S "$vsock" ] && [ -s "/dev/shm/$table" ] && break; sleep 0.1; done
    [ -S "$vsock" ] || { sed 's/^/  versiond| /' "$work/versiond.log"; say "  svfs-versiond did not start"; return 1; }
  fi
  local cmdline_base="console=ttyS0 panic=-1 quiet loglevel=4 svfs.tag=svfs"
  local t0=$SECONDS
  for ((i = 1; i <= n; i++)); do
    vm=vm$i
    local pay=$work/payload-$vm
    mkdir -p "$pay"
    cp "$e2e/workloads/two-vm-agent.sh" "$pay/workload.sh"
    cp "$e2e/workloads/two-vm-ops.sh" "$e2e/workloads/bench-ops.sh" "$pay/"
    cp "$work/files.list" "$pay/bench-files.list"
    cp "$src_tar" "$pay/src.tar"
    printf 'export TWOVM_NAME=%s\n' "$vm" >"$pay/workload.env"
    local cmdline=$cmdline_base dev=() qemu_bin=${SVFS_QEMU:-qemu-system-x86_64}
    if [ "$2" = shared ]; then
      stage_kmod "$pay" "$kmod" || return 1
      [ -n "$(kmod_cmdline "$kmod")" ] && cmdline+=" $(kmod_cmdline "$kmod")"
      dev+=(-object "memory-backend-file,id=vt,mem-path=/dev/shm/$table,size=$(stat -c %s "/dev/shm/$table"),share=on,readonly=on"
        -device ivshmem-plain,memdev=vt)
    fi
    SVFS_GUEST_INITRD=$SVFS_GUEST_INITRD guest_initrd "$pay" "$work/initrd-$vm" || return 1
    agent_open "$vm" "$work" || return 1
    dlog[$vm]=$work/daemon-$vm.log
    local sock=$work/vfs-$vm.sock dcmd=()
    case "$1" in
      svfsd) local svfsd_cache=$2
        [ "$2" = dax ] && svfsd_cache=auto
        dcmd=("$svfsd" --socket-path "$sock" --shared-dir "$share" --cache "$svfsd_cache" --xattr)
        [ "$2" = shared ] && dcmd+=(--versiond-socket "$vsock")
        if [ "$2" = dax ]; then
          dcmd+=(--dax-window-size "$dax_window")
          qemu_bin=$qemu_dax_bin
          cmdline+=" svfs.mountopts=dax"
        fi ;;
      virtiofsd) dcmd=("$virtiofsd" --socket-path="$sock" -o source="$share" -o cache="$2" -o xattr -d) ;;
    esac
    if [ "${#dcmd[@]}" -gt 0 ]; then
      "${dcmd[@]}" >"${dlog[$vm]}" 2>&1 &
      dpid[$vm]=$!
      pids+=($!)
      for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done
      [ -S "$sock" ] || { sed 's/^/  daemon| /' "${dlog[$vm]}"; say "  daemon of $vm did not start"; return 1; }
      local window=
      [ "$2" = dax ] && window=,cache-size=$dax_window
      dev+=(-chardev socket,id=vfs,path="$sock" -device vhost-user-fs-pci,chardev=vfs,tag=svfs$window)
      agent_daemon_log[$vm]=${dlog[$vm]}
    else
      : >"${dlog[$vm]}"
      dev+=(-fsdev local,id=fs9,path="$share",security_model=passthrough
        -device virtio-9p-pci,fsdev=fs9,mount_tag=svfs)
      cmdline+=" svfs.fstype=9p"
      [ "$2" = always ] && cmdline+=" svfs.mountopts=cache=loose"
    fi
    SVFS_QEMU=$qemu_bin guest_qemu_start "$vm" "$work" "$SVFS_GUEST_KERNEL" "$work/initrd-$vm" "$cmdline" "${dev[@]}"
    pids+=("${agent_qemu[$vm]}")
    # One guest at a time: less CPU contention while each boots and mounts.
    agent_wait_ready "$vm" ||
      { tr -d '\r' <"$work/serial-$vm.log" | grep -v '^\[' | tail -n 8 | sed "s/^/  $vm| /"; say "  $vm did not come up"; return 1; }
  done
  say "  $n guest(s) up after $((SECONDS - t0)) s"

  # Coherence, before the workloads (their trees are not involved).
  coh_stale=0 coh_checks=0 coh_same=0 coh_list=
  local observers=()
  for ((i = 1; i < n; i++)); do observers+=("vm$i"); done
  local stale_file=$out/stale-$1-$2-${n}vm.txt
  if [ "$n" -ge 2 ]; then
    coherence_run "$share" "$settle" "$cmd_timeout" "vm$n" co "${observers[@]}" >"$stale_file" ||
      { say "  coherence run failed"; return 1; }
  fi
  coherence_run "$share" "$settle" "$cmd_timeout" host ho "${observers[@]}" "vm$n" >>"$stale_file" ||
    { say "  coherence run failed"; return 1; }
  row coherence "" "" "" "$coh_stale" "$coh_checks"
  if [ "$coh_stale" = 0 ]; then
    rm -f "$stale_file"
    say "  coherence: 0 stale of $coh_checks checks"
  else
    say "  coherence: $coh_stale stale of $coh_checks checks (each in $stale_file)"
  fi
  if [ "$coh_stale" -gt 0 ] && [ "$1" = svfsd ] && { [ "$2" = none ] || [ "$2" = shared ]; }; then strict_stale=1; fi

  local w res changer=host touched changed
  [ "$n" -ge 2 ] && changer=vm$n
  for w in "${wl[@]}"; do
    case "$w" in
      untar) workload vm1 untar "bench_untar /src.tar u" || return 1 ;;
      walk) cold vm1 && workload vm1 walk "bench_walk t" || return 1 ;;
      stat-cold) cold vm1 && workload vm1 stat-cold "bench_stat /bench-files.list" || return 1 ;;
      stat-warm) workload vm1 stat-warm "bench_stat /bench-files.list" || return 1 ;;
      churn) workload vm1 churn "bench_churn c $churn_files" || return 1 ;;
      build) workload vm1 build "bench_build u o" || return 1 ;;
      status)
        # vm1 has the tree cached (it unpacked it); the change is made elsewhere.
        gcmd vm1 "bench_status u /tmp/status.0" >/dev/null || { say "  status failed in vm1"; return 1; }
        if [ "$changer" = host ]; then
          res=$(cd "$share" && bench_touch u 10)
          sleep "$settle"
        else
          res=$(gcmd "$changer" "bench_touch u 10") || { say "  status: the change in $changer failed"; return 1; }
        fi
        touched=$(field "$res" touched)
        workload vm1 status "bench_status u /tmp/status.1" || return 1
        changed=$(field "$(gcmd vm1 "bench_changed /tmp/status.0 /tmp/status.1")" changed)
        # The status row's stale/checks: changed files the first VM did not see.
        sed -i '$ s/,,$/,'"$((touched - changed)),$touched"'/' "$csv"
        say "  status: $changer changed $touched files, vm1 saw $changed"
        [ "$touched" -gt "$changed" ] && [ "$1" = svfsd ] && { [ "$2" = none ] || [ "$2" = shared ]; } && strict_stale=1
        ;;
    esac
  done
  if [ "$2" = dax ]; then
    svfsd_dump_counters "${dpid[vm1]}" "${dlog[vm1]}"
    local maps
    maps=$(svfsd_count "${dlog[vm1]}" SETUPMAPPING)
    say "  dax: vm1 mapped $maps ranges of files into its window"
    [ "$maps" -gt 0 ] || { say "  dax: no SETUPMAPPING: vm1 read nothing through the window"; return 1; }
  fi
  for ((i = 1; i <= n; i++)); do gcmd "vm$i" quit >/dev/null; done
  for ((i = 1; i <= n; i++)); do
    for _ in $(seq 1 100); do kill -0 "${agent_qemu[vm$i]}" 2>/dev/null || break; sleep 0.2; done
  done
  return 0
}

started=$SECONDS
k=0
for c in "${configs[@]}"; do
  k=$((k + 1))
  read -r d m n <<<"$c"
  say "[$k/${#configs[@]}] $d cache=$m, $n VM(s) ($((SECONDS - started)) s so far)"
  run_config "$d" "$m" "$n" || failed+=("$d/$m/$n")
  cleanup_config
done
say "done in $((SECONDS - started)) s"
report=("$here/svfs-bench-report.py" "$csv" "$out")
if /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then /usr/bin/python3 "${report[@]}"; else python3 "${report[@]}"; fi ||
  say "the report failed (results.csv is complete)"
[ -r "$out/results.md" ] && cat "$out/results.md"
[ "${#failed[@]}" -eq 0 ] || die "configurations that did not finish: ${failed[*]}"
[ "$check" = 1 ] && [ "$strict_stale" = 1 ] && die "svfsd none or shared had stale checks (see above)"
exit 0
