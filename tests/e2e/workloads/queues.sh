# Parallel processes in a guest with several CPUs and request queues: which queues the virtiofs
# driver sends requests on (its sysfs map, /sys/fs/virtiofs/N/mqs/Q/{name,cpu_list}) and how many
# requests svfsd served on each (its per-queue counters, through the runner's stats action).
#   tests/e2e/run-guest.sh --kernel 6.12 --smp 2 --queues 4 --cache none \
#       --workload tests/e2e/workloads/queues.sh
# Since Linux 6.11 the driver maps every CPU to a request queue (virtio_fs_map_queues) and uses
# at most one queue per CPU; 6.1 sends everything on requests.0.
# Env: PROCS (default 4) processes, each making FILES (default 150) files in a directory of its
#      own and stat'ing them ROUNDS (default 3) times; EXPECT_ALL=1 (default): every request
#      queue in the driver's map must serve requests (0: report only, for 6.1); STATS=0: no
#      per-queue counts (the C virtiofsd has none), only the time.
mnt=${1:-/mnt}
PROCS=${PROCS:-4}
FILES=${FILES:-150}
ROUNDS=${ROUNDS:-3}
EXPECT_ALL=${EXPECT_ALL:-1}
STATS=${STATS:-1}
. /guest-lib.sh
# count NAME < stats ack: the requests column of row NAME (0 when absent)
count() { awk -v name="$1" '$1 == name { n = $2 } END { print n + 0 }'; }

cpus=$(nproc)
echo "== $cpus CPUs, kernel $(uname -r); the driver's queue map"
queues=""
for q in /sys/fs/virtiofs/*/mqs/*; do
  [ -r "$q/cpu_list" ] || continue
  name=$(cat "$q/name")  # the directories are numbered: 0 is hiprio, 1 requests.0, ...
  echo "QUEUEMAP $name cpus=$(cat "$q/cpu_list")"
  case "$name" in requests.*) queues="$queues $name" ;; esac
done
[ -n "$queues" ] || echo "no sysfs queue map (the driver of this kernel has none)"

worker() {  # worker ID: its own directory, FILES files, ROUNDS stat passes, then removal
  d="$mnt/q$1"
  mkdir -p "$d"
  i=0
  while [ "$i" -lt "$FILES" ]; do : >"$d/f$i"; i=$((i + 1)); done
  r=0
  while [ "$r" -lt "$ROUNDS" ]; do
    i=0
    while [ "$i" -lt "$FILES" ]; do [ -e "$d/f$i" ] || echo "missing $d/f$i"; i=$((i + 1)); done
    r=$((r + 1))
  done
  rm -r "$d"
}

before=""
[ "$STATS" = 1 ] && before=$(hostact stats)
t0=$(cut -d' ' -f1 /proc/uptime)
p=0
while [ "$p" -lt "$PROCS" ]; do worker "$p" >"/tmp/worker.$p" 2>&1 & p=$((p + 1)); done
wait
t1=$(cut -d' ' -f1 /proc/uptime)
after=""
[ "$STATS" = 1 ] && after=$(hostact stats)
if cat /tmp/worker.* | grep -q .; then bad "workers: $(cat /tmp/worker.* | head -3)"
else ok "$PROCS workers made, stat'ed and removed $FILES files each"; fi

line=""
total=0
served=""
for q in requests.0 requests.1 requests.2 requests.3 requests.4 requests.5 requests.6 requests.7; do
  n=$(($(echo "$after" | count "$q") - $(echo "$before" | count "$q")))
  [ "$n" -gt 0 ] && served="$served $q"
  line="$line $q=$n"
  total=$((total + n))
done
elapsed=$(echo "$t1 $t0" | awk '{printf "%.2f", $1 - $2}')
echo "QUEUERESULT cpus=$cpus queues_in_map=$(echo $queues | wc -w) procs=$PROCS secs=$elapsed total=$total$line"
if [ "$STATS" != 1 ]; then
  echo "no per-queue counts (STATS=0)"
elif [ "$total" -gt 0 ]; then
  ok "svfsd counted $total requests on the request queues"
else
  bad "svfsd counted no requests on the request queues (stats: $(echo "$after" | tr '\n' ' '))"
fi
if [ "$EXPECT_ALL" = 1 ] && [ "$STATS" = 1 ]; then
  for q in $queues; do
    n=$(($(echo "$after" | count "$q") - $(echo "$before" | count "$q")))
    # Each queue must carry a real share of the load, not a stray request.
    if [ "$n" -ge $((total / (4 * $(echo $queues | wc -w)))) ] && [ "$n" -gt 0 ]; then
      ok "$q (in the driver's map) served $n requests"
    else
      bad "$q (in the driver's map) served only $n of $total requests"
    fi
  done
  for q in $served; do
    case " $queues " in *" $q "*) ;; *) bad "$q served requests but is not in the driver's map" ;; esac
  done
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
