#!/usr/bin/env bash
# Side-by-side: ron vs nginx on the same files, server pinned to CPU 0 (nginx: 1 worker,
# sendfile on, tcp_nopush off, open_file_cache on, access log off; ron: --shards 1),
# wrk pinned to CPU 1.
# Workloads: 4 KiB GET, 1 MiB GET, random 64 KiB ranges of a 64 MiB object, 1 MiB PUT.
# Prints, per workload, the median of RUNS runs: req/s, throughput, p99, the server
# CPU's busy share, and throughput per busy server core; then ron/nginx ratios.
#
#   bash bench/compare.sh            # RUNS=3 DURATION=10 by default
#   RUNS=5 DURATION=15 bash bench/compare.sh
#
# Installs nginx and wrk from the distribution if missing. Talks to 127.0.0.1 only.
# Stops what it started (by PID). Needs `cargo build --release -p ron-engine` first
# (it runs that build itself if target/release/ron is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
RON_PORT=${RON_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}
WORK=${WORK:-/tmp/ron-compare}
RON=target/release/ron

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq nginx-light wrk >/dev/null
fi
[ -x "$RON" ] || cargo build --release -p ron-engine

rm -rf "$WORK"; mkdir -p "$WORK/www/o" "$WORK/www/put" "$WORK/nginx" "$WORK/lua"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# Dataset: the same bytes for both servers.
head -c 4096 /dev/urandom > "$WORK/small.bin"
head -c $((1 << 20)) /dev/urandom > "$WORK/large.bin"
head -c $((64 << 20)) /dev/urandom > "$WORK/huge.bin"

taskset -c 0 "$RON" serve --shards 1 --data-dir "$WORK/ron-data" --http "127.0.0.1:$RON_PORT" \
  --admin 127.0.0.1:18600 --cache-bytes 512MiB >"$WORK/ron.log" 2>&1 &
ron_pid=$!; pids+=("$ron_pid")
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:18600/readyz" >/dev/null && break; sleep 0.1; done

declare -A addr
for f in small large huge; do
  a=$(curl -sf -T "$WORK/$f.bin" "http://127.0.0.1:$RON_PORT/o" | sed -E 's/.*"obj":"([^"]+)".*/\1/')
  addr[$f]=$a
  cp "$WORK/$f.bin" "$WORK/www/o/$a"   # nginx serves the same path /o/b3:<hex>
done
sync

cat > "$WORK/nginx/nginx.conf" <<EOF
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
  open_file_cache max=10000 inactive=60s;   # nginx's own metadata cache: a fair match for ron's
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
nginx_master=$!; pids+=("$nginx_master")
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
wrk.method = "PUT"
wrk.body = f:read("*a")
f:close()
EOF

# Busy and total jiffies of CPU 0 (the server's CPU), from /proc/stat: this counts the
# softirq network work done on that CPU, which a process's own CPU time does not.
cpu0_jiffies() {
  awk '$1 == "cpu0" { busy = $2 + $3 + $4 + $7 + $8 + $9; total = busy + $5 + $6; print busy, total }' /proc/stat
}
nginx_worker() { pgrep -P "$nginx_master" | head -1; }

# run NAME URL [wrk args...] -> one line: reqs bytes_per_s p99_ms busy
run_wrk() {
  shift # the server's pid: busy share is read for its CPU, not the process
  local before after out
  before=$(cpu0_jiffies)
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$@" 2>&1)
  after=$(cpu0_jiffies)
  local rps bps p99
  rps=$(echo "$out" | awk '/Requests\/sec/ { print $2 }')
  bps=$(echo "$out" | awk '/Transfer\/sec/ { v=$2; u=substr(v, length(v)-1); n=v+0;
        if (u=="GB") n*=1073741824; else if (u=="MB") n*=1048576; else if (u=="KB") n*=1024; print n }')
  p99=$(echo "$out" | awk '$1=="99%" { v=$2; n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n*=1; else if (v ~ /s$/) n*=1000; print n }')
  local errors
  errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ { print }' | tr '\n' ' ')
  [ -n "$errors" ] && echo "  wrk reported: $errors" >&2
  local busy
  busy=$(echo "$before $after" | awk '{ printf "%.3f", ($3 - $1) / ($4 - $2) }')
  echo "$rps $bps $p99 $busy"
}

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

declare -A result
bench() {
  local workload=$1 server=$2 pid=$3; shift 3
  local lines=()
  for _ in $(seq 1 "$RUNS"); do lines+=("$(run_wrk "$pid" "$@")"); done
  local col
  for col in 1 2 3 4; do
    result[$workload,$server,$col]=$(printf '%s\n' "${lines[@]}" | awk -v c=$col '{ print $c }' | median)
  done
  # per-core throughput = bytes/s ÷ busy share, taken per run, then the median
  result[$workload,$server,5]=$(printf '%s\n' "${lines[@]}" | awk '{ if ($4 > 0) print $2 / $4; else print 0 }' | median)
  if [ -n "${BODY_BYTES:-}" ]; then # uploads: wrk counts response bytes; use req/s x body
    result[$workload,$server,2]=$(awk -v r="${result[$workload,$server,1]}" -v b="$BODY_BYTES" 'BEGIN { print r * b }')
    result[$workload,$server,5]=$(printf '%s\n' "${lines[@]}" | awk -v b="$BODY_BYTES" '{ if ($4 > 0) print $1 * b / $4; else print 0 }' | median)
  fi
  result[$workload,$server,6]=$(printf '%s\n' "${lines[@]}" | awk '{ if ($4 > 0) print $1 / $4; else print 0 }' | median)
}

worker=$(nginx_worker)
# Warm both (page cache for nginx, verified-group cache for ron).
for f in small large huge; do
  curl -sf "http://127.0.0.1:$RON_PORT/o/${addr[$f]}" >/dev/null
  curl -sf "http://127.0.0.1:$NGINX_PORT/o/${addr[$f]}" >/dev/null
done

for server in ron nginx; do
  if [ $server = ron ]; then port=$RON_PORT; pid=$ron_pid; else port=$NGINX_PORT; pid=$worker; fi
  base="http://127.0.0.1:$port"
  bench get_4KiB $server "$pid" "$base/o/${addr[small]}"
  bench get_1MiB $server "$pid" "$base/o/${addr[large]}"
  OBJ_SIZE=$((64 << 20)) bench range_64KiB $server "$pid" -s "$WORK/lua/range.lua" "$base/o/${addr[huge]}"
  if [ $server = ron ]; then put_url="$base/o"; else put_url="$base/put/object"; fi
  BODY_BYTES=$((1 << 20)) PUT_FILE="$WORK/large.bin" bench put_1MiB $server "$pid" -s "$WORK/lua/put.lua" "$put_url"
done

echo
echo "machine: $(nproc) CPUs, $(awk -F: '/model name/ { print $2; exit }' /proc/cpuinfo | xargs), kernel $(uname -r)"
echo "congestion control: $(sysctl -n net.ipv4.tcp_congestion_control); runs: $RUNS x ${DURATION}s; wrk -t1 -c$CONNS on CPU 1; servers on CPU 0"
echo "nginx: $(nginx -v 2>&1 | sed 's/.*\///'); wrk: $(wrk -v 2>&1 | head -1 | awk '{ print $2 }'); ron: $(git rev-parse --short HEAD)"
echo
printf '| workload | server | req/s | MB/s | p99 ms | server CPU busy | req/s per busy core | MB/s per busy core |\n'
printf '|---|---|---:|---:|---:|---:|---:|---:|\n'
for w in get_4KiB get_1MiB range_64KiB put_1MiB; do
  for s in ron nginx; do
    awk -v w=$w -v s=$s -v r="${result[$w,$s,1]}" -v b="${result[$w,$s,2]}" -v p="${result[$w,$s,3]}" \
        -v u="${result[$w,$s,4]}" -v pc="${result[$w,$s,5]}" -v rc="${result[$w,$s,6]}" \
      'BEGIN { printf "| %s | %s | %.0f | %.0f | %.2f | %.0f %% | %.0f | %.0f |\n", w, s, r, b / 1048576, p, u * 100, rc, pc / 1048576 }'
  done
done
echo
printf '| workload | req/s ron/nginx | p99 ron/nginx | per-core throughput ron/nginx |\n|---|---:|---:|---:|\n'
for w in get_4KiB get_1MiB range_64KiB put_1MiB; do
  awk -v w=$w -v r1="${result[$w,ron,1]}" -v r2="${result[$w,nginx,1]}" -v p1="${result[$w,ron,3]}" \
      -v p2="${result[$w,nginx,3]}" -v c1="${result[$w,ron,5]}" -v c2="${result[$w,nginx,5]}" \
    'BEGIN { printf "| %s | %.2f | %.2f | %.2f |\n", w, (r2 > 0 ? r1 / r2 : 0), (p2 > 0 ? p1 / p2 : 0), (c2 > 0 ? c1 / c2 : 0) }'
done
