#!/usr/bin/env bash
# Two or more ron builds against each other on one workload, in turns, so that the
# machine's drift (±10 % between identical runs here) falls on all of them alike.
#
#   bash bench/ab.sh before=/tmp/ron-before after=target/release/ron
#   W=get_256MiB ROUNDS=5 bash bench/ab.sh a=/tmp/a b=/tmp/b
#
# Per round, each build in turn: a fresh node (--shards 1, --cache-bytes $CACHE, CPU 0,
# its own data dir), the workload's dataset uploaded (bench/workloads.sh), one ron-bench
# run on CPU 1 (64 connections, 4 for get_256MiB; --no-verify; DURATION s after a 1 s
# warm-up), the node stopped. Prints one line per run — build, req/s and MB/s per busy
# core of CPU 0, CPU 0 busy share, p99 µs — then the median and best of each build.
# Talks only to 127.0.0.1, stops only what it started (by PID).
set -euo pipefail
cd "$(dirname "$0")/.."

W=${W:-get_4KiB}
ROUNDS=${ROUNDS:-8}
DURATION=${DURATION:-5}
CACHE=${CACHE:-2GiB}
PORT=${PORT:-19180}
ADMIN_PORT=${ADMIN_PORT:-19680}
OAP_PORT=${OAP_PORT:-19644}
WORK=${WORK:-$(mktemp -d /var/tmp/ron-ab.XXXXXX)}
BENCH=target/release/ron-bench
[ "$#" -ge 2 ] || { echo "usage: bash bench/ab.sh name=ron-binary name=ron-binary [...]" >&2; exit 2; }
[ -x "$BENCH" ] || cargo build --release -p ron-bench

pids=()
# shellcheck source=workloads.sh
source bench/workloads.sh
cleanup() { stop_started; rm -rf "$WORK"; }
trap cleanup EXIT
conns=64; [ "$W" = get_256MiB ] && conns=4

results=()
for round in $(seq 1 "$ROUNDS"); do
  for build in "$@"; do
    name=${build%%=*}; ron=${build#*=}
    rm -rf "$WORK/data"
    taskset -c 0 "$ron" serve --shards 1 --data-dir "$WORK/data" --http "127.0.0.1:$PORT" \
      --admin "127.0.0.1:$ADMIN_PORT" --oap "127.0.0.1:$OAP_PORT" --cache-bytes "$CACHE" \
      >"$WORK/ron.log" 2>&1 &
    pids=("$!")
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null && break; sleep 0.1; done
    # shellcheck disable=SC2086
    taskset -c 1 "$BENCH" run --target "127.0.0.1:$PORT" --load ${DATA[$W]} --duration 0.2 \
      --warmup 0 --connections 1 --cpus 1 >/dev/null
    # shellcheck disable=SC2086
    taskset -c 1 "$BENCH" run --target "127.0.0.1:$PORT" ${DATA[$W]} ${MODE[$W]} \
      --connections "$conns" --cpus 1 --duration "$DURATION" --warmup 1 --busy-cpu 0 \
      --no-verify --json "$WORK/run.json" >/dev/null
    row=$(python3 -c "import json, sys
d = json.load(open(sys.argv[1])); busy = max(d['busy_share'] or 0, 0.01)
print(sys.argv[2], round(d['req_per_s'] / busy), round(d['window_body_bytes_per_s'] / busy / 1e6),
      round(busy, 2), d['latency_us']['p99'])" "$WORK/run.json" "$name")
    echo "round $round: $row"; results+=("$row")
    stop_started
    # shellcheck disable=SC2034  # read by stop_started
    pids=()
  done
done

echo
echo "$W, $ROUNDS rounds of ${DURATION}s, req/s per busy core of CPU 0:"
printf '%s\n' "${results[@]}" | python3 -c "import statistics, sys
runs = {}
for line in sys.stdin:
    name, rate = line.split()[:2]
    runs.setdefault(name, []).append(int(rate))
for name, rates in runs.items():
    print(f'  {name}: median {statistics.median(rates):.0f}, best {max(rates)}, runs {sorted(rates)}')"
