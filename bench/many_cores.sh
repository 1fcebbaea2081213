#!/usr/bin/env bash
# A saturated server core, ron beside nginx, at 1, 2, 4 and 8 cores (issue 54): what an
# answer costs a core when the server, not the client, is the bottleneck.
#
#   bash bench/many_cores.sh                      # SHARDS="1 2 4 8" (those that fit)
#   SHARDS=12 bash bench/many_cores.sh            # on 16 CPUs: the client gets the other 4
#   SHARDS="1 4" ONLY="range_64KiB" RUNS=5 bash bench/many_cores.sh
#   QUOTA=0.5 bash bench/many_cores.sh            # the 2-core method (below), forced
#   QUOTA=none SHARDS=1 bash bench/many_cores.sh  # the many-core way on 2 CPUs (a check)
#   OTHER_RON=/path/to/other/ron bash bench/many_cores.sh  # A/B: a second ron build in the same runs
#
# Servers, for each S: `ron serve --shards S` under `taskset -c 0-(S-1)` (a shard pinned
# per CPU; its control and admin threads and blocking pools share those CPUs), and nginx
# with S workers, `worker_cpu_affinity` one per CPU 0..S-1, its master on them too
# (sendfile, open_file_cache: bench/workloads.sh's nginx_config). The same objects in
# both: 2,000 x 4 KiB and 200 x 1 MiB (ron-bench's deterministic datasets).
# Workloads: 4KiB (a whole object, one of 2,000 at random), range_64KiB (bytes=X-(X+65535),
# X uniform and unaligned, over one of the 200 x 1 MiB objects), 1MiB (a whole object).
# Load: ron-bench on CPUs S..N-1 (--cpus), 64*S connections (4KiB, range_64KiB) or 16*S
# (1MiB), --no-verify --discard-bodies (each body dropped unread by the client's kernel, no
# copy: the client costs less than the server per answer, so CPUs S..N-1 saturate CPUs
# 0..S-1; DISCARD=0 reads bodies as a client would), RUNS runs of DURATION s after a 1 s
# warm-up, ron and nginx
# alternating (and OTHER_RON, a second ron build on its own ports, between them: an A/B in
# the same runs, its own table and ron B / ron per busy core). Before the first run each
# ron reads random 4 KiB objects, then random 64 KiB ranges of the 1 MiB ones, for WARM_S
# (2) s each, so no measured run fills its cache (nginx's page cache holds the files it
# just wrote); the cache then holds those groups in the order the ranges met them, as a
# node that served ranges would.
# Per run, from /proc/stat over the measured window:
#   - server CPUs busy: CPUs 0..S-1 (user, system, irq, softirq): the servers' own work
#     and the kernel's network work on their CPUs; the client never runs there;
#   - machine CPUs busy: every CPU (server, client, the loopback's softirq wherever it ran).
# Prints req/s, req/s per busy server core and per busy machine CPU (medians of RUNS),
# and ron / nginx for both, and each server's sleeps per answer (its threads' voluntary
# context switches: a glommio shard parking, which costs every other busy shard an IPI,
# `ron-bench membarrier`; an nginx worker in epoll_wait). A run whose server CPUs were
# less than SATURATED (0.90) busy is marked: the client, not the server, set that figure.
#
# The 2-core method (fewer than 4 CPUs, or QUOTA set): S = 1, the server on CPU 0 and
# the client on CPU 1 cannot saturate the server core (one client core costs about what
# the server's does), so both servers run in a cgroup with a CPU quota of QUOTA cores
# (default 0.5; cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us`): the server is the
# bottleneck at QUOTA of a core while the client has a whole one. Per busy server core
# is then req/s / (the server's own CPU time, from /proc/PID/task/*/schedstat, per s):
# the softirq work on CPU 0 outside the server's threads is left out for both.
#
# PROFILE=1: the last run of each workload also counts the servers' system calls and
# context switches per request and records a software-clock profile of each (`profile`).
#
# CACHE_BYTES: ron's --cache-bytes (2GiB). Each shard caches what it serves, in its share
# (CACHE_BYTES / S): with many shards a working set that fits the whole misses in each
# share (docs/PERF.md, issue 54's 12-shard profile).
#
# Variables: SHARDS ONLY RUNS DURATION WARM_S QUOTA SATURATED PROFILE CACHE_BYTES DISCARD RON OTHER_RON
# BENCH NGINX WORK PORT.
# Talks only to 127.0.0.1, stops what it started (by PID), removes its cgroup.
set -euo pipefail
cd "$(dirname "$0")/.."
# Its helpers (nginx_config, stop_started, median); its workload tables are redefined below.
# shellcheck source=workloads.sh
source bench/workloads.sh
# make_cgroup, start_pinned, affinity_masks, cpu_range, cores_busy, tree_ns.
# shellcheck source=cores.sh
source bench/cores.sh

RUNS=${RUNS:-3}
DURATION=${DURATION:-6}
SATURATED=${SATURATED:-0.90}
RON=${RON:-target/release/ron}
BENCH=${BENCH:-target/release/ron-bench}
NGINX=${NGINX:-nginx}
WORK=${WORK:-/tmp/ron-many-cores}
PORT=${PORT:-18680}
NGINX_PORT=$((PORT + 1))
OTHER_RON=${OTHER_RON:-}
OTHER_PORT=$((PORT + 4))
WARM_S=${WARM_S:-2}
DISCARD=${DISCARD:-1}
PEAK=(--no-verify)
[ "$DISCARD" = 0 ] || PEAK+=(--discard-bodies)
CACHE_BYTES=${CACHE_BYTES:-2GiB}
SERVERS="ron ${OTHER_RON:+ron_b }nginx"
RONS="ron${OTHER_RON:+ ron_b}"
WORKLOADS=${ONLY:-"4KiB range_64KiB 1MiB"}
# Every online CPU: nproc obeys OMP_NUM_THREADS and this process's CPU mask.
CPUS=$(getconf _NPROCESSORS_ONLN)
if [ -z "${QUOTA:-}" ] && [ "$CPUS" -lt 4 ]; then QUOTA=0.5; fi
QUOTA=${QUOTA:-}
# QUOTA=none: the many-core way even on a small machine (a check of the script; its
# figures will say NOT SATURATED where the client is the bottleneck).
[ "$QUOTA" = none ] && QUOTA=
if [ -n "$QUOTA" ]; then
  SHARDS=1
else
  # By default those that leave the client at least as many CPUs as the server.
  if [ -z "${SHARDS:-}" ]; then
    SHARDS=
    for s in 1 2 4 8; do
      if [ $((2 * s)) -le "$CPUS" ]; then SHARDS+="$s "; fi
    done
  fi
fi
declare -A SET=([4KiB]="--objects 2000 --size 4096 --seed 11"
  [range_64KiB]="--objects 200 --size 1048576 --seed 12"
  [1MiB]="--objects 200 --size 1048576 --seed 12")
declare -A MODE=([4KiB]="--workload get" [range_64KiB]="--workload range --range-bytes 65536"
  [1MiB]="--workload get")
declare -A CONNS_PER_SHARD=([4KiB]=64 [range_64KiB]=64 [1MiB]=16)
for w in $WORKLOADS; do
  [ -n "${SET[$w]:-}" ] || { echo "unknown workload $w (${!SET[*]})" >&2; exit 2; }
done
command -v "$NGINX" >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; }
if [ ! -x "$RON" ] || [ ! -x "$BENCH" ]; then cargo build --release -p ron-engine -p ron-bench; fi
[ -z "$OTHER_RON" ] || [ -x "$OTHER_RON" ] || { echo "OTHER_RON=$OTHER_RON: not an executable" >&2; exit 2; }

pids=()
# perf opens an event per thread and counter.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cgroup=
cleanup() {
  stop_started
  if [ -n "$cgroup" ] && [ -d "$cgroup" ]; then rmdir "$cgroup" 2>/dev/null || true; fi
}
trap cleanup EXIT

# PROFILE=1, the last run of each: the system calls and context switches of the server's
# threads (nginx: master and workers) over the window, counted by `perf stat` on the
# syscalls tracepoints, and a software-clock profile (`perf record -e cpu-clock`) whose
# top symbols go beside it. Writes $2.stat, $2.data and $2.top.
profile() {
  local pid=$1 out=$2 tids
  tids=$(for p in $1 $(pgrep -P "$1"); do ls /proc/"$p"/task; done | paste -sd,)
  perf record -q -e cpu-clock -F 999 -g -t "$tids" -o "$out.data" -- sleep "$DURATION" 2>/dev/null &
  local rec=$!
  local calls="" c
  for c in $PROFILED_CALLS; do calls+="syscalls:sys_enter_$c,"; done
  # Where the system call tracepoints are missing (no tracefs) the counts are left out.
  perf stat -x, -e "${calls}raw_syscalls:sys_enter,context-switches" -t "$tids" -o "$out.stat" \
    -- sleep "$DURATION" 2>/dev/null || sleep "$DURATION"
  wait "$rec" || true
  perf report -i "$out.data" --no-children -g none --sort sym --percent-limit 1.5 --stdio 2>/dev/null |
    grep -E '^ +[0-9]' | head -25 >"$out.top" || true
  # The user-space functions by time inclusive of their callees, and the call chains
  # into the top symbols: what a flat top cannot say (who spins, who calls the kernel).
  perf report -i "$out.data" --children --sort sym --percent-limit 2 --stdio 2>/dev/null |
    grep -E '^ +[0-9]' | grep -F '[.]' | head -25 >"$out.children" || true
  perf report -i "$out.data" --no-children -g caller,2,callee,function,percent --sort sym \
    --percent-limit 2.5 --stdio 2>/dev/null | grep -Ev '^$|^#' | head -200 >"$out.chains" || true
}
# The calls counted one by one (raw_syscalls:sys_enter counts them all).
PROFILED_CALLS="sendfile64 sendto sendmsg write writev read readv recvfrom recvmsg \
epoll_wait epoll_pwait io_uring_enter futex accept4 openat close mmap munmap madvise splice \
setsockopt getsockopt clock_nanosleep sched_yield"
# One line per profiled run: the calls made per request (those at 0.05 or more), then the
# top of its profile.
per_request_calls() {
  [ -s "$1.top" ] && sed "s|^|    $(basename "$1") |" "$1.top"
  [ -s "$1.children" ] && sed "s|^|    $(basename "$1") incl. callees |" "$1.children"
  [ -s "$1.chains" ] && sed "s|^|    $(basename "$1") chains |" "$1.chains"
  [ -s "$1.stat" ] || { echo "$(basename "$1"): no system call counts"; return 0; }
  python3 - "$1" "$2" "$DURATION" <<'PY'
import json, sys
stat, run, duration = sys.argv[1], sys.argv[2], float(sys.argv[3])
requests = json.load(open(run))["req_per_s"] * duration
calls = []
for line in open(stat + ".stat"):
    f = line.strip().split(",")
    if len(f) < 3 or not f[0].replace(".", "").isdigit():
        continue
    name = f[2].replace("syscalls:sys_enter_", "").replace("raw_syscalls:sys_enter", "all calls")
    per = float(f[0]) / requests
    if per >= 0.05:
        calls.append((per, name))
calls.sort(reverse=True)
print(stat.rsplit("/", 1)[-1] + ": " + ", ".join(f"{n} {p:.2f}" for p, n in calls) + " per request")
PY
}

# Starts a ron build (its name, binary, HTTP port; admin at +2, OAP at +3) with S shards
# on CPUs 0..S-1, its scrubber paused, the objects put, and its cache warmed; $started
# is its PID.
start_ron() {
  local name=$1 bin=$2 port=$3 s=$4 set
  local admin=$((port + 2)) last=$((s - 1))
  start_pinned "0-$last" "$WORK/$name-$s.log" "$bin" serve --shards "$s" --data-dir "$WORK/$name-data" \
    --http "127.0.0.1:$port" --oap "127.0.0.1:$((port + 3))" --admin "127.0.0.1:$admin" --cache-bytes "$CACHE_BYTES"
  local pid=$started
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null || { echo "$name did not get ready" >&2; exit 1; }
  # The scrubber would run on the server's CPUs: paused, so neither server pays for it.
  curl -sf -X POST "http://127.0.0.1:$admin/admin/scrub/pause" >/dev/null
  for set in "${SET[4KiB]}" "${SET[1MiB]}"; do
    # shellcheck disable=SC2086
    "$BENCH" dataset --dir "$WORK/www" $set
    # shellcheck disable=SC2086
    "$BENCH" run --target "127.0.0.1:$port" --load $set --duration 0.2 --warmup 0 \
      --connections 1 --cpus "$client_cpus" >/dev/null
  done
  for w in 4KiB range_64KiB; do
    # shellcheck disable=SC2086
    "$BENCH" run --target "127.0.0.1:$port" ${SET[$w]} ${MODE[$w]} "${PEAK[@]}" \
      --duration "$WARM_S" --warmup 0 --connections $((64 * s)) --cpus "$client_cpus" >/dev/null
  done
  started=$pid
}

[ -n "$QUOTA" ] && make_cgroup
rm -rf "$WORK"; mkdir -p "$WORK/www" "$WORK/nginx"
: >"$WORK/runs.txt"; : >"$WORK/profiles.txt"
for s in $SHARDS; do
  if [ -z "$QUOTA" ] && [ "$s" -ge "$CPUS" ]; then
    echo "S=$s: skipped, $CPUS CPUs leave the client none" >&2
    continue
  fi
  # Named on purpose (SHARDS="12" on 16 CPUs, issue 54's model check): the client may
  # not saturate the server, and NOT SATURATED below says where it did not.
  if [ -z "$QUOTA" ] && [ $((2 * s)) -gt "$CPUS" ]; then
    echo "S=$s: the client has $((CPUS - s)) CPUs for $s server CPUs" >&2
  fi
  last=$((s - 1))
  # ron-bench takes a list of CPUs, not a range.
  if [ -n "$QUOTA" ]; then client_cpus=1; else client_cpus=$(seq -s, "$s" $((CPUS - 1))); fi
  rm -rf "$WORK"/*-data "$WORK/nginx"/*
  start_ron ron "$RON" "$PORT" "$s"
  ron_pid=$started
  if [ -n "$OTHER_RON" ]; then
    start_ron ron_b "$OTHER_RON" "$OTHER_PORT" "$s"
    ron_b_pid=$started
  fi
  nginx_config "$WORK/nginx" "$WORK/www" "$NGINX_PORT" "$s" "$(affinity_masks "$s")" 10000 >"$WORK/nginx/nginx.conf"
  start_pinned "0-$last" "$WORK/nginx-$s.log" "$NGINX" -c "$WORK/nginx/nginx.conf" -g 'daemon off;'
  nginx_pid=$started
  sleep 1
  for w in $WORKLOADS; do
    conns=$((CONNS_PER_SHARD[$w] * s))
    for run in $(seq 1 "$RUNS"); do
      for server in $SERVERS; do
        case $server in
          ron) port=$PORT pid=$ron_pid ;;
          ron_b) port=$OTHER_PORT pid=$ron_b_pid ;;
          nginx) port=$NGINX_PORT pid=$nginx_pid ;;
        esac
        # shellcheck disable=SC2086
        "$BENCH" run --target "127.0.0.1:$port" ${SET[$w]} ${MODE[$w]} "${PEAK[@]}" \
          --duration "$DURATION" --warmup 1 --connections "$conns" --cpus "$client_cpus" \
          --json "$WORK/run.json" >"$WORK/run.txt" &
        load=$!
        sleep 1
        srv0=$(cpu_range 0 "$last"); all0=$(cpu_range 0 $((CPUS - 1))); ns0=$(tree_ns "$pid"); sl0=$(tree_sleeps "$pid")
        if [ "${PROFILE:-0}" = 1 ] && [ "$run" = "$RUNS" ]; then
          profile "$pid" "$WORK/profile-S$s-$w-$server"
        else
          sleep "$DURATION"
        fi
        srv1=$(cpu_range 0 "$last"); all1=$(cpu_range 0 $((CPUS - 1))); ns1=$(tree_ns "$pid"); sl1=$(tree_sleeps "$pid")
        wait "$load"
        if [ "${PROFILE:-0}" = 1 ] && [ "$run" = "$RUNS" ]; then
          per_request_calls "$WORK/profile-S$s-$w-$server" "$WORK/run.json" >>"$WORK/profiles.txt"
        fi
        rps=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["req_per_s"] if r["unexpected_statuses"] + r["io_errors"] == 0 else -1)' "$WORK/run.json")
        [ "${rps%.*}" -gt 0 ] || { echo "$server $w S=$s: errors or no requests" >&2; cat "$WORK/run.txt" >&2; exit 1; }
        server_busy=$(cores_busy "$srv0" "$srv1" "$s")
        machine_busy=$(cores_busy "$all0" "$all1" "$CPUS")
        own_cores=$(awk -v a="$ns0" -v b="$ns1" -v d="$DURATION" 'BEGIN { printf "%.3f", (b - a) / 1e9 / d }')
        sleeps=$(awk -v a="$sl0" -v b="$sl1" -v r="$rps" -v d="$DURATION" 'BEGIN { printf "%.3f", (b - a) / (r * d) }')
        echo "$s $w $server $rps $server_busy $machine_busy $own_cores $sleeps" >>"$WORK/runs.txt"
      done
    done
  done
  stop_started
  pids=()
done

# Every run's figures, before the medians: "S workload server req/s server_busy
# machine_busy own_cores sleeps_per_answer".
echo "runs:"
sed 's/^/  /' "$WORK/runs.txt"
git_rev=${REVISION:-$(git rev-parse --short HEAD 2>/dev/null || echo '?')}
echo "machine: $CPUS CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r), TCP congestion control $(cat /proc/sys/net/ipv4/tcp_congestion_control)"
echo "ron binary $RON (tree at $git_rev)${OTHER_RON:+; ron B binary $OTHER_RON}; nginx $("$NGINX" -v 2>&1 | cut -d/ -f2); ron --cache-bytes $CACHE_BYTES; ron-bench ${PEAK[*]}; $RUNS runs x ${DURATION}s, medians"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
# col SERVER FIELD and per SERVER FIELD (req/s over that field) for $s and $w: medians.
col() { awk -v s="$s" -v w="$w" -v v="$1" -v c="$2" '$1 == s && $2 == w && $3 == v { print $c }' "$WORK/runs.txt" | median; }
per() { awk -v s="$s" -v w="$w" -v v="$1" -v c="$2" '$1 == s && $2 == w && $3 == v { print $4 / $c }' "$WORK/runs.txt" | median; }
unsaturated=()
for v in $RONS; do
  name=${v/ron_b/ron B}
  [ -n "$OTHER_RON" ] && echo "$name against nginx:"
  if [ -n "$QUOTA" ]; then
    echo "2-core method: S = 1, both servers in a cgroup of $QUOTA of a core on CPU 0, the client on CPU 1; per server core = req/s / the server's own CPU time"
    echo "| S | workload | $name req/s | nginx req/s | $name cores | nginx cores | $name / nginx per server core | CPU 0 busy ($name, nginx) |"
    echo "|---|---|---:|---:|---:|---:|---:|---|"
  else
    echo "| S | workload | $name req/s | nginx req/s | $name / nginx per busy server core | per machine CPU | server CPUs busy ($name, nginx) | sleeps per answer ($name, nginx) |"
    echo "|---|---|---:|---:|---:|---:|---|---|"
  fi
  for s in $SHARDS; do
    for w in $WORKLOADS; do
      [ -n "$(col "$v" 4)" ] || continue
      if [ -n "$QUOTA" ]; then
        echo "| $s | $w | $(col "$v" 4 | xargs printf '%.0f') | $(col nginx 4 | xargs printf '%.0f') | $(col "$v" 7) | $(col nginx 7) | **$(ratio "$(per "$v" 7)" "$(per nginx 7)")** | $(col "$v" 5), $(col nginx 5) |"
      else
        echo "| $s | $w | $(col "$v" 4 | xargs printf '%.0f') | $(col nginx 4 | xargs printf '%.0f') | **$(ratio "$(per "$v" 5)" "$(per nginx 5)")** | $(ratio "$(per "$v" 6)" "$(per nginx 6)") | $(col "$v" 5), $(col nginx 5) of $s | $(col "$v" 8), $(col nginx 8) |"
      fi
    done
  done
done
if [ -n "$OTHER_RON" ]; then
  echo "ron B / ron per busy server core (per server core under a quota), the same runs:"
  field=5; [ -n "$QUOTA" ] && field=7
  for s in $SHARDS; do
    for w in $WORKLOADS; do
      [ -n "$(col ron 4)" ] || continue
      echo "  S=$s $w: $(ratio "$(per ron_b $field)" "$(per ron $field)")"
    done
  done
fi
for s in $SHARDS; do
  for w in $WORKLOADS; do
    [ -n "$(col ron 4)" ] || continue
    for v in $SERVERS; do
      if [ -n "$QUOTA" ]; then
        awk -v q="$QUOTA" -v c="$(col "$v" 7)" -v t="$SATURATED" 'BEGIN { exit !(c < q * t) }' &&
          unsaturated+=("S=$s $w $v: $(col "$v" 7) of its $QUOTA cores")
      else
        awk -v s="$s" -v c="$(col "$v" 5)" -v t="$SATURATED" 'BEGIN { exit !(c < s * t) }' &&
          unsaturated+=("S=$s $w $v: server CPUs $(col "$v" 5) of $s busy")
      fi
    done
  done
done
if [ "${PROFILE:-0}" = 1 ]; then
  echo "System calls and context switches per request (perf stat, the last run of each):"
  sed 's/^/  /' "$WORK/profiles.txt"
  echo "Profiles (perf record -e cpu-clock, top symbols): $WORK/profile-*.top"
fi
if [ ${#unsaturated[@]} -gt 0 ]; then
  echo "NOT SATURATED (the client set these figures, not the server; more client CPUs or connections):"
  printf '  %s\n' "${unsaturated[@]}"
fi
