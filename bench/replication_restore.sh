#!/usr/bin/env bash
# Issue 36: how fast copies are made, and how long the network takes to restore three
# verified copies of everything after a holder is killed. NODES nodes on loopback in three
# zones (--replicas 3, one shard each), OBJECTS random objects of SIZE bytes uploaded to
# node 0 (8 uploads at a time), then the holder with the most objects killed with -9.
#
#   bash bench/replication_restore.sh          # RON=target/release/ron, NODES=8,
#                                              # OBJECTS=10000, SIZE=131072 (1.25 GiB)
#   OBJECTS=300 SIZE=16384 RON=target/debug/ron bash bench/replication_restore.sh
#
# Prints: the upload time; the copy phase (uploaded → every object on 3 nodes: bytes
# copied per second, ron_replication_bytes_total summed); the victim's objects; the
# restore (kill → two sweep passes on every live node, the last finding nothing short).
# Stops what it started; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${RON:-}" ]; then
  cargo build --release -q -p ron-engine
  RON=target/release/ron
fi
NODES=${NODES:-8}
OBJECTS=${OBJECTS:-10000}
SIZE=${SIZE:-131072}
INTERVAL_MS=${INTERVAL_MS:-5000}
BASE=${BASE:-19000}
dir=$(mktemp -d /var/tmp/ron-repl.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
port() { echo $((BASE + 10 * $1 + $2)); } # node, 0 http 1 oap 2 admin 3 p2p
admin() { echo "http://127.0.0.1:$(port "$1" 2)"; }
metric() { curl -fs "$(admin "$1")/metrics" | awk -v n="$2" '$1 == n && !seen {print $2; seen = 1}'; }
sum_metric() { # name, nodes...
  local name=$1 total=0 v; shift
  for i in "$@"; do v=$(metric "$i" "$name"); total=$((total + ${v:-0})); done
  echo "$total"
}
now() { date +%s.%N; }

for i in $(seq 0 $((NODES - 1))); do
  peer=()
  [ "$i" -gt 0 ] && peer=(--peer "127.0.0.1:$(port 0 3)")
  "$RON" serve --data-dir "$dir/n$i" --shards 1 --http "127.0.0.1:$(port "$i" 0)" \
    --oap "127.0.0.1:$(port "$i" 1)" --admin "127.0.0.1:$(port "$i" 2)" \
    --p2p "127.0.0.1:$(port "$i" 3)" "${peer[@]}" --zone "z$((i % 3))" --replicas 3 \
    --replication-interval-ms "$INTERVAL_MS" --peer-dead-ms 0 >"$dir/log$i" 2>&1 &
  pids+=($!)
done
for i in $(seq 0 $((NODES - 1))); do
  for _ in $(seq 1 3000); do curl -fs "$(admin "$i")/readyz" >/dev/null && break; sleep 0.01; done
done
until [ "$(metric 0 ron_dht_routing_table_peers)" -ge $((NODES - 1)) ]; do sleep 0.2; done
all=$(seq 0 $((NODES - 1)))

t0=$(now)
seq 1 "$OBJECTS" | xargs -P 8 -I{} sh -c \
  "head -c $SIZE /dev/urandom | curl -fs -o /dev/null -T - http://127.0.0.1:$(port 0 0)/o"
t1=$(now)
echo "nodes=$NODES objects=$OBJECTS size=$SIZE upload_s=$(echo "$t1 - $t0" | bc)"
# Every object on node 0 and at least two others (three when node 0 is not a holder).
until [ "$(sum_metric ron_replication_pulls_total $all)" -ge $((2 * OBJECTS)) ]; do sleep 0.5; done
t2=$(now)
copied=$(sum_metric ron_replication_bytes_total $all)
echo "copy_phase_s=$(echo "$t2 - $t1" | bc) bytes_copied=$copied copy_MBps=$(echo "$copied / ($t2 - $t1) / 1000000" | bc -l | cut -c1-6)"

victim=1 most=0
for i in $(seq 1 $((NODES - 1))); do
  n=$(metric "$i" ron_objects_stored)
  if [ "${n:-0}" -gt "$most" ]; then most=$n; victim=$i; fi
done
live=$(for i in $all; do if [ "$i" != "$victim" ]; then echo "$i"; fi; done)
before=$(sum_metric ron_replication_pulls_total $live)
sweep_of() { metric "$1" 'ron_replication_sweeps_total{shard="0"}'; }
declare -A s0
for i in $live; do s0[$i]=$(sweep_of "$i"); done
kill -9 "${pids[$victim]}"
t3=$(now)
echo "victim=node$victim objects=$most"
# Restored: every live node has finished two sweep passes begun after the kill (the
# first finds what is short and has it copied, the second audits the result) and the
# last pass of each found nothing short.
passes_done() {
  for i in $live; do [ "$(sweep_of "$i")" -ge $((s0[$i] + 2)) ] || return 1; done
}
until passes_done && [ "$(sum_metric ron_objects_under_replicated $live)" -eq 0 ]; do sleep 0.5; done
t4=$(now)
made=$(($(sum_metric ron_replication_pulls_total $live) - before))
echo "restore_s=$(echo "$t4 - $t3" | bc) copies_pulled_after_kill=$made (copies the placement moved to nodes holding one already are kept, not pulled)"
