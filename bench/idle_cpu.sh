#!/usr/bin/env bash
# What an idle node costs: CPU time and thread wake-ups over SECONDS (default 60) with
# no traffic, from /proc (every thread's schedstat run time, voluntary context switches).
#
#   bash bench/idle_cpu.sh                 # --shards 2 (this machine's cores)
#   SECONDS_IDLE=60 SHARDS=1 bash bench/idle_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE=${SECONDS_IDLE:-60}
SHARDS=${SHARDS:-2}
PORT=${PORT:-18280}
bin=target/release/ron
[ -x "$bin" ] || cargo build --release -p ron-engine
dir=$(mktemp -d)
"$bin" serve --shards "$SHARDS" --data-dir "$dir/data" --http "127.0.0.1:$PORT" \
  --oap 127.0.0.1:$((PORT + 1)) --admin 127.0.0.1:$((PORT + 2)) >"$dir/log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 3000); do
  curl -fs "http://127.0.0.1:$((PORT + 2))/readyz" >/dev/null && break
  sleep 0.01
done
sleep 2
# CPU time in ns of every thread (schedstat: exact, unlike the 10 ms ticks of stat).
ticks() { cat /proc/"$pid"/task/*/schedstat | awk '{s += $1} END {printf "%.0f", s}'; }  # %d: mawk clamps at 2^31
switches() { cat /proc/"$pid"/task/*/status | awk '/^voluntary_ctxt_switches/ {s += $2} END {print s}'; }
t0=$(ticks); s0=$(switches)
sleep "$IDLE"
t1=$(ticks); s1=$(switches)
awk -v t="$((t1 - t0))" -v hz=1000000000 -v s="$((s1 - s0))" -v secs="$IDLE" -v shards="$SHARDS" 'BEGIN {
  printf "idle %d s, %d shard(s): CPU %.4f s (%.4f%% of one core), %d wake-ups (%.0f/s)\n",
    secs, shards, t / hz, 100 * t / hz / secs, s, s / secs }'
