#!/usr/bin/env bash
# Two or more ron builds against each other on one workload, in turns, so that the
# machine's drift (±10 % between identical runs here) falls on all of them alike.
#
#   bash bench/ab.sh before=/tmp/ron-before after=target/release/ron
#   W=get_256MiB ROUNDS=5 bash bench/ab.sh a=/tmp/a b=/tmp/b
#   RATE=60000 bash bench/ab.sh a=/tmp/a b=/tmp/b   # open loop at 60,000 req/s
#
# Per round, each build in turn: a fresh node (--shards 1, --cache-bytes $CACHE, CPU 0,
# its own data dir), the workload's dataset uploaded (bench/workloads.sh), a 1 s warm-up
# and one ron-bench run on CPU 1 (64 connections, 4 for get_256MiB; --no-verify; DURATION
# s; closed loop, or open loop at RATE req/s with latency from the intended send time),
# the node stopped. Prints one line per run — build, req/s and MB/s per busy core of
# CPU 0, CPU 0 busy share, p99 µs, reschedule IPIs CPU 0 took per request (the RES row
# of /proc/interrupts over the run: what a wake-up that interrupts a running shard
# costs, docs/design/readiness.md), MB/s per busy machine CPU (both CPUs over the run:
# where loopback's receive work runs depends on the sender, docs/PERF.md "Which
# generator is right") — then the medians of each build.
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
    for phase in warm-up measured; do
      duration=$DURATION; [ "$phase" = warm-up ] && duration=1
      ipis_before=$(cpu0_reschedule_ipis); all_before=$(cpus_all)
      # shellcheck disable=SC2086
      taskset -c 1 "$BENCH" run --target "127.0.0.1:$PORT" ${DATA[$W]} ${MODE[$W]} \
        --connections "$conns" --cpus 1 --duration "$duration" --warmup 0 --busy-cpu 0 \
        --no-verify ${RATE:+--rate "$RATE"} --json "$WORK/run.json" >/dev/null
      ipis=$(( $(cpu0_reschedule_ipis) - ipis_before )); machine=$(busy_cpus "$all_before" "$(cpus_all)")
    done
    row=$(python3 -c "import json, sys
d = json.load(open(sys.argv[1])); busy = max(d['busy_share'] or 0, 0.01)
requests = max(d['req_per_s'] * float(sys.argv[4]), 1)
machine = max(float(sys.argv[5]), 0.01)
print(sys.argv[2], round(d['req_per_s'] / busy), round(d['window_body_bytes_per_s'] / busy / 1e6),
      round(busy, 2), d['latency_us']['p99'], round(int(sys.argv[3]) / requests, 3),
      round(d['window_body_bytes_per_s'] / machine / 1e6))" \
      "$WORK/run.json" "$name" "$ipis" "$DURATION" "$machine")
    echo "round $round: $row"; results+=("$row")
    stop_started
    # shellcheck disable=SC2034  # read by stop_started
    pids=()
  done
done

echo
echo "$W${RATE:+ at $RATE req/s (open loop)}, $ROUNDS rounds of ${DURATION}s, medians per build:"
printf '%s\n' "${results[@]}" | python3 -c "import statistics, sys
runs = {}
for line in sys.stdin:
    name, *values = line.split()
    runs.setdefault(name, []).append([float(v) for v in values])
print('  build: req/s per busy core (runs) | MB/s per busy core | CPU 0 busy | p99 us | reschedule IPIs per request | MB/s per busy machine CPU')
for name, rows in runs.items():
    col = lambda i: statistics.median(r[i] for r in rows)
    rates = sorted(int(r[0]) for r in rows)
    print(f'  {name}: {col(0):.0f} ({rates}) | {col(1):.0f} | {col(2):.2f} | {col(3):.0f} | {col(4):.3f} | {col(5):.0f}')"
