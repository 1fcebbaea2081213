# Helpers of the benchmarks that saturate a server core (bench/many_cores.sh,
# bench/http2.sh): a cgroup holding QUOTA of a core (the 2-core method), starting a
# server pinned (and in that cgroup), nginx's CPU masks, and the CPU each side used.
# Sourced; callers set QUOTA and the array `pids`, and remove $cgroup when they end.
cgroup=
# A cgroup holding QUOTA of a core, for the 2-core method; its path in $cgroup.
make_cgroup() {
  local period=100000 quota
  quota=$(awk -v q="$QUOTA" -v p="$period" 'BEGIN { printf "%d", q * p }')
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control ||
      echo +cpu >/sys/fs/cgroup/cgroup.subtree_control
    cgroup=/sys/fs/cgroup/ron-bench-cores-$$
    mkdir "$cgroup"
    echo "$quota $period" >"$cgroup/cpu.max"
  elif [ -d /sys/fs/cgroup/cpu ]; then
    cgroup=/sys/fs/cgroup/cpu/ron-bench-cores-$$
    mkdir "$cgroup"
    echo "$period" >"$cgroup/cpu.cfs_period_us"
    echo "$quota" >"$cgroup/cpu.cfs_quota_us"
  else
    echo "QUOTA needs a cgroup cpu controller (v2 or v1) at /sys/fs/cgroup" >&2
    exit 2
  fi
}
# Runs "$@" in the background inside $cgroup (when there is one), pinned to CPUs $1;
# its PID in $started.
start_pinned() {
  local cpus=$1 log=$2
  shift 2
  if [ -n "$cgroup" ]; then
    # shellcheck disable=SC2016
    sh -c 'echo $$ >"$0/cgroup.procs"; exec "$@"' "$cgroup" taskset -c "$cpus" "$@" >"$log" 2>&1 &
  else
    taskset -c "$cpus" "$@" >"$log" 2>&1 &
  fi
  started=$!
  pids+=("$started")
}
# Busy and total jiffies of CPUs FIRST..LAST together, from /proc/stat: user, nice,
# system, irq, softirq busy; idle and iowait not. Steal ($9) is in neither: time the
# hypervisor ran something else on the vCPU is no server's work, and counted busy it
# lowered the per-busy-core figure of whichever server met a contended host.
cpu_range() {
  awk -v a="$1" -v b="$2" '$1 ~ /^cpu[0-9]+$/ { n = substr($1, 4) + 0;
    if (n >= a && n <= b) { busy += $2 + $3 + $4 + $7 + $8; all += $2 + $3 + $4 + $5 + $6 + $7 + $8 } }
    END { print busy, all }' /proc/stat
}
# CPUs kept busy between two cpu_range readings over COUNT CPUs.
cores_busy() { echo "$1 $2" | awk -v n="$3" '{ printf "%.3f", n * ($3 - $1) / ($4 - $2) }'; }
# Run time of every thread of process $1 and its children (nginx's workers), ns.
tree_ns() {
  local p all
  all="$1 $(pgrep -P "$1" | tr '\n' ' ')"
  for p in $all; do cat /proc/"$p"/task/*/schedstat 2>/dev/null; done | awk '{ s += $1 } END { printf "%.0f", s }'
}
# Voluntary context switches of every thread of process $1 and its children: how often
# they went to sleep (a glommio shard parking, an nginx worker in epoll_wait).
tree_sleeps() {
  local p all
  all="$1 $(pgrep -P "$1" | tr '\n' ' ')"
  for p in $all; do cat /proc/"$p"/task/*/status 2>/dev/null; done |
    awk '$1 == "voluntary_ctxt_switches:" { s += $2 } END { printf "%.0f", s }'
}
# nginx's worker_cpu_affinity for S workers on CPUs 0..S-1: one bit mask per worker.
affinity_masks() {
  local s=$1 i masks=""
  for ((i = 0; i < s; i++)); do
    masks+="$(printf '%0*d' "$s" 0 | sed "s/0/1/$((s - i))") "
  done
  echo "${masks% }"
}
