# Shell pieces run-guest.sh and two-vm.sh share (sourced, bash).

# stop_pid PID [TENTHS]: SIGTERM, up to TENTHS tenths of a second (default 30) to exit, then
# SIGKILL; reaps it if it is our child.
stop_pid() {
  local pid=$1 tenths=${2:-30}
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null
  for _ in $(seq 1 "$tenths"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 0
}

# qemu_dax: the path of the DAX-capable QEMU (tests/e2e/qemu-dax/build.sh: cached, or built,
# about 4 minutes on 2 cores; its progress on stderr).
qemu_dax() {
  local vars
  vars=$("$(dirname "${BASH_SOURCE[0]}")/qemu-dax/build.sh") || return 1
  echo "${vars#SVFS_QEMU_DAX=}"
}

# svfsd_count LOG OPCODE: OPCODE's requests in the last counter table svfsd wrote to LOG
# (SIGUSR1, or its exit); 0 if none.
svfsd_count() { awk -v op="$2" '$1 == op { n = $2 } END { print n + 0 }' "$1"; }

# kmod_modules KMOD_DIR: the modules of a guest-kmod-patches/build.sh directory, in load order
# (DIR/modules; fuse.ko virtiofs.ko for a directory without it).
kmod_modules() {
  if [ -r "$1/modules" ]; then cat "$1/modules"; else printf '%s\n' fuse.ko virtiofs.ko; fi
}

# stage_kmod PAYLOAD_DIR KMOD_DIR: the guest's /init loads /kmod/NAME.ko instead of the image's
# module of that name, and then the ones the image lacks (/kmod/modules order).
stage_kmod() {
  local m
  mkdir -p "$1/kmod" || return 1
  kmod_modules "$2" >"$1/kmod/modules" || return 1
  for m in $(cat "$1/kmod/modules"); do cp "$2/$m" "$1/kmod/" || return 1; done
}

# kmod_cmdline KMOD_DIR: kernel parameters the modules need (6.12: skip the built-in fuse).
kmod_cmdline() {
  [ -r "$1/cmdline" ] && cat "$1/cmdline"
  return 0
}

# guest_initrd PAYLOAD_DIR OUT: OUT = everything under PAYLOAD_DIR as an uncompressed cpio archive,
# then the cached gzip initramfs of scripts/guest-image.sh ($SVFS_GUEST_INITRD). The kernel
# unpacks concatenated archives in order, but cannot find the start of one that follows gzip data.
guest_initrd() {
  (cd "$1" && find . -mindepth 1 | sed 's|^\./||' | cpio -o -H newc -R 0:0 --quiet) >"$2.cpio" &&
    cat "$2.cpio" "$SVFS_GUEST_INITRD" >"$2"
}

# tcg_args VCPUS: QEMU's TCG options for a guest of VCPUS vCPUs. QEMU 7.2 (Debian 12) leaves a
# guest's memory barriers and atomics out of the translated code unless the machine may have more
# than one vCPU (no CF_PARALLEL; upstream emits them since 8.1, "tcg: Do not elide memory barriers
# for !CF_PARALLEL in system mode"). Against a vhost-user backend, which runs in parallel in
# another process, the driver's store of the avail index can then pass its load of avail_event,
# while the backend stores avail_event and reads the old index: neither kicks nor polls, and the
# request waits forever (seen as a hung umount, its FORGETs never taken). Multi-threaded TCG with
# room for a second vCPU keeps the barriers; the guest still runs VCPUS.
tcg_args() {
  local vcpus=$1
  echo "-accel tcg,thread=multi -smp $vcpus,maxcpus=$((vcpus < 2 ? 2 : vcpus))"
}

# Guest command agents (workloads/two-vm-agent.sh on a guest's second serial port, a QEMU pipe
# chardev): the harness drives guests through them, never through the directory under test.
# The caller names each VM (any word) and fills, per VM, agent_qemu (QEMU's pid), agent_serial
# (its console log) and agent_daemon_log (its daemon's log, if any) for the diagnostics.
declare -A agent_wfd agent_rfd agent_qemu agent_serial agent_daemon_log
agent_seq=0

# agent_open VM DIR: makes the pipes DIR/ctl-VM.in and DIR/ctl-VM.out (QEMU's
# "-chardev pipe,path=DIR/ctl-VM") and opens both read-write: never blocks, never sees EOF.
agent_open() {
  local vm=$1 dir=$2 wfd rfd
  mkfifo "$dir/ctl-$vm.in" "$dir/ctl-$vm.out" || return 1
  exec {wfd}<>"$dir/ctl-$vm.in" {rfd}<>"$dir/ctl-$vm.out"
  agent_wfd[$vm]=$wfd
  agent_rfd[$vm]=$rfd
}

# agent_close_all: closes every agent's pipes.
agent_close_all() {
  local vm
  for vm in "${!agent_wfd[@]}"; do
    exec {agent_wfd[$vm]}>&- {agent_rfd[$vm]}<&-
  done
  agent_wfd=()
  agent_rfd=()
}

# agent_wait_ready VM [TIMEOUT]: until VM's agent says READY (1: QEMU gone or TIMEOUT seconds,
# default 240, passed). Says every 20 s that it still waits.
agent_wait_ready() {
  local vm=$1 limit=${2:-240} line t0=$SECONDS
  while :; do
    if IFS= read -r -t 5 -u "${agent_rfd[$vm]}" line && [[ "$line" == READY* ]]; then return 0; fi
    if ! kill -0 "${agent_qemu[$vm]}" 2>/dev/null || [ $((SECONDS - t0)) -gt "$limit" ]; then return 1; fi
    [ $(((SECONDS - t0) % 20)) -lt 5 ] && echo "... waiting for guest $vm ($((SECONDS - t0)) s)" >&2
  done
}

# agent_cmd VM TIMEOUT COMMAND: runs COMMAND in VM's guest; its output (tabs back to newlines) on
# stdout, its exit status as the return value. No answer within TIMEOUT seconds (or QEMU gone):
# prints the guest's blocked tasks (the agent's watchdog dump) and the daemon's last lines, stops
# that QEMU and returns 255.
agent_cmd() {
  local vm=$1 limit=$2 line waited=0 id
  shift 2
  agent_seq=$((agent_seq + 1))
  id=$agent_seq
  printf '%s %s\n' "$id" "$*" >&"${agent_wfd[$vm]}"
  while :; do
    if IFS= read -r -t 5 -u "${agent_rfd[$vm]}" line; then
      line=${line%$'\r'}
      case "$line" in
        "R $id "*)
          line=${line#"R $id "}
          local rc=${line%% *} out=${line#* }
          [ "$out" = "$rc" ] && out=
          printf '%s\n' "${out//$'\t'/$'\n'}"
          return "$rc" ;;
        *) continue ;;
      esac
    fi
    waited=$((waited + 5))
    if [ "$waited" -ge "$limit" ] || ! kill -0 "${agent_qemu[$vm]}" 2>/dev/null; then
      echo "guest $vm: no answer to '$*' (${waited}s; QEMU $(kill -0 "${agent_qemu[$vm]}" 2>/dev/null && echo running || echo gone))" >&2
      # The agent's watchdog printed the blocked tasks after 90 s: show from there (or the tail).
      local dump
      dump=$(tr -d '\r' <"${agent_serial[$vm]}" |
        awk '/still running after/{buf=""; on=1} on{buf=buf $0 "\n"} END{printf "%s", buf}' | head -c 20000)
      [ -n "$dump" ] || dump=$(tail -n 30 "${agent_serial[$vm]}" | tr -d '\r')
      printf '%s\n' "$dump" | sed "s/^/  guest $vm| /" >&2
      # The daemon says at disconnect what it left in the rings (chains not taken, calls owed).
      kill "${agent_qemu[$vm]}" 2>/dev/null; sleep 2
      [ -n "${agent_daemon_log[$vm]:-}" ] && tail -n 20 "${agent_daemon_log[$vm]}" | sed "s/^/  daemon $vm| /" >&2
      return 255
    fi
  done
}

# guest_qemu_start VM WORK KERNEL INITRD CMDLINE [QEMU ARGS...]: boots one guest in the
# background (TCG, 1 vCPU, q35, 512 MiB of memfd memory shared with vhost-user daemons; the
# devices are the extra QEMU ARGS). Its console goes to WORK/serial-VM.log, its agent is on the
# pipe WORK/ctl-VM (agent_open VM WORK first), QEMU's own messages to WORK/qemu-VM.log. Sets
# agent_qemu[VM] and agent_serial[VM]. QEMU is stopped after 30 minutes whatever happens.
guest_qemu_start() {
  local vm=$1 work=$2 kernel=$3 initrd=$4 cmdline=$5 accel
  shift 5
  read -r -a accel <<<"$(tcg_args 1)"
  timeout 1800 "${SVFS_QEMU:-qemu-system-x86_64}" "${accel[@]}" -machine q35 -m 512 \
    -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem \
    "$@" -kernel "$kernel" -initrd "$initrd" -append "$cmdline" \
    -nodefaults -display none -no-reboot -monitor none \
    -chardev file,id=ser,path="$work/serial-$vm.log" -serial chardev:ser \
    -chardev pipe,id=ctl,path="$work/ctl-$vm" -serial chardev:ctl >"$work/qemu-$vm.log" 2>&1 &
  agent_qemu[$vm]=$!
  agent_serial[$vm]=$work/serial-$vm.log
}

# coherence_run SHARE SETTLE TIMEOUT ACTOR DIR OBSERVER...: the coherence steps of
# workloads/two-vm-ops.sh (the caller sources it) in DIR of the shared directory SHARE (set up
# with twovm_setup). For each step every OBSERVER (a guest) looks at the step's items, so it has
# the old state cached; ACTOR (a guest, or "host" for a change made in SHARE directly, SETTLE
# seconds before the observers look again) makes the change; every OBSERVER looks again. Each
# item the step changed is one check per observer, stale when the observer's second look differs
# from SHARE's. Adds to coh_stale, coh_checks, coh_same (items a step left unchanged) and
# coh_list (" ACTOR:STEP:ITEM>OBSERVER" per stale one); prints a STALE line for each.
# Returns 1 if a step or an observation failed.
coh_stale=0 coh_checks=0 coh_same=0 coh_list=
coherence_run() {
  local share=$1 settle=$2 limit=$3 actor=$4 dir=$5 step items obs it v0 v1 vt truth
  shift 5
  local -A before after
  for step in $TWOVM_STEPS; do
    items=$(twovm_items "$step" "$dir")
    for obs in "$@"; do
      before[$obs]=$(agent_cmd "$obs" "$limit" "twovm_obs $items") ||
        { echo "guest $obs failed to observe $step" >&2; return 1; }
    done
    if [ "$actor" = host ]; then
      (cd "$share" && twovm_act "$step" "$dir") || { echo "the host failed to do $step" >&2; return 1; }
      sleep "$settle"
    else
      agent_cmd "$actor" "$limit" "twovm_act $step $dir" >/dev/null ||
        { echo "guest $actor failed to do $step" >&2; return 1; }
    fi
    for obs in "$@"; do
      after[$obs]=$(agent_cmd "$obs" "$limit" "twovm_obs $items") ||
        { echo "guest $obs failed to observe $step" >&2; return 1; }
    done
    # shellcheck disable=SC2086
    truth=$(cd "$share" && twovm_obs $items)
    for obs in "$@"; do
      for it in $items; do
        v0=$(printf '%s\n' "${before[$obs]}" | grep -F -m1 "$it=")
        v1=$(printf '%s\n' "${after[$obs]}" | grep -F -m1 "$it=")
        vt=$(printf '%s\n' "$truth" | grep -F -m1 "$it=")
        if [ "$v0" = "$vt" ]; then coh_same=$((coh_same + 1)); continue; fi  # unchanged: no check
        coh_checks=$((coh_checks + 1))
        if [ "$v1" != "$vt" ]; then
          coh_stale=$((coh_stale + 1))
          coh_list+=" $actor:$step:${it%%:*}>$obs"
          echo "  STALE ($actor $step) $obs sees '${v1#*=}', host has '${vt#*=}'"
        fi
      done
    done
  done
}

# svfsd_dump_counters PID LOG: makes svfsd PID print its request table (SIGUSR1) into its LOG and
# waits (up to 5 s) until the table's last line ("malformed") is there; the newest table is then
# the last one in LOG.
svfsd_dump_counters() {
  local n
  n=$(grep -c '^malformed ' "$2")
  kill -USR1 "$1" 2>/dev/null || return 1
  for _ in $(seq 1 50); do
    [ "$(grep -c '^malformed ' "$2")" -gt "$n" ] && return 0
    sleep 0.1
  done
  return 1
}
