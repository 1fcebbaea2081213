#!/usr/bin/env bash
# ron vs nginx, side by side, on one dataset.
#
#   bash bench/compare.sh                  # RUNS=3 DURATION=6: about 8 minutes
#   RUNS=5 DURATION=10 bash bench/compare.sh
#   ONLY="get_4KiB put_1MiB" bash bench/compare.sh   # a subset of the workloads
#
# Servers pinned to CPU 0 (nginx: 1 worker, sendfile on, tcp_nopush off,
# open_file_cache on, access log off; ron: --shards 1), load generators pinned to CPU 1.
# Dataset: ron-bench's deterministic objects, uploaded to ron and written as files for
# nginx at the same URLs (/o/b3:<hex>).
#
# 1. correctness: a short ron-bench run per workload and server with every body verified
#    (whole objects against their address, ranges byte for byte, ron's PUT replies
#    against the address of what was sent; nginx's dav names nothing, so its PUTs are
#    checked by status only); any failure stops here;
# 2. peak: RUNS runs per workload, server and tool (ron-bench --no-verify over the whole
#    dataset, uniform; wrk on one object's URL); medians;
# 3. equal load: ron-bench open loop at the same fixed rate on both servers (half of
#    nginx's peak 4 KiB rate), latency from the intended send time; medians.
# Prints the machine, versions, a table per tool and the ron/nginx ratios.
# Installs nginx and wrk if missing, builds release binaries if missing, talks only to
# 127.0.0.1, stops what it started (by PID).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-64}
RON_PORT=${RON_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}
ADMIN_PORT=${ADMIN_PORT:-18600}
WORK=${WORK:-/tmp/ron-compare}
RON=target/release/ron
BENCH=target/release/ron-bench

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq nginx-light wrk >/dev/null
fi
[ -x "$RON" ] && [ -x "$BENCH" ] || cargo build --release -p ron-engine -p ron-bench

rm -rf "$WORK"; mkdir -p "$WORK/www" "$WORK/nginx" "$WORK/lua" "$WORK/json"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# shellcheck source=workloads.sh
source bench/workloads.sh
WORKLOADS=${ONLY:-$WORKLOADS}

taskset -c 0 "$RON" serve --shards 1 --data-dir "$WORK/ron-data" --http "127.0.0.1:$RON_PORT" \
  --admin "127.0.0.1:$ADMIN_PORT" --cache-bytes 512MiB >"$WORK/ron.log" 2>&1 &
ron_pid=$!; pids+=("$ron_pid")
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null && break; sleep 0.1; done

for w in get_4KiB get_1MiB range_64KiB; do
  # shellcheck disable=SC2086
  "$BENCH" dataset --dir "$WORK/www" ${DATA[$w]}
  # shellcheck disable=SC2086
  "$BENCH" run --target "127.0.0.1:$RON_PORT" --load ${DATA[$w]} --duration 0.2 --warmup 0 \
    --connections 1 --cpus 1 >/dev/null
done
sync

cat > "$WORK/nginx/nginx.conf" <<EOF
user $(id -un) $(id -gn);
worker_processes 1;
worker_cpu_affinity 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush off;
  tcp_nodelay on;
  keepalive_requests 10000000;
  keepalive_timeout 75s;
  open_file_cache max=10000 inactive=60s;
  default_type application/octet-stream;
  client_body_temp_path $WORK/nginx/body;
  client_max_body_size 2g;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $WORK/www;
    location /put/ { dav_methods PUT; create_full_put_path on; }
  }
}
EOF
taskset -c 0 nginx -c "$WORK/nginx/nginx.conf" -g 'daemon off;' >"$WORK/nginx.log" 2>&1 &
pids+=("$!")
sleep 0.5

cat > "$WORK/lua/range.lua" <<'EOF'
local size = tonumber(os.getenv("OBJ_SIZE"))
math.randomseed(42)
request = function()
  local first = math.random(0, size - 65536)
  return wrk.format("GET", nil, { ["Range"] = "bytes=" .. first .. "-" .. (first + 65535) })
end
EOF
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

# Busy and total jiffies of CPU 0 from /proc/stat: includes the softirq network work on
# the server's CPU, which a process's own CPU time misses.
cpu0() { awk '$1 == "cpu0" { b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6 }' /proc/stat; }
busy_share() { echo "$1 $2" | awk '{ printf "%.3f", ($3 - $1) / ($4 - $2) }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
json_field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$1" "$2"; }
port_of() { [ "$1" = ron ] && echo "$RON_PORT" || echo "$NGINX_PORT"; }

# ron-bench once: prints "req/s body_bytes/s p99_us busy p50_us p999_us"
ron_bench() {
  local server=$1 w=$2 json=$3; shift 3
  local put_path=/o; [ "$server" = nginx ] && put_path='/put/obj-{n}'
  local before after
  before=$(cpu0)
  # shellcheck disable=SC2086
  "$BENCH" run --target "127.0.0.1:$(port_of "$server")" ${DATA[$w]} ${MODE[$w]} --put-path "$put_path" \
    --connections "$CONNS" --cpus 1 --duration "$DURATION" --warmup "$WARMUP" --json "$json" "$@" >/dev/null
  after=$(cpu0)
  local errors
  errors=$(json_field "$json" "d['unexpected_statuses'] + d['io_errors'] + d['verify_failures']")
  [ "$errors" = 0 ] || echo "  ron-bench $server $w: $errors errors ($(json_field "$json" "d['statuses']"))" >&2
  echo "$(json_field "$json" "d['req_per_s']") $(json_field "$json" "d['body_bytes_per_s']") \
$(json_field "$json" "d['latency_us']['p99']") $(busy_share "$before" "$after") \
$(json_field "$json" "d['latency_us']['p50']") $(json_field "$json" "d['latency_us']['p99_9']")"
}

# wrk once: prints "req/s body_bytes/s p99_us busy"
wrk_run() {
  local before after out
  before=$(cpu0)
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$@" 2>&1)
  after=$(cpu0)
  echo "$out" | grep -E 'Non-2xx|Socket errors' >&2 || true
  local rps bps p99
  rps=$(echo "$out" | awk '/Requests\/sec/ { print $2 }')
  bps=$(echo "$out" | awk '/Transfer\/sec/ { v = $2; n = v + 0; if (v ~ /GB$/) n *= 1073741824;
        else if (v ~ /MB$/) n *= 1048576; else if (v ~ /KB$/) n *= 1024; print n }')
  p99=$(echo "$out" | awk '$1 == "99%" { v = $2; n = v + 0; if (v ~ /us$/) n *= 1; else if (v ~ /ms$/) n *= 1000;
        else if (v ~ /s$/) n *= 1000000; print n }')
  echo "$rps $bps $p99 $(busy_share "$before" "$after")"
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
  [ "$w" = put_1MiB ] && R[$tool,$w,$s,2]=$(awk -v r="${R[$tool,$w,$s,1]}" 'BEGIN { print r * 1048576 }')
  return 0
}

echo "== correctness: every body verified" >&2
for w in $WORKLOADS; do
  for s in ron nginx; do
    # shellcheck disable=SC2086
    "$BENCH" run --target "127.0.0.1:$(port_of $s)" ${DATA[$w]} ${MODE[$w]} \
      --put-path "$([ $s = ron ] && echo /o || echo '/put/obj-{n}')" --connections 8 --cpus 1 \
      --duration 1 --warmup 0.2 --json "$WORK/json/verify-$s-$w.json" \
      $([ $s = nginx ] && [ $w = put_1MiB ] && echo --no-verify) >/dev/null \
      || { echo "verification failed: $s $w" >&2; exit 1; }
  done
done

echo "== peak runs (ron-bench, wrk), $RUNS x ${DURATION}s each" >&2
for w in $WORKLOADS; do
  for s in ron nginx; do
    lines=()
    for i in $(seq 1 "$RUNS"); do lines+=("$(ron_bench $s $w "$WORK/json/peak-$s-$w-$i.json" --no-verify)"); done
    record ron-bench $w $s "${lines[@]}"
    url_obj=$(ls -S "$WORK/www/o" | awk 'NR == 1') # the largest: the 64 MiB range object
    case $w in
      get_4KiB) url_obj=$(find "$WORK/www/o" -size 4096c -printf '%f\n' | sort | awk 'NR == 1') ;;
      get_1MiB) url_obj=$(find "$WORK/www/o" -size 1048576c -printf '%f\n' | sort | awk 'NR == 1') ;;
    esac
    base="http://127.0.0.1:$(port_of $s)"
    lines=()
    for i in $(seq 1 "$RUNS"); do
      case $w in
        range_64KiB) lines+=("$(OBJ_SIZE=$((64 << 20)) wrk_run -s "$WORK/lua/range.lua" "$base/o/$url_obj")") ;;
        put_1MiB) lines+=("$(PUT_FILE="$WORK/put.bin" PUT_BASE="$([ $s = ron ] && echo /o || echo /put/wrk-)" \
                      wrk_run -s "$WORK/lua/put.lua" "$base/")") ;;
        *) lines+=("$(wrk_run "$base/o/$url_obj")") ;;
      esac
    done
    record wrk $w $s "${lines[@]}"
  done
done

rate=$(awk -v r="${R[wrk,get_4KiB,nginx,1]:-0}" 'BEGIN { printf "%d", r / 2 }')
declare -A OPEN
if [ "$rate" -gt 0 ]; then
echo "== equal load: open loop at $rate req/s (half of nginx's 4 KiB peak under wrk)" >&2
for s in ron nginx; do
  lines=()
  for i in $(seq 1 "$RUNS"); do lines+=("$(ron_bench $s get_4KiB "$WORK/json/open-$s-$i.json" --no-verify --rate "$rate")"); done
  OPEN[$s,rps]=$(printf '%s\n' "${lines[@]}" | awk '{ print $1 }' | median)
  OPEN[$s,p50]=$(printf '%s\n' "${lines[@]}" | awk '{ print $5 }' | median)
  OPEN[$s,p99]=$(printf '%s\n' "${lines[@]}" | awk '{ print $3 }' | median)
  OPEN[$s,p999]=$(printf '%s\n' "${lines[@]}" | awk '{ print $6 }' | median)
  OPEN[$s,busy]=$(printf '%s\n' "${lines[@]}" | awk '{ print $4 }' | median)
done
fi

echo
echo "machine: $(nproc) CPUs, $(awk -F: '/model name/ { print $2; exit }' /proc/cpuinfo | xargs), kernel $(uname -r)"
echo "congestion control: $(sysctl -n net.ipv4.tcp_congestion_control); $RUNS runs x ${DURATION}s (+${WARMUP}s warm-up for ron-bench), $CONNS connections, generators on CPU 1, servers on CPU 0"
echo "nginx $(nginx -v 2>&1 | sed 's/.*\///'), wrk $(wrk -v 2>&1 | awk 'NR == 1 { print $2 }'), ron $(git rev-parse --short HEAD)"
for tool in ron-bench wrk; do
  echo
  echo "$tool (medians):"
  printf '| workload | server | req/s | MB/s | p99 ms | server CPU busy | req/s per busy core | MB/s per busy core |\n'
  printf '|---|---|---:|---:|---:|---:|---:|---:|\n'
  for w in $WORKLOADS; do
    for s in ron nginx; do
      awk -v w=$w -v s=$s -v r="${R[$tool,$w,$s,1]}" -v b="${R[$tool,$w,$s,2]}" -v p="${R[$tool,$w,$s,3]}" \
          -v u="${R[$tool,$w,$s,4]}" -v pc="${R[$tool,$w,$s,5]}" -v rc="${R[$tool,$w,$s,6]}" \
        'BEGIN { printf "| %s | %s | %.0f | %.0f | %.2f | %.0f %% | %.0f | %.0f |\n",
                 w, s, r, b / 1048576, p / 1000, u * 100, rc, pc / 1048576 }'
    done
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
printf '| workload | req/s (ron-bench) | req/s (wrk) | per-core throughput (ron-bench) | per-core throughput (wrk) | p99 (wrk) |\n|---|---:|---:|---:|---:|---:|\n'
for w in $WORKLOADS; do
  awk -v w=$w -v a="${R[ron-bench,$w,ron,1]}" -v b="${R[ron-bench,$w,nginx,1]}" -v c="${R[wrk,$w,ron,1]}" \
      -v d="${R[wrk,$w,nginx,1]}" -v e="${R[ron-bench,$w,ron,5]}" -v f="${R[ron-bench,$w,nginx,5]}" \
      -v g="${R[wrk,$w,ron,5]}" -v h="${R[wrk,$w,nginx,5]}" -v i="${R[wrk,$w,ron,3]}" -v j="${R[wrk,$w,nginx,3]}" \
    'function q(x, y) { return y > 0 ? x / y : 0 }
     BEGIN { printf "| %s | %.2f | %.2f | %.2f | %.2f | %.2f |\n", w, q(a, b), q(c, d), q(e, f), q(g, h), q(i, j) }'
done
if [ "$rate" -gt 0 ]; then
  awk -v a="${OPEN[ron,p99]}" -v b="${OPEN[nginx,p99]}" 'BEGIN { printf "| get_4KiB at equal load | p99 %.2f |\n", (b > 0 ? a / b : 0) }'
fi
