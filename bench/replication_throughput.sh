#!/usr/bin/env bash
# Issue 36: placement copies against a plain peer fetch of the same bytes. Two pairs of
# nodes on loopback, one shard each:
#   copies: A and B (--replicas 2, two zones): OBJECTS objects of SIZE bytes uploaded to A
#           (8 at a time); timed from the first upload until B holds a kept copy of every
#           one (ron_replication_pulls_total), the pulls riding the write path's asks.
#   fetch:  C and D (--replicas 1): the same number of objects uploaded to C first, then
#           read through D (8 GETs at a time, each verified and stored on D), timed.
#   join:   E alone (--replicas 2, one copy while it is alone) takes the same uploads;
#           then F joins, and E's repair sweep (every second here) finds F named by the
#           placement and asks it for copies: timed from F ready until F holds a kept
#           copy of every object. This is copying alone, apart from any upload.
# All move the bytes through the same verified peer fetch (OAP/1, proof per group).
#
#   bash bench/replication_throughput.sh        # RON=target/release/ron, OBJECTS=400,
#                                               # SIZE=1048576, RATE=0 (copies unpaced)
#   RATE=100MiB bash bench/replication_throughput.sh   # with the default pacing
#
# Prints one line per phase (seconds, MB/s) and their ratio. Stops what it started;
# loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${RON:-}" ]; then
  cargo build --release -q -p ron-engine
  RON=target/release/ron
fi
OBJECTS=${OBJECTS:-400}
SIZE=${SIZE:-1048576}
RATE=${RATE:-0}
BASE=${BASE:-19500}
dir=$(mktemp -d /var/tmp/ron-repl-tp.XXXXXX)
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
now() { date +%s.%N; }
wait_metric() { # node, metric, at least: polls for up to 10 minutes, then gives up
  for _ in $(seq 1 12000); do
    [ "$(metric "$1" "$2")" -ge "$3" ] 2>/dev/null && return
    sleep 0.05
  done
  echo "gave up waiting for $2 >= $3 on node $1" >&2
  exit 1
}
start() { # node, bootstrap node or -, replicas, zone, extra flags...
  local peer=()
  [ "$2" != - ] && peer=(--peer "127.0.0.1:$(port "$2" 3)")
  local extra=("${@:5}")
  "$RON" serve --data-dir "$dir/n$1" --shards 1 --http "127.0.0.1:$(port "$1" 0)" \
    --oap "127.0.0.1:$(port "$1" 1)" --admin "127.0.0.1:$(port "$1" 2)" \
    --p2p "127.0.0.1:$(port "$1" 3)" "${peer[@]}" --replicas "$3" --zone "$4" \
    --replication-bytes-per-s "$RATE" "${extra[@]}" >"$dir/log$1" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 3000); do curl -fs "$(admin "$1")/readyz" >/dev/null && return; sleep 0.01; done
}
upload_all() { # node: one answer file per upload (parallel writes to one pipe interleave)
  mkdir -p "$dir/up$1"
  seq 1 "$OBJECTS" | xargs -P 8 -I{} sh -c \
    "head -c $SIZE /dev/urandom | curl -fs -T - http://127.0.0.1:$(port "$1" 0)/o >$dir/up$1/{}"
  cat "$dir/up$1"/* | grep -o '"obj":"b3:[0-9a-f]*"' | cut -d'"' -f4
}

start 0 - 2 z0
start 1 0 2 z1
wait_metric 0 ron_dht_routing_table_peers 1
t0=$(now)
upload_all 0 >/dev/null
t1=$(now)
wait_metric 1 ron_replication_pulls_total "$OBJECTS"
t2=$(now)
bytes=$((OBJECTS * SIZE))
copies_s=$(echo "$t2 - $t0" | bc)
echo "copies: objects=$OBJECTS size=$SIZE rate=$RATE upload_s=$(echo "$t1 - $t0" | bc) all_copied_s=$copies_s MBps=$(echo "$bytes / $copies_s / 1000000" | bc -l | cut -c1-7)"

start 2 - 1 z0
start 3 2 1 z1
wait_metric 2 ron_dht_routing_table_peers 1
upload_all 2 >"$dir/addrs"
# Read through D once every address is announced (published to D by C).
wait_metric 2 ron_dht_keys_published_total "$OBJECTS"
t3=$(now)
xargs -P 8 -I{} curl -fs -o /dev/null "http://127.0.0.1:$(port 3 0)/o/{}" <"$dir/addrs"
t4=$(now)
fetch_s=$(echo "$t4 - $t3" | bc)
echo "fetch: objects=$(wc -l <"$dir/addrs") fetched=$(metric 3 ron_fetches_stored_total) fetch_s=$fetch_s MBps=$(echo "$bytes / $fetch_s / 1000000" | bc -l | cut -c1-7)"
echo "copies/fetch time ratio: $(echo "$copies_s / $fetch_s" | bc -l | cut -c1-5)"

start 4 - 2 z0 --replication-interval-ms 1000
upload_all 4 >/dev/null
start 5 4 2 z1
t5=$(now)
wait_metric 5 ron_replication_pulls_total "$OBJECTS"
t6=$(now)
join_s=$(echo "$t6 - $t5" | bc)
echo "join: objects=$OBJECTS copied=$(metric 5 ron_replication_pulls_total) join_s=$join_s MBps=$(echo "$bytes / $join_s / 1000000" | bc -l | cut -c1-7)"
echo "join/fetch time ratio: $(echo "$join_s / $fetch_s" | bc -l | cut -c1-5)"
