# Steps and observations of the two-VM coherence run (tests/e2e/two-vm.sh). Sourced by the guest
# agent (busybox sh, tests/e2e/workloads/two-vm-agent.sh) and by two-vm.sh (bash on the host), so
# the guest's view and the host's truth are printed by the same code. Paths are relative to the
# current directory (the mount point in the guest, the shared directory on the host).

# The steps, in order. Each changes DIR (co/ when VM A does it, ho/ when the host does it).
TWOVM_STEPS="create unlink rename-over rename-new mkdir rmdir chmod chown truncate write-size
write-same utimens setxattr link symlink"

# xget FILE NAME: value of an xattr, "none" if absent (the guest has svfs-guest-tool, the host
# getfattr). xset FILE NAME VALUE.
if command -v svfs-guest-tool >/dev/null 2>&1; then
  xget() { svfs-guest-tool getxattr "$1" "$2" 2>/dev/null || echo none; }
  xset() { svfs-guest-tool setxattr "$1" "$2" "$3"; }
else
  xget() { v=$(getfattr --only-values -n "$2" "$1" 2>/dev/null) && echo "$v" || echo none; }
  xset() { setfattr -n "$2" -v "$3" "$1"; }
fi

# twovm_setup DIR: the old state every step starts from.
twovm_setup() {
  d=$1
  mkdir -p "$d" "$d/od" &&
  echo old >"$d/unl" && echo src >"$d/rsrc" && echo dst-old >"$d/rdst" && echo rn >"$d/rn" &&
  echo x >"$d/cm" && echo x >"$d/co" && echo 'hello world' >"$d/tr" && echo short >"$d/wr" &&
  echo AAAA >"$d/ws" && echo u >"$d/ut" && echo x >"$d/xa" && xset "$d/xa" user.svfs v1 &&
  echo l >"$d/lk"
}

# twovm_items STEP DIR: what the other side observes for STEP (KIND:PATH, see twovm_obs).
twovm_items() {
  d=$2
  case "$1" in
    create) echo "ls:$d st:$d/new" ;;
    unlink) echo "ls:$d st:$d/unl" ;;
    rename-over) echo "ls:$d st:$d/rsrc st:$d/rdst cat:$d/rdst" ;;
    rename-new) echo "ls:$d st:$d/rn st:$d/rn2" ;;
    mkdir) echo "ls:$d st:$d/nd" ;;
    rmdir) echo "ls:$d st:$d/od" ;;
    chmod) echo "st:$d/cm" ;;
    chown) echo "st:$d/co" ;;
    truncate) echo "st:$d/tr cat:$d/tr" ;;
    write-size) echo "st:$d/wr cat:$d/wr" ;;
    write-same) echo "st:$d/ws cat:$d/ws" ;;
    utimens) echo "st:$d/ut" ;;
    setxattr) echo "xa:$d/xa st:$d/xa" ;;
    link) echo "ls:$d st:$d/lk st:$d/lk2" ;;
    symlink) echo "ls:$d st:$d/sl rl:$d/sl" ;;
    *) echo "unknown-step:$1" ;;
  esac
}

# twovm_act STEP DIR: make the change.
twovm_act() {
  d=$2
  case "$1" in
    create) : >"$d/new" ;;
    unlink) rm "$d/unl" ;;
    rename-over) mv "$d/rsrc" "$d/rdst" ;;
    rename-new) mv "$d/rn" "$d/rn2" ;;
    mkdir) mkdir "$d/nd" ;;
    rmdir) rmdir "$d/od" ;;
    chmod) chmod 600 "$d/cm" ;;
    chown) chown 1234:5678 "$d/co" ;;
    truncate) truncate -s 3 "$d/tr" ;;
    write-size) echo 'a longer new content' >"$d/wr" ;;
    write-same) echo BBBB >"$d/ws" ;;
    utimens) touch -d '2020-01-02 03:04:05' "$d/ut" ;;
    setxattr) xset "$d/xa" user.svfs v2 ;;
    link) ln "$d/lk" "$d/lk2" ;;
    symlink) ln -s target-of-sl "$d/sl" ;;
    *) return 2 ;;
  esac
}

# twovm_obs ITEM...: one line "ITEM=VALUE" per item. Kinds: ls (sorted names), st (lstat: mode,
# size, uid, gid, nlink, mtime, ctime), cat (md5 of the content), rl (readlink), xa (user.svfs).
twovm_obs() {
  for it in "$@"; do
    k=${it%%:*}
    p=${it#*:}
    case "$k" in
      ls) v=$(ls -1a "$p" 2>/dev/null | LC_ALL=C sort | tr '\n' ' ') ;;
      st) v=$(stat -c '%f %s %u %g %h %Y %Z' "$p" 2>/dev/null) ;;
      cat) v=$(md5sum <"$p" 2>/dev/null | cut -c1-32) ;;
      rl) v=$(readlink "$p" 2>/dev/null) ;;
      xa) v=$(xget "$p" user.svfs) ;;
      *) v="bad-kind" ;;
    esac
    echo "$it=${v:-missing}"
  done
}

# twovm_statpass TREE DIRS PER: stat (test -e) every file TREE/dD/fF; prints the number missing
# and the guest time the pass took.
twovm_statpass() {
  t0=$(cut -d' ' -f1 /proc/uptime)
  missing=0
  i=0
  while [ "$i" -lt "$2" ]; do
    j=0
    while [ "$j" -lt "$3" ]; do
      [ -e "$1/d$i/f$j" ] || missing=$((missing + 1))
      j=$((j + 1))
    done
    i=$((i + 1))
  done
  t1=$(cut -d' ' -f1 /proc/uptime)
  echo "missing=$missing secs=$(echo "$t1 $t0" | awk '{printf "%.2f", $1 - $2}')"
}

# twovm_createpass DIR N: creates DIR and N empty files DIR/cK in it; prints how many were made
# and the guest time it took.
twovm_createpass() {
  mkdir "$1" || return 1
  t0=$(cut -d' ' -f1 /proc/uptime)
  made=0
  while [ "$made" -lt "$2" ]; do
    : >"$1/c$made" || break
    made=$((made + 1))
  done
  t1=$(cut -d' ' -f1 /proc/uptime)
  echo "created=$made secs=$(echo "$t1 $t0" | awk '{printf "%.2f", $1 - $2}')"
}

# twovm_statlist LIST: as twovm_statpass for the names in LIST (one path a line, relative).
twovm_statlist() {
  t0=$(cut -d' ' -f1 /proc/uptime)
  missing=0
  while IFS= read -r f; do
    [ -e "$f" ] || missing=$((missing + 1))
  done <"$1"
  t1=$(cut -d' ' -f1 /proc/uptime)
  echo "missing=$missing secs=$(echo "$t1 $t0" | awk '{printf "%.2f", $1 - $2}')"
}
