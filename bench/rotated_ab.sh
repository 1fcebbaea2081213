#!/usr/bin/env bash
# Two ron builds and nginx on one saturated server CPU, in short rounds whose order
# rotates (issue 54): an A/B that a noisy machine can still answer. A fixed order reads
# the first server of each round lower on a VM whose speed drifts within seconds; short
# runs side by side and the median of the per-round ratios cancel most of that drift.
#
#   OTHER_RON=/path/to/ron-b bash bench/rotated_ab.sh                  # 1 MiB GETs
#   WORKLOAD=range_64KiB ROUNDS=30 OTHER_RON=… bash bench/rotated_ab.sh
#   WARM_B=whole OTHER_RON=target/release/ron bash bench/rotated_ab.sh   # one build, warmed two ways
#
# Servers: ron (RON) and ron B (OTHER_RON) with `--shards 1 --cache-bytes 2GiB`, and
# nginx with one worker (bench/workloads.sh's nginx_config), all on CPU 0; the client,
# ron-bench `--no-verify --discard-bodies` (bodies dropped unread: one client CPU
# saturates the server CPU), on CPU 1. The objects: 200 x 1 MiB (WORKLOAD 1MiB: whole
# GETs, 16 connections; range_64KiB: random unaligned 64 KiB ranges, 64 connections),
# 2,000 x 4 KiB (4KiB, 64 connections) or 2 x 256 MiB (256MiB: whole GETs, streamed,
# 4 connections; warmed whole or by ranges of them like the others). Each node is warmed first (WARM_A, WARM_B):
# `ranges` (3 s of random 64 KiB ranges on 64 connections: an object's cache windows lie
# apart, as on an edge serving ranges and whole objects of the same files) or `whole`
# (each object read once, in order, on one connection: its windows end to end).
# Then ROUNDS rounds of a DURATION s run (0.5 s warm-up) of each server, the order
# rotated by one each round. Per busy server CPU: body bytes that arrived in the run,
# per second, / CPU 0's busy share over it (/proc/stat). Prints each round, then the paired medians and B / A's quartiles.
#
# Variables: RON OTHER_RON WORKLOAD ROUNDS DURATION WARM_A WARM_B BENCH NGINX WORK PORT.
# Talks only to 127.0.0.1, stops what it started (by PID).
set -euo pipefail
cd "$(dirname "$0")/.."
# nginx_config, stop_started.
# shellcheck source=workloads.sh
source bench/workloads.sh

RON=${RON:-target/release/ron}
OTHER_RON=${OTHER_RON:?"OTHER_RON: the second ron build"}
BENCH=${BENCH:-target/release/ron-bench}
NGINX=${NGINX:-nginx}
WORKLOAD=${WORKLOAD:-1MiB}
ROUNDS=${ROUNDS:-20}
DURATION=${DURATION:-2}
WARM_A=${WARM_A:-ranges}
WARM_B=${WARM_B:-ranges}
WORK=${WORK:-/tmp/ron-rotated-ab}
PORT=${PORT:-18880}
# Long enough to read every object once in order (2 x 256 MiB take a few seconds).
WARM_WHOLE_S=3
[ "$WORKLOAD" != 256MiB ] || WARM_WHOLE_S=8
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs: the server's and the client's" >&2; exit 2; }
case $WORKLOAD in
  1MiB) SET="--objects 200 --size 1048576 --seed 12" LOAD="--workload get" CONNS=16 ;;
  range_64KiB) SET="--objects 200 --size 1048576 --seed 12" LOAD="--workload range --range-bytes 65536" CONNS=64 ;;
  4KiB) SET="--objects 2000 --size 4096 --seed 11" LOAD="--workload get" CONNS=64 ;;
  256MiB) SET="--objects 2 --size 268435456 --seed 13" LOAD="--workload get" CONNS=4 ;;
  *) echo "WORKLOAD: 1MiB, range_64KiB, 4KiB or 256MiB" >&2; exit 2 ;;
esac

pids=()
trap stop_started EXIT
rm -rf "$WORK"; mkdir -p "$WORK/www" "$WORK/nginx"
# shellcheck disable=SC2086
"$BENCH" dataset --dir "$WORK/www" $SET

# Starts a ron build (binary, HTTP port, warm-up) on CPU 0, puts the objects and warms
# its cache; $started is its PID.
start_ron() {
  local bin=$1 port=$2 warm=$3 admin=$(($2 + 2))
  taskset -c 0 "$bin" serve --shards 1 --data-dir "$WORK/data-$port" --http "127.0.0.1:$port" \
    --oap "127.0.0.1:$((port + 3))" --admin "127.0.0.1:$admin" --cache-bytes 2GiB \
    >"$WORK/ron-$port.log" 2>&1 &
  started=$!
  pids+=("$started")
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null || { echo "ron on $port did not get ready" >&2; exit 1; }
  curl -sf -X POST "http://127.0.0.1:$admin/admin/scrub/pause" >/dev/null
  # shellcheck disable=SC2086
  "$BENCH" run --target "127.0.0.1:$port" $SET --load --duration 0.2 --warmup 0 --connections 1 --cpus 1 >/dev/null
  case $warm in
    ranges) # shellcheck disable=SC2086
      "$BENCH" run --target "127.0.0.1:$port" $SET --workload range --range-bytes 65536 --no-verify --discard-bodies \
        --duration 3 --warmup 0 --connections 64 --cpus 1 >/dev/null ;;
    whole) # shellcheck disable=SC2086
      "$BENCH" run --target "127.0.0.1:$port" $SET --workload get --no-verify --discard-bodies \
        --duration "$WARM_WHOLE_S" --warmup 0 --connections 1 --cpus 1 >/dev/null ;;
    *) echo "WARM_A, WARM_B: ranges or whole" >&2; exit 2 ;;
  esac
}

start_ron "$RON" "$PORT" "$WARM_A"
start_ron "$OTHER_RON" $((PORT + 10)) "$WARM_B"
nginx_config "$WORK/nginx" "$WORK/www" $((PORT + 20)) 1 1 10000 >"$WORK/nginx/nginx.conf"
taskset -c 0 "$NGINX" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' >"$WORK/nginx.log" 2>&1 &
pids+=("$!")
sleep 1

ports=("$PORT" $((PORT + 10)) $((PORT + 20)))
: >"$WORK/rounds.txt"
echo "ron $RON (warmed: $WARM_A), ron B $OTHER_RON (warmed: $WARM_B), nginx; $WORKLOAD, $CONNS connections; TCP congestion control $(cat /proc/sys/net/ipv4/tcp_congestion_control)"
echo "round: MB/s and CPU 0 busy of ron, ron B, nginx"
for round in $(seq 1 "$ROUNDS"); do
  declare -A got=()
  for k in 0 1 2; do
    port=${ports[$(((k + round) % 3))]}
    # shellcheck disable=SC2086
    "$BENCH" run --target "127.0.0.1:$port" $SET $LOAD --no-verify --discard-bodies \
      --duration "$DURATION" --warmup 0.5 --connections "$CONNS" --cpus 1 --busy-cpu 0 \
      --json "$WORK/run.json" >"$WORK/run.txt"
    got[$port]=$(python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
bad = r["unexpected_statuses"] + r["io_errors"]
ok = bad == 0 and r["busy_share"] and r["window_body_bytes_per_s"]
print("%.1f %.3f" % (r["window_body_bytes_per_s"] / 1e6, r["busy_share"]) if ok else "error")' "$WORK/run.json")
    [ "${got[$port]}" != error ] || { echo "port $port: errors or no CPU share" >&2; cat "$WORK/run.txt" >&2; exit 1; }
  done
  line="${got[${ports[0]}]} ${got[${ports[1]}]} ${got[${ports[2]}]}"
  echo "$line" >>"$WORK/rounds.txt"
  echo "  $round: $line"
done
python3 - "$WORK/rounds.txt" <<'PY'
import statistics as st, sys
rows = [list(map(float, line.split())) for line in open(sys.argv[1])]
a, b, n = ([r[i] / r[i + 1] for r in rows] for i in (0, 2, 4))
busy = [min(r[1], r[3], r[5]) for r in rows]
print("MB/s per busy server CPU, medians: ron %.0f, ron B %.0f, nginx %.0f" % (st.median(a), st.median(b), st.median(n)))
print("paired medians: ron / nginx %.3f, ron B / nginx %.3f, ron B / ron %.3f (%d rounds)" % (
    st.median([x / z for x, z in zip(a, n)]), st.median([y / z for y, z in zip(b, n)]),
    st.median([y / x for x, y in zip(a, b)]), len(rows)))
if len(rows) >= 4:
    print("ron B / ron quartiles: %s" % ", ".join("%.3f" % q for q in st.quantiles([y / x for x, y in zip(a, b)], n=4)))
low = sum(1 for x in busy if x < 0.9)
if low:
    print("NOT SATURATED in %d rounds (a server's CPU 0 under 0.90 busy): those ratios carry idle time" % low)
PY
