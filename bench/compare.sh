#!/usr/bin/env bash
# ron vs nginx, side by side, on the same datasets: many objects picked at random, like
# an edge (issue 12).
#
#   bash bench/compare.sh                  # RUNS=3 DURATION=6: about 10 minutes
#   RUNS=5 DURATION=10 bash bench/compare.sh
#   ONLY="get_4KiB put_1MiB" bash bench/compare.sh   # a subset of the workloads
#   DIST=zipf ZIPF_S=1.0 bash bench/compare.sh       # Zipf popularity instead of uniform
#
# Workloads (bench/workloads.sh; about 720 MiB of objects in all):
#   get_4KiB          GET a whole 4 KiB object, one of 2,000, at random
#   get_1MiB          GET a whole 1 MiB object, one of 200, at random
#   get_256MiB        GET a whole 256 MiB object, one of 2, at random (streamed whole; on
#                     BIG_CONNS=4 connections so each answer ends well within a run)
#   range_64KiB       GET `Range: bytes=X-(X+65535)`, X uniform and unaligned over one of
#                     the same two 256 MiB objects
#   put_1MiB          PUT 1 MiB of fresh random bytes (ron: /o; nginx dav: a new path each)
#   get_4KiB_one_url  GET one 4 KiB object (object 0 of get_4KiB), always the same URL:
#                     the old single-URL measurement, kept to compare with earlier numbers;
#                     not an edge, and wrk runs it without a script as before
# Objects are picked uniformly by default; DIST=zipf picks object i (0-based) with
# weight 1/(i+1)^ZIPF_S. Both tools use the same URL list and the same distribution:
# ron-bench natively (--zipf), wrk through a generated Lua script, $WORK/lua/<workload>.lua
# (request(): a random object from the dataset's URL list, `ron-bench dataset --list`, in
# dataset order; for Zipf a cumulative table, binary-searched; for ranges a random
# unaligned Range header per request; math.random seeded per thread from SEED). Both
# servers get the same URL lists and byte ranges (same scripts, same seeds).
#
# ron's scrubber is paused once ron is ready (it would hash stored objects on CPU 0
# during both servers' runs).
# Servers pinned to CPU 0 (nginx: 1 worker, sendfile on, tcp_nopush off, open_file_cache
# on for 10,000 files or twice the dataset's, access log off; ron: --shards 1,
# --cache-bytes $CACHE, 2GiB by default so the whole 720 MiB fits), load generators
# pinned to CPU 1. Datasets: ron-bench's deterministic objects, uploaded to ron and
# written as files for nginx at the same URLs (/o/b3:<hex>).
#
# 1. correctness: a short ron-bench run per workload and server with every body verified
#    (whole objects against their address, ranges byte for byte, ron's PUT replies
#    against the address of what was sent; nginx's dav names nothing, so its PUTs are
#    checked by status only), each run must have checked at least one answer and had no
#    unexpected status; then the same bytes from both servers by curl (a whole object
#    and an unaligned range), and a 1 s wrk run per workload and server with its script
#    (every answer 2xx, no socket errors); any failure stops here;
# 2. peak: RUNS runs per workload, server and tool (ron-bench --no-verify; wrk), medians.
#    ron-bench: req/s and latency of the requests sent in the measured window, MB/s of
#    the body bytes that arrived in it, server CPU busy = CPU 0's /proc/stat share over
#    it (--busy-cpu 0: not the dataset generation or the warm-up); wrk: its own figures,
#    CPU 0 over its run, and both CPUs over it: per busy *machine* CPU, the figure that
#    does not depend on where the loopback's receive work runs (a server that transmits
#    from its own CPU also delivers into wrk's socket there, in its softirq: work a NIC
#    would leave to the client machine; docs/PERF.md, "Which generator is right");
# 3. equal load: ron-bench open loop at the same fixed rate on both servers (half of
#    nginx's peak get_4KiB rate under wrk), latency from the intended send time; medians.
# 4. with PROFILE=1, one more ron-bench run per read workload and server with CPU 0
#    sampled (perf), split per request into buckets (bench/cpu_split.py: loopback
#    delivery, send, receive, event loop, other kernel, the server's user space): where
#    each server's core goes, side by side. PROFILE_TOOLS="ron-bench wrk" profiles
#    under both load generators (default: ron-bench).
# Time: RUNS x (2 x DURATION + WARMUP + 1) s per workload and server (6 x 2 by default),
# plus about a minute for the datasets and the correctness phase and
# 2 x RUNS x (DURATION + WARMUP) s of equal load.
# Variables: RUNS DURATION WARMUP CONNS BIG_CONNS DIST ZIPF_S CACHE WRK_TIMEOUT SEED ONLY PROFILE RON
# PROFILE_TOOLS
# WORK RON_PORT NGINX_PORT ADMIN_PORT OAP_PORT.
# Prints the machine, versions, the workloads, a table per tool and the ron/nginx ratios.
# Installs nginx and wrk if missing, builds release binaries if missing, talks only to
# 127.0.0.1, stops what it started (by PID).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-64}
BIG_CONNS=${BIG_CONNS:-4}      # connections for get_256MiB: its answers must end within a run
DIST=${DIST:-uniform}          # uniform | zipf
ZIPF_S=${ZIPF_S:-1.0}          # the Zipf exponent when DIST=zipf
CACHE=${CACHE:-2GiB}           # ron's --cache-bytes: holds the whole data set
WRK_TIMEOUT=${WRK_TIMEOUT:-60s} # 256 MiB answers take seconds on many connections
SEED=${SEED:-42}               # wrk's Lua random seed (plus the thread number)
RON_PORT=${RON_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}
ADMIN_PORT=${ADMIN_PORT:-18600}
OAP_PORT=${OAP_PORT:-18444}    # ron listens for OAP/1 anyway: not on the default 9444
WORK=${WORK:-/tmp/ron-compare}
RON=${RON:-target/release/ron}      # another build to compare (A/B), e.g. RON=/tmp/other/ron
BENCH=target/release/ron-bench

[[ $ZIPF_S =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "ZIPF_S must be a number, not $ZIPF_S" >&2; exit 2; }
case $DIST in
  uniform) POP=() ;;
  zipf) POP=(--zipf "$ZIPF_S") ;;
  *) echo "DIST must be uniform or zipf, not $DIST" >&2; exit 2 ;;
esac
[[ $SEED =~ ^[0-9]+$ ]] || { echo "SEED must be a whole number" >&2; exit 2; }
if [ "${PROFILE:-0}" = 1 ] && ! awk -v d="$DURATION" 'BEGIN { exit !(d >= 3) }'; then
  echo "PROFILE=1 needs DURATION of 3 s or more (it samples DURATION - 2 s of a run)" >&2; exit 2
fi
dist_text() { [ "$DIST" = zipf ] && echo "Zipf s=$ZIPF_S" || echo uniform; }

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq nginx-light wrk >/dev/null
fi
if [ ! -x "$RON" ] || [ ! -x "$BENCH" ]; then cargo build --release -p ron-engine -p ron-bench; fi

rm -rf "$WORK"; mkdir -p "$WORK/www" "$WORK/nginx" "$WORK/lua" "$WORK/json" "$WORK/lists"
pids=()
trap stop_started EXIT

# shellcheck source=workloads.sh
source bench/workloads.sh
WORKLOADS=${ONLY:-$WORKLOADS}
for w in $WORKLOADS; do
  [ -n "${DATA[$w]:-}" ] || { echo "unknown workload $w (${!DATA[*]})" >&2; exit 2; }
done
is_put() { [[ ${MODE[$1]} == *"--workload put"* ]]; }
# The value of flag $2 in the flags $1 (empty if absent).
flag() { echo " $1 " | sed -n "s/.* $2 \([^ ]*\) .*/\1/p"; }

# One load generator is one client, which may hold three quarters of a shard's open
# uploads: 128 leaves its 64 connections all open at once (nginx has no such bound).
taskset -c 0 "$RON" serve --shards 1 --data-dir "$WORK/ron-data" --http "127.0.0.1:$RON_PORT" \
  --oap "127.0.0.1:$OAP_PORT" --admin "127.0.0.1:$ADMIN_PORT" --cache-bytes "$CACHE" \
  --max-uploads 128 >"$WORK/ron.log" 2>&1 &
ron_pid=$!; pids+=("$ron_pid")
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null \
  || { echo "ron did not get ready:" >&2; tail -n 5 "$WORK/ron.log" >&2; exit 1; }
# ron's scrubber re-reads and hashes stored objects on CPU 0 in the background (3.8 % of
# CPU 0 during an nginx run in one profile): paused, so neither server's runs pay for it.
curl -sf -X POST "http://127.0.0.1:$ADMIN_PORT/admin/scrub/pause" >/dev/null

# The datasets the chosen reads need, each made once (get_256MiB and range_64KiB share
# theirs): written as files for nginx, listed in dataset order (line i = object i = Zipf
# rank i) for wrk, uploaded to ron.
echo "== datasets" >&2
declare -A LIST
for w in $WORKLOADS; do
  is_put "$w" && continue
  LIST[$w]=$WORK/lists/${DATA[$w]//[^a-z0-9]/_}.txt
  [ -e "${LIST[$w]}" ] && continue
  # shellcheck disable=SC2086
  "$BENCH" dataset --dir "$WORK/www" --list "${LIST[$w]}" ${DATA[$w]}
  # shellcheck disable=SC2086
  "$BENCH" run --target "127.0.0.1:$RON_PORT" --load ${DATA[$w]} --duration 0.2 --warmup 0 \
    --connections 1 --cpus 1 >/dev/null
done
sync
files=$(find "$WORK/www" -type f | wc -l)
cache_files=$(( files * 2 > 10000 ? files * 2 : 10000 ))
echo "   $files files, $(du -sm "$WORK/www" | cut -f1) MiB" >&2

nginx_config "$WORK/nginx" "$WORK/www" "$NGINX_PORT" 1 1 "$cache_files" >"$WORK/nginx/nginx.conf"
taskset -c 0 nginx -c "$WORK/nginx/nginx.conf" -g 'daemon off;' >"$WORK/nginx.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 50); do curl -so /dev/null "http://127.0.0.1:$NGINX_PORT/" && break; sleep 0.1; done
curl -so /dev/null "http://127.0.0.1:$NGINX_PORT/" \
  || { echo "nginx did not start:" >&2; tail -n 5 "$WORK/nginx.log" "$WORK/nginx/error.log" >&2; exit 1; }

# wrk's request(): a random object of the dataset's URL list (uniform, or Zipf by a
# cumulative table, binary-searched), the whole object or a random unaligned range of it.
# compare.sh prepends `paths` (the URL list) and the constants per workload.
{
cat <<'EOF'
local n = #paths
local cdf = nil
if dist == "zipf" then
  -- cdf[k]: the probability of ranks 1..k, weight 1/k^s (rank 1 = object 0)
  cdf = {}
  local total = 0
  for k = 1, n do total = total + 1 / k ^ zipf_s end
  local acc = 0
  for k = 1, n do
    acc = acc + 1 / k ^ zipf_s / total
    cdf[k] = acc
  end
end

-- The first k with cdf[k] >= u (u in [0, 1)), as ron-bench's sampler.
local function pick()
  if cdf == nil then return math.random(n) end
  local u = math.random()
  local lo, hi = 1, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return lo
end
EOF
wrk_lua_seeded_threads
cat <<'EOF'

function request()
  local path = paths[pick()]
  if range_len > 0 then
    local first = math.random(0, size - range_len)
    return wrk.format("GET", path, { ["Range"] = "bytes=" .. first .. "-" .. (first + range_len - 1) })
  end
  return wrk.format("GET", path)
end
EOF
} >"$WORK/lua/pick.lua"
# One script per read workload over a list of URLs: $WORK/lua/<workload>.lua.
for w in $WORKLOADS; do
  is_put "$w" && continue
  range=0
  [[ ${MODE[$w]} == *"--workload range"* ]] && range=$(flag "${MODE[$w]}" --range-bytes) && range=${range:-65536}
  {
    echo "-- generated by bench/compare.sh: $w (${DESC[$w]}), $(dist_text)"
    echo "local paths = {"
    sed 's/.*/  "&",/' "${LIST[$w]}"
    echo "}"
    echo "local size, range_len = $(flag "${DATA[$w]}" --size), $range"
    echo "local dist, zipf_s, seed = \"$DIST\", $ZIPF_S, $SEED"
    cat "$WORK/lua/pick.lua"
  } >"$WORK/lua/$w.lua"
done
cat > "$WORK/lua/put.lua" <<'EOF'
local f = io.open(os.getenv("PUT_FILE"), "rb")
local body = f:read("*a")
f:close()
local base = os.getenv("PUT_BASE")
local n = 0
request = function()
  n = n + 1
  -- a unique path per PUT when the server stores by path (nginx dav)
  local path = base == "/o" and base or (base .. n)
  return wrk.format("PUT", path, nil, body)
end
EOF
head -c $((1 << 20)) /dev/urandom > "$WORK/put.bin"

json_field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$1" "$2"; }
port_of() { [ "$1" = ron ] && echo "$RON_PORT" || echo "$NGINX_PORT"; }
conns_for() { [ "$1" = get_256MiB ] && echo "$BIG_CONNS" || echo "$CONNS"; }

# ron-bench once: prints "req/s body_bytes/s p99_us busy p50_us p999_us"; req/s and
# latency count the requests sent in the measured window, body bytes/s what arrived in
# it, busy is CPU 0's share over it (not the dataset generation or the warm-up)
ron_bench() {
  local server=$1 w=$2 json=$3; shift 3
  local put_path=/o; [ "$server" = nginx ] && put_path='/put/obj-{n}'
  # shellcheck disable=SC2086
  "$BENCH" run --target "127.0.0.1:$(port_of "$server")" ${DATA[$w]} ${MODE[$w]} "${POP[@]}" \
    --put-path "$put_path" --connections "$(conns_for "$w")" --cpus 1 --duration "$DURATION" --warmup "$WARMUP" \
    --busy-cpu 0 --json "$json" "$@" >/dev/null
  local errors
  errors=$(json_field "$json" "d['unexpected_statuses'] + d['io_errors'] + d['verify_failures']")
  [ "$errors" = 0 ] || echo "  ron-bench $server $w: $errors errors ($(json_field "$json" "d['statuses']"))" >&2
  json_field "$json" "' '.join(str(x) for x in (d['req_per_s'], d['window_body_bytes_per_s'], \
d['latency_us']['p99'], d['busy_share'] or 0, d['latency_us']['p50'], d['latency_us']['p99_9']))"
}

# wrk once: prints "req/s body_bytes/s p99_us busy errors machine" (errors: non-2xx
# answers and socket errors; machine: CPUs busy, both together)
wrk_run() {
  local before after out all_before all_after
  before=$(cpu0); all_before=$(cpus_all)
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout "$WRK_TIMEOUT" --latency "$@" 2>&1)
  after=$(cpu0); all_after=$(cpus_all)
  echo "$out" | grep -E 'Non-2xx|Socket errors' >&2 || true
  local rps bps p99 errors
  rps=$(echo "$out" | awk '/Requests\/sec/ { print $2 }')
  bps=$(echo "$out" | awk '/Transfer\/sec/ { v = $2; n = v + 0; if (v ~ /GB$/) n *= 1073741824;
        else if (v ~ /MB$/) n *= 1048576; else if (v ~ /KB$/) n *= 1024; print n }')
  p99=$(echo "$out" | awk '$1 == "99%" { v = $2; n = v + 0; if (v ~ /us$/) n *= 1; else if (v ~ /ms$/) n *= 1000;
        else if (v ~ /s$/) n *= 1000000; print n }')
  errors=$(echo "$out" | awk '/Non-2xx/ { e += $NF } /Socket errors/ { gsub(/,/, ""); e += $4 + $6 + $8 + $10 }
        END { print e + 0 }')
  echo "${rps:-0} ${bps:-0} ${p99:-0} $(busy_share "$before" "$after") $errors $(busy_cpus "$all_before" "$all_after")"
}

# wrk once on a workload: PUTs from put.lua, the one-URL case on its URL (no script:
# the old measurement), every other read through its generated Lua script.
wrk_for() {
  local s=$1 w=$2 base conns
  base="http://127.0.0.1:$(port_of "$1")"
  conns=$(conns_for "$w")
  local CONNS=$conns
  if is_put "$w"; then
    PUT_FILE="$WORK/put.bin" PUT_BASE="$([ "$s" = ron ] && echo /o || echo /put/wrk-)" \
      wrk_run -s "$WORK/lua/put.lua" "$base/"
  elif [[ $w == *_one_url ]]; then
    wrk_run "$base$(head -n 1 "${LIST[$w]}")"
  else
    wrk_run -s "$WORK/lua/$w.lua" "$base/"
  fi
}

declare -A R
# record TOOL WORKLOAD SERVER LINES...: medians of columns, and per-core throughput
record() {
  local tool=$1 w=$2 s=$3; shift 3
  local col
  for col in 1 2 3 4; do
    R[$tool,$w,$s,$col]=$(printf '%s\n' "$@" | awk -v c=$col '{ print $c }' | median)
  done
  local body=0; [ "$w" = put_1MiB ] && body=$((1 << 20))
  R[$tool,$w,$s,5]=$(printf '%s\n' "$@" | awk -v b=$body '{ t = (b > 0 ? $1 * b : $2); print ($4 > 0 ? t / $4 : 0) }' | median)
  R[$tool,$w,$s,6]=$(printf '%s\n' "$@" | awk '{ print ($4 > 0 ? $1 / $4 : 0) }' | median)
  # wrk: body bytes per CPU-second of the whole machine (field 6), which does not
  # depend on which CPU the loopback's receive work lands on.
  [ "$tool" = wrk ] && R[$tool,$w,$s,7]=$(printf '%s\n' "$@" \
    | awk -v b=$body '{ t = (b > 0 ? $1 * b : $2); print ($6 > 0 ? t / $6 : 0) }' | median)
  [ "$tool" = wrk ] && R[$tool,$w,$s,8]=$(printf '%s\n' "$@" | awk '{ print $6 + 0 }' | median)
  [ "$w" = put_1MiB ] && R[$tool,$w,$s,2]=$(awk -v r="${R[$tool,$w,$s,1]}" 'BEGIN { print r * 1048576 }')
  return 0
}

# Both servers' bytes for PATH [RANGE], by curl: the same, and not empty.
same_bytes() {
  local h=() a b
  [ -n "${2:-}" ] && h=(-H "Range: bytes=$2")
  a=$(curl -sf "${h[@]}" "http://127.0.0.1:$RON_PORT$1" | md5sum) || return 1
  b=$(curl -sf "${h[@]}" "http://127.0.0.1:$NGINX_PORT$1" | md5sum) || return 1
  [ "$a" = "$b" ] && [ "$a" != "$(md5sum </dev/null)" ]
}

echo "== correctness: every body verified (${SECONDS}s)" >&2
for w in $WORKLOADS; do
  for s in ron nginx; do
    json=$WORK/json/verify-$s-$w.json
    extra=(--put-path /o)
    if [ $s = nginx ]; then
      extra=(--put-path '/put/obj-{n}')
      is_put "$w" && extra+=(--no-verify)
    fi
    # shellcheck disable=SC2086
    "$BENCH" run --target "127.0.0.1:$(port_of $s)" ${DATA[$w]} ${MODE[$w]} "${POP[@]}" "${extra[@]}" \
      --connections 8 --cpus 1 --duration 1 --warmup 0 --json "$json" >/dev/null \
      || { echo "verification failed: $s $w" >&2; exit 1; }
    checked=$(json_field "$json" "d['requests'] if d['unexpected_statuses'] + d['verify_failures'] == 0 else 0")
    [ "$checked" -gt 0 ] || { echo "verification failed: $s $w: $(json_field "$json" "d['statuses']"), \
$(json_field "$json" "d['verify_failures']") bad bodies" >&2; exit 1; }
    echo "   $w $s: $checked answers checked" >&2
  done
  if ! is_put "$w"; then
    first=$(head -n 1 "${LIST[$w]}"); last=$(tail -n 1 "${LIST[$w]}")
    size=$(flag "${DATA[$w]}" --size)
    if ! same_bytes "$first" || ! same_bytes "$last" "$((size / 3 + 1))-$((size / 3 + 65536))"; then
      echo "ron and nginx serve different bytes: $w" >&2; exit 1
    fi
  fi
done
echo "== correctness: wrk's scripts, every answer 2xx (${SECONDS}s)" >&2
for w in $WORKLOADS; do
  for s in ron nginx; do
    line=$(DURATION=1 CONNS=2 BIG_CONNS=2 wrk_for "$s" "$w" 2>/dev/null)
    read -r rps _ _ _ errors _ <<<"$line"
    awk -v r="$rps" -v e="$errors" 'BEGIN { exit !(e == 0 && r > 0) }' \
      || { echo "wrk failed: $s $w: $rps req/s, $errors errors" >&2; exit 1; }
  done
done

echo "== peak runs (ron-bench, wrk), $RUNS x ${DURATION}s each (${SECONDS}s)" >&2
for w in $WORKLOADS; do
  for s in ron nginx; do
    lines=()
    for i in $(seq 1 "$RUNS"); do lines+=("$(ron_bench $s "$w" "$WORK/json/peak-$s-$w-$i.json" --no-verify)"); done
    record ron-bench "$w" $s "${lines[@]}"
    lines=()
    for i in $(seq 1 "$RUNS"); do lines+=("$(wrk_for $s "$w")"); done
    record wrk "$w" $s "${lines[@]}"
  done
done

rate=$(awk -v r="${R[wrk,get_4KiB,nginx,1]:-0}" 'BEGIN { printf "%d", r / 2 }')
declare -A OPEN
if [ "$rate" -gt 0 ]; then
echo "== equal load: open loop at $rate req/s (half of nginx's get_4KiB peak under wrk) (${SECONDS}s)" >&2
for s in ron nginx; do
  lines=()
  for i in $(seq 1 "$RUNS"); do
    lines+=("$(ron_bench $s get_4KiB "$WORK/json/open-$s-$i.json" --no-verify --rate "$rate")")
  done
  OPEN[$s,rps]=$(printf '%s\n' "${lines[@]}" | awk '{ print $1 }' | median)
  OPEN[$s,p50]=$(printf '%s\n' "${lines[@]}" | awk '{ print $5 }' | median)
  OPEN[$s,p99]=$(printf '%s\n' "${lines[@]}" | awk '{ print $3 }' | median)
  OPEN[$s,p999]=$(printf '%s\n' "${lines[@]}" | awk '{ print $6 }' | median)
  OPEN[$s,busy]=$(printf '%s\n' "${lines[@]}" | awk '{ print $4 }' | median)
done
fi

# 4. with PROFILE=1: where the server's core goes per request, ron and nginx under the
#    same ron-bench load (one run each): CPU 0 sampled system-wide (`perf record -C 0
#    -g`, software clock) in the middle of the run, buckets by bench/cpu_split.py.
declare -A SPLIT
if [ "${PROFILE:-0}" = 1 ]; then
  need perf || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null; }
  hz=999
  echo "== profiles of CPU 0 per request (${SECONDS}s)" >&2
  for w in $WORKLOADS; do
    is_put "$w" && continue
    for tool in ${PROFILE_TOOLS:-ron-bench}; do
      for s in ron nginx; do
        out=$WORK/json/profile-$tool-$s-$w
        if [ "$tool" = wrk ]; then
          wrk_for $s "$w" >"$out.txt" 2>/dev/null &
          lead=1
        else
          ron_bench $s "$w" "$out.json" --no-verify >/dev/null &
          lead=$(awk -v w="$WARMUP" 'BEGIN { print w + 1 }')
        fi
        bench=$!
        sleep "$lead"
        window=$(awk -v d="$DURATION" 'BEGIN { print d - 2 }')
        perf record -C 0 -e cpu-clock -F $hz -g -o "$out.data" -- sleep "$window" 2>/dev/null >&2
        wait $bench
        if [ "$tool" = wrk ]; then
          requests=$(awk -v w="$window" '{ print $1 * w }' "$out.txt")
        else
          requests=$(json_field "$out.json" "d['req_per_s'] * $window")
        fi
        SPLIT[$tool,$s,$w]=$(perf script -i "$out.data" -F comm,ip,sym,dso 2>/dev/null \
          | python3 bench/cpu_split.py --server "$s" --hz $hz \
              --requests "$requests" --label "$s $w under $tool")
      done
    done
  done
fi

echo
echo "machine: $(nproc) CPUs, $(awk -F: '/model name/ { print $2; exit }' /proc/cpuinfo | xargs), kernel $(uname -r)"
echo "congestion control: $(sysctl -n net.ipv4.tcp_congestion_control); $RUNS runs x ${DURATION}s (+${WARMUP}s warm-up for ron-bench), $CONNS connections ($BIG_CONNS for get_256MiB), generators on CPU 1, servers on CPU 0; took ${SECONDS}s"
echo "nginx $(nginx -v 2>&1 | sed 's/.*\///'), wrk $(wrk -v 2>&1 | awk 'NR == 1 { print $2 }'), ron $(git rev-parse --short HEAD) at $RON, ron --cache-bytes $CACHE"
echo
echo "workloads ($(dist_text) popularity over each dataset, the same URLs and ranges for ron-bench and wrk):"
for w in $WORKLOADS; do printf '  %-17s %s\n' "$w" "${DESC[$w]}"; done
for tool in ron-bench wrk; do
  echo
  echo "$tool (medians):"
  printf '| workload | server | req/s | MB/s | p99 ms | server CPU busy | req/s per busy core | MB/s per busy core |\n'
  printf '|---|---|---:|---:|---:|---:|---:|---:|\n'
  for w in $WORKLOADS; do
    for s in ron nginx; do
      awk -v w="$w" -v s=$s -v r="${R[$tool,$w,$s,1]}" -v b="${R[$tool,$w,$s,2]}" -v p="${R[$tool,$w,$s,3]}" \
          -v u="${R[$tool,$w,$s,4]}" -v pc="${R[$tool,$w,$s,5]}" -v rc="${R[$tool,$w,$s,6]}" \
        'function n(x) { return sprintf(x < 100 ? "%.1f" : "%.0f", x) }
         BEGIN { printf "| %s | %s | %s | %.0f | %.2f | %.0f %% | %s | %.0f |\n",
                 w, s, n(r), b / 1048576, p / 1000, u * 100, n(rc), pc / 1048576 }'
    done
  done
done
echo
echo "wrk, the whole machine (both CPUs: server, wrk, and the loopback's receive work wherever it ran):"
printf '| workload | server | CPUs busy | MB/s per busy CPU |\n|---|---|---:|---:|\n'
for w in $WORKLOADS; do
  for s in ron nginx; do
    awk -v w="$w" -v s=$s -v u="${R[wrk,$w,$s,8]:-0}" -v t="${R[wrk,$w,$s,7]:-0}" \
      'BEGIN { printf "| %s | %s | %.2f | %.0f |\n", w, s, u, t / 1048576 }'
  done
done
[ "$rate" -gt 0 ] && {
echo
echo "equal load, open loop (ron-bench --rate $rate, latency from intended send time, medians):"
printf '| server | achieved req/s | p50 ms | p99 ms | p99.9 ms | server CPU busy |\n|---|---:|---:|---:|---:|---:|\n'
for s in ron nginx; do
  awk -v s=$s -v r="${OPEN[$s,rps]}" -v a="${OPEN[$s,p50]}" -v b="${OPEN[$s,p99]}" -v c="${OPEN[$s,p999]}" -v u="${OPEN[$s,busy]}" \
    'BEGIN { printf "| %s | %.0f | %.3f | %.3f | %.3f | %.0f %% |\n", s, r, a / 1000, b / 1000, c / 1000, u * 100 }'
done
}
echo
echo "ron / nginx:"
printf '| workload | req/s (ron-bench) | req/s (wrk) | per-core throughput (ron-bench) | per-core throughput (wrk) | per machine-CPU throughput (wrk) | p99 (wrk) |\n|---|---:|---:|---:|---:|---:|---:|\n'
for w in $WORKLOADS; do
  awk -v w="$w" -v a="${R[ron-bench,$w,ron,1]}" -v b="${R[ron-bench,$w,nginx,1]}" -v c="${R[wrk,$w,ron,1]}" \
      -v d="${R[wrk,$w,nginx,1]}" -v e="${R[ron-bench,$w,ron,5]}" -v f="${R[ron-bench,$w,nginx,5]}" \
      -v g="${R[wrk,$w,ron,5]}" -v h="${R[wrk,$w,nginx,5]}" -v i="${R[wrk,$w,ron,3]}" -v j="${R[wrk,$w,nginx,3]}" \
      -v k="${R[wrk,$w,ron,7]:-0}" -v l="${R[wrk,$w,nginx,7]:-0}" \
    'function q(x, y) { return y > 0 ? x / y : 0 }
     BEGIN { printf "| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", w, q(a, b), q(c, d), q(e, f), q(g, h), q(k, l), q(i, j) }'
done
if [ "$rate" -gt 0 ]; then
  awk -v a="${OPEN[ron,p99]}" -v b="${OPEN[nginx,p99]}" 'BEGIN { printf "| get_4KiB at equal load | p99 %.2f |\n", (b > 0 ? a / b : 0) }'
fi
if [ "${PROFILE:-0}" = 1 ]; then
  echo
  echo "CPU 0 per request, by bucket (bench/cpu_split.py; one run each):"
  for w in $WORKLOADS; do
    is_put "$w" && continue
    for tool in ${PROFILE_TOOLS:-ron-bench}; do
      for s in ron nginx; do echo "${SPLIT[$tool,$s,$w]}"; done
    done
  done
fi
