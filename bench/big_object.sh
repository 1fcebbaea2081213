#!/usr/bin/env bash
# A 4 GiB object: what a proof-carrying range GET costs, with its metadata in the cache
# and with a metadata cache smaller than its tree (each request would reload and
# recheck 65,536 CVs if the node did not keep it). One shard, loopback only.
#
#   bash bench/big_object.sh                 # RON=target/release/ron, SIZE_GIB=4, COUNT=200
#   RON=/tmp/ron-before bash bench/big_object.sh
#
# For each metadata budget (default 64MiB, then 1MiB) the node is restarted (a cold
# metadata cache), then `proof_gets` does COUNT 64 KiB proof GETs at pseudo-random
# offsets on one OAP/1 connection: the first (the metadata load), median and p99, plus
# the node's ron_meta_loads_total where it has one. Stops what it started.
# Cold reads go to the device (O_DIRECT, several ms each on a VM disk), hence WINDOW.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${RON:-}" ]; then
  cargo build --release -q -p ron-engine
  RON=target/release/ron
fi
SIZE_GIB=${SIZE_GIB:-4}
COUNT=${COUNT:-400}
# Offsets fall in the first WINDOW bytes (default 4 MiB, 64 groups): after the first
# pass their groups come from the verified cache, so what remains is the metadata and
# the proof — the work this measures, not the disk.
WINDOW=${WINDOW:-4194304}
PORT=${PORT:-18280}
cargo build --release -q -p ron-bench --example proof_gets
gets=target/release/examples/proof_gets
dir=$(mktemp -d /var/tmp/ron-big.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
start() {
  "$RON" serve --data-dir "$dir/data" --shards 1 --http "127.0.0.1:$PORT" \
    --oap "127.0.0.1:$((PORT + 1))" --admin "127.0.0.1:$((PORT + 2))" "$@" >>"$dir/log" 2>&1 &
  pid=$!
  for _ in $(seq 1 3000); do
    curl -fs "http://127.0.0.1:$((PORT + 2))/readyz" >/dev/null && return 0
    sleep 0.01
  done
  echo "not ready" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" || true; pid=; }

len=$((SIZE_GIB << 30))
# Incompressible bytes, written once: a pattern repeated would be as good for hashing.
head -c "$len" /dev/urandom >"$dir/object"
start
addr=$("$RON" put "$dir/object" --server "127.0.0.1:$((PORT + 1))" -q)
rm "$dir/object"
stop
echo "ron=$RON object=$addr len=$len"
for meta in 64MiB 1MiB; do
  start --meta-cache-bytes "$meta"
  result=$("$gets" "127.0.0.1:$((PORT + 1))" "$addr" "$len" "$COUNT" 65536 "$WINDOW")
  loads=$(curl -fs "http://127.0.0.1:$((PORT + 2))/metrics" | awk '/^ron_meta_loads_total/ {print $2}')
  echo "meta_cache=$meta $result meta_loads=${loads:-n/a}"
  stop
done
