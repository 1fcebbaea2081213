#!/usr/bin/env bash
# What an idle node costs: CPU time and thread wake-ups over SECONDS (default 60) with
# no traffic, from /proc (every thread's schedstat run time, voluntary context switches),
# in all and per thread name. P2P=1 adds --p2p (the DHT thread, alone in its network).
#
#   bash bench/idle_cpu.sh                 # --shards 2 (this machine's cores)
#   SECONDS_IDLE=60 SHARDS=1 bash bench/idle_cpu.sh
#   SHARDS=1 P2P=1 RON=/path/to/ron bash bench/idle_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE=${SECONDS_IDLE:-60}
SHARDS=${SHARDS:-2}
PORT=${PORT:-18280}
bin=${RON:-target/release/ron}
[ -x "$bin" ] || cargo build --release -p ron-engine
p2p=()
[ "${P2P:-0}" = 1 ] && p2p=(--p2p "127.0.0.1:$((PORT + 3))")
dir=$(mktemp -d)
"$bin" serve --shards "$SHARDS" --data-dir "$dir/data" --http "127.0.0.1:$PORT" \
  --oap 127.0.0.1:$((PORT + 1)) --admin 127.0.0.1:$((PORT + 2)) "${p2p[@]}" >"$dir/log" 2>&1 &
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
# Per thread name: "name cpu_ns wake-ups" summed over its threads.
per_thread() {
  for task in /proc/"$pid"/task/*; do
    printf '%s %s %s\n' "$(tr ' ' _ <"$task/comm")" "$(cut -d' ' -f1 "$task/schedstat")" \
      "$(awk '/^voluntary_ctxt_switches/ {print $2}' "$task/status")"
  done | awk '{t[$1] += $2; s[$1] += $3} END {for (n in t) printf "%s %.0f %d\n", n, t[n], s[n]}' | sort
}
t0=$(ticks); s0=$(switches); p0=$(per_thread)
sleep "$IDLE"
t1=$(ticks); s1=$(switches); p1=$(per_thread)
join <(echo "$p0") <(echo "$p1") | awk -v secs="$IDLE" '{
  printf "  %-14s CPU %.4f s (%.4f%% of one core), %d wake-ups (%.1f/s)\n",
    $1, ($4 - $2) / 1e9, 100 * ($4 - $2) / 1e9 / secs, $5 - $3, ($5 - $3) / secs }'
awk -v t="$((t1 - t0))" -v hz=1000000000 -v s="$((s1 - s0))" -v secs="$IDLE" -v shards="$SHARDS" 'BEGIN {
  printf "idle %d s, %d shard(s): CPU %.4f s (%.4f%% of one core), %d wake-ups (%.0f/s)\n",
    secs, shards, t / hz, 100 * t / hz / secs, s, s / secs }'
