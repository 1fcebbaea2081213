#!/usr/bin/env bash
# Per-core efficiency on both cores: `ron serve --shards 2` against nginx with 2 workers,
# loaded the same way (issue 39, item 4): CPU per request, both sides.
#
#   bash bench/two_cores.sh                 # RUNS=3 DURATION=6: about 3 minutes
#   ONLY=get_1MiB RUNS=5 bash bench/two_cores.sh
#
# Servers: ron with --shards 2 (one shard pinned per CPU, each owning half the partitions,
# so about half the objects a connection asks for are owned by the other shard);
# nginx 1 master + 2 workers (worker_cpu_affinity auto), otherwise as in
# bench/compare.sh. Load: ron-bench --cpus 0,1 --connections 64, unpinned, sharing the two
# CPUs with the server (the machine has no third core); the same URL lists and seeds for
# both servers. Every run is preceded by a warm-up pass (caches full). Per run:
#   - server CPU: the run time of every thread of the server (ron: its shards, their
#     blocking pools, control and admin; nginx: master and workers), from
#     /proc/PID/task/*/schedstat, over the measured window;
#   - machine CPU: both CPUs' busy time from /proc/stat over the window (server,
#     generator and the softirq work the kernel does for both);
#   - requests: those ron-bench counted in the window.
# Prints µs per request (medians of RUNS) and the ratio ron / nginx (lower is better).
# Workloads (bench/workloads.sh): get_4KiB, get_1MiB by default (ONLY to choose).
# Variables: RUNS DURATION ONLY RON BENCH WORK PORT.
# Talks only to 127.0.0.1, stops what it started (by PID).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-6}
RON=${RON:-target/release/ron}
BENCH=${BENCH:-target/release/ron-bench}
WORK=${WORK:-/tmp/ron-two-cores}
PORT=${PORT:-18580}
NGINX_PORT=$((PORT + 1))
ADMIN=$((PORT + 2))
command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; }
if [ ! -x "$RON" ] || [ ! -x "$BENCH" ]; then cargo build --release -p ron-engine -p ron-bench; fi

pids=()
# shellcheck source=workloads.sh
source bench/workloads.sh
trap stop_started EXIT
WORKLOADS=${ONLY:-"get_4KiB get_1MiB"}

rm -rf "$WORK"; mkdir -p "$WORK/www" "$WORK/nginx"
"$RON" serve --shards 2 --data-dir "$WORK/ron-data" --http "127.0.0.1:$PORT" \
  --oap "127.0.0.1:$((PORT + 3))" --admin "127.0.0.1:$ADMIN" --cache-bytes 2GiB >"$WORK/ron.log" 2>&1 &
ron_pid=$!; pids+=("$ron_pid")
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null || { echo "ron did not get ready" >&2; exit 1; }
# The scrubber runs on ron's threads and both CPUs: paused, so neither server pays for it.
curl -sf -X POST "http://127.0.0.1:$ADMIN/admin/scrub/pause" >/dev/null
for w in $WORKLOADS; do
  # shellcheck disable=SC2086
  "$BENCH" dataset --dir "$WORK/www" ${DATA[$w]}
  # shellcheck disable=SC2086
  "$BENCH" run --target "127.0.0.1:$PORT" --load ${DATA[$w]} --duration 0.2 --warmup 0 \
    --connections 1 --cpus 1 >/dev/null
done
nginx_config "$WORK/nginx" "$WORK/www" "$NGINX_PORT" 2 auto 10000 >"$WORK/nginx/nginx.conf"
nginx -c "$WORK/nginx/nginx.conf" -g 'daemon off;' >"$WORK/nginx.log" 2>&1 &
nginx_pid=$!; pids+=("$nginx_pid")
sleep 1

# Run time of every thread of process $1 and its children (nginx's workers), ns.
tree_ns() {
  local p all
  all="$1 $(pgrep -P "$1" | tr '\n' ' ')"
  for p in $all; do cat /proc/"$p"/task/*/schedstat 2>/dev/null; done | awk '{ s += $1 } END { printf "%.0f", s }'
}
# Busy and total jiffies of all CPUs.
cpus() { awk '$1 == "cpu" { b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6 }' /proc/stat; }

: >"$WORK/runs.txt"
for w in $WORKLOADS; do
  for _ in $(seq 1 "$RUNS"); do
    for server in ron nginx; do
      if [ $server = ron ]; then port=$PORT; pid=$ron_pid; else port=$NGINX_PORT; pid=$nginx_pid; fi
      # shellcheck disable=SC2086
      "$BENCH" run --target "127.0.0.1:$port" ${DATA[$w]} ${MODE[$w]} --no-verify \
        --duration 1 --warmup 0 --connections 64 --cpus 0,1 >/dev/null
      # shellcheck disable=SC2086
      "$BENCH" run --target "127.0.0.1:$port" ${DATA[$w]} ${MODE[$w]} --no-verify \
        --duration "$DURATION" --warmup 1 --connections 64 --cpus 0,1 >"$WORK/run.txt" &
      load=$!
      sleep 1
      s0=$(tree_ns "$pid"); c0=$(cpus)
      sleep "$DURATION"
      s1=$(tree_ns "$pid"); c1=$(cpus)
      wait "$load"
      n=$(awk '$1 == "requests" { print $2; exit }' "$WORK/run.txt")
      [ "${n:-0}" -gt 0 ] || { echo "$server $w: no requests counted" >&2; cat "$WORK/run.txt" >&2; exit 1; }
      echo "$w $server $n $(( (s1 - s0) / n )) $(echo "$c0 $c1" | awk -v n="$n" -v hz="$(getconf CLK_TCK)" '{ printf "%d", ($3 - $1) / hz * 1e9 / n }')" >>"$WORK/runs.txt"
    done
  done
done

echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"
echo "ron $(git rev-parse --short HEAD 2>/dev/null || echo '?') at $RON --shards 2; nginx $(nginx -v 2>&1 | cut -d/ -f2), 2 workers; ron-bench --cpus 0,1 --connections 64; $RUNS runs x ${DURATION}s, medians"
echo "| workload | server | requests in window | server CPU µs per request | machine CPU µs per request |"
echo "|---|---|---:|---:|---:|"
for w in $WORKLOADS; do
  for server in ron nginx; do
    row=$(awk -v w="$w" -v s="$server" '$1 == w && $2 == s' "$WORK/runs.txt")
    echo "| $w | $server | $(echo "$row" | awk '{ print $3 }' | median) | $(echo "$row" | awk '{ print $4 / 1000 }' | median) | $(echo "$row" | awk '{ print $5 / 1000 }' | median) |"
  done
done
echo "ron / nginx, CPU per request (lower is better for ron):"
for w in $WORKLOADS; do
  r() { awk -v w="$w" -v s="$1" -v c="$2" '$1 == w && $2 == s { print $c }' "$WORK/runs.txt" | median; }
  echo "  $w: server $(awk -v a="$(r ron 4)" -v b="$(r nginx 4)" 'BEGIN { printf "%.2f", a / b }'), machine $(awk -v a="$(r ron 5)" -v b="$(r nginx 5)" 'BEGIN { printf "%.2f", a / b }')"
done
