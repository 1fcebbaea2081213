#!/usr/bin/env bash
# What an answer costs a server that is not saturated (issue 54): ron --shards S and
# nginx with S workers (SHARDS, default 1), each on CPUs 0..S-1, ron-bench on the CPUs
# after them (on a machine with no CPU left over, the last server CPU, shared) at fixed
# open-loop rates, the two servers alternating. Where CDN edges and public nodes mostly run, a
# server sleeps between requests, and what a sleep costs shows here and not in a
# saturated benchmark.
#
#   bash bench/partial_load.sh                         # RATES="20000 60000", 4 KiB GETs
#   RATES="10000 30000" ROUNDS=3 WORKLOAD=range_64KiB bash bench/partial_load.sh
#   SHARDS=2 RATES=10000 WORKLOAD=range_64KiB bash bench/partial_load.sh   # a mesh to cross
#
# Per run, over MEASURE_S seconds in the middle of the load: the server's own CPU time
# (its threads' schedstat, nginx's workers included) per answer, and its sleeps per
# answer (its threads' voluntary context switches: a glommio shard parking, an nginx
# worker in epoll_wait). Prints one line per run, then the medians.
#
# Variables: SHARDS RATES ROUNDS WORKLOAD MEASURE_S RON BENCH NGINX WORK PORT.
# Talks only to 127.0.0.1, stops what it started (by PID).
set -euo pipefail
cd "$(dirname "$0")/.."
# nginx_config, stop_started, median.
# shellcheck source=workloads.sh
source bench/workloads.sh
# start_pinned, affinity_masks, tree_ns, tree_sleeps.
# shellcheck source=cores.sh
source bench/cores.sh

RATES=${RATES:-"20000 60000"}
ROUNDS=${ROUNDS:-2}
WORKLOAD=${WORKLOAD:-4KiB}
MEASURE_S=${MEASURE_S:-4}
RON=${RON:-target/release/ron}
BENCH=${BENCH:-target/release/ron-bench}
NGINX=${NGINX:-nginx}
WORK=${WORK:-/tmp/ron-partial-load}
PORT=${PORT:-18780}
case "$WORKLOAD" in
  4KiB) SET="--objects 2000 --size 4096 --seed 11" MODE="--workload get" ;;
  range_64KiB) SET="--objects 200 --size 1048576 --seed 12" MODE="--workload range --range-bytes 65536" ;;
  *) echo "WORKLOAD: 4KiB or range_64KiB" >&2; exit 2 ;;
esac
SHARDS=${SHARDS:-1}
CPUS=$(nproc)
[ "$CPUS" -ge 2 ] || { echo "needs 2 CPUs: the server on CPU 0, the client on CPU 1" >&2; exit 2; }
[ "$SHARDS" -ge 1 ] && [ "$SHARDS" -le "$CPUS" ] || { echo "SHARDS: 1 to $CPUS" >&2; exit 2; }
SERVER_CPUS=0-$((SHARDS - 1))
if [ "$SHARDS" -lt "$CPUS" ]; then CLIENT_CPUS=$(seq -s, "$SHARDS" $((CPUS - 1))); else CLIENT_CPUS=$((CPUS - 1)); fi
command -v "$NGINX" >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; }
if [ ! -x "$RON" ] || [ ! -x "$BENCH" ]; then cargo build --release -p ron-engine -p ron-bench; fi

pids=()
cgroup=
trap stop_started EXIT
rm -rf "$WORK"; mkdir -p "$WORK/www" "$WORK/nginx"
# shellcheck disable=SC2086
"$BENCH" dataset --dir "$WORK/www" $SET >/dev/null
start_pinned "$SERVER_CPUS" "$WORK/ron.log" "$RON" serve --shards "$SHARDS" --data-dir "$WORK/ron-data" \
  --http "127.0.0.1:$PORT" --oap "127.0.0.1:$((PORT + 3))" --admin "127.0.0.1:$((PORT + 2))" --cache-bytes 2GiB
ron_pid=$started
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$((PORT + 2))/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$((PORT + 2))/readyz" >/dev/null || { echo "ron did not get ready" >&2; exit 1; }
# The scrubber would run on the server's CPU: paused, so neither server pays for it.
curl -sf -X POST "http://127.0.0.1:$((PORT + 2))/admin/scrub/pause" >/dev/null
# shellcheck disable=SC2086
"$BENCH" run --target "127.0.0.1:$PORT" --load $SET --duration 0.2 --warmup 0 --connections 1 --cpus "$CLIENT_CPUS" >/dev/null
nginx_config "$WORK/nginx" "$WORK/www" $((PORT + 1)) "$SHARDS" "$(affinity_masks "$SHARDS")" 10000 >"$WORK/nginx/nginx.conf"
start_pinned "$SERVER_CPUS" "$WORK/nginx.log" "$NGINX" -c "$WORK/nginx/nginx.conf" -g 'daemon off;'
nginx_pid=$started
sleep 1

: >"$WORK/runs.txt"
for rate in $RATES; do
  for round in $(seq 1 "$ROUNDS"); do
    for server in ron nginx; do
      if [ $server = ron ]; then port=$PORT pid=$ron_pid; else port=$((PORT + 1)) pid=$nginx_pid; fi
      # shellcheck disable=SC2086
      "$BENCH" run --target "127.0.0.1:$port" $SET $MODE --no-verify --rate "$rate" \
        --duration $((MEASURE_S + 2)) --warmup 1 --connections 64 --cpus "$CLIENT_CPUS" --json "$WORK/run.json" >/dev/null &
      load=$!
      sleep 2
      ns0=$(tree_ns "$pid"); sl0=$(tree_sleeps "$pid")
      sleep "$MEASURE_S"
      ns1=$(tree_ns "$pid"); sl1=$(tree_sleeps "$pid")
      wait "$load"
      rps=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["req_per_s"] if r["unexpected_statuses"] + r["io_errors"] == 0 else -1)' "$WORK/run.json")
      [ "${rps%.*}" -gt 0 ] || { echo "$server at $rate/s: errors or no answers" >&2; exit 1; }
      awk -v s=$server -v r="$rate" -v g="$rps" -v a="$ns0" -v b="$ns1" -v c="$sl0" -v d="$sl1" -v m="$MEASURE_S" \
        'BEGIN { printf "%s %s %.0f %.2f %.3f\n", s, r, g, (b - a) / 1e3 / (g * m), (d - c) / (g * m) }' |
        tee -a "$WORK/runs.txt" | awk '{ printf "%s at %s/s: %s/s answered, %s us of CPU and %s sleeps per answer\n", $1, $2, $3, $4, $5 }'
    done
  done
done

echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r); ron (tree at $(git rev-parse --short HEAD 2>/dev/null || echo '?')), nginx $("$NGINX" -v 2>&1 | cut -d/ -f2); $SHARDS shards / workers on CPUs $SERVER_CPUS, client on CPUs $CLIENT_CPUS; $WORKLOAD, medians of $ROUNDS"
echo "| rate | ron us per answer | nginx us per answer | ron / nginx | sleeps per answer (ron, nginx) |"
echo "|---:|---:|---:|---:|---|"
for rate in $RATES; do
  col() { awk -v s="$1" -v r="$rate" -v c="$2" '$1 == s && $2 == r { print $c }' "$WORK/runs.txt" | median; }
  echo "| $rate/s | $(col ron 4) | $(col nginx 4) | $(awk -v a="$(col ron 4)" -v b="$(col nginx 4)" 'BEGIN { printf "%.2f", a / b }') | $(col ron 5), $(col nginx 5) |"
done
