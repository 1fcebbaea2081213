#!/usr/bin/env bash
# Issue 53: a network of ron nodes on loopback — how fast fresh objects become findable,
# how long objects take to reach `replicas` verified copies (after the uploads, after
# kill -9 of 10 %, after a join of 10 %), resolve and read-through latency, and what an
# idle node costs (CPU, RSS, connections). Runs `ron-bench network` (its --help says
# every figure) on release binaries.
#
#   bash bench/network.sh                      # NODES=100 ZONES=6 OBJECTS=300
#   NODES=200 OBJECTS=300 bash bench/network.sh
#   NODES=40 ZONES=4 RON=target/debug/ron BENCH=target/debug/ron-bench bash bench/network.sh
#
# Extra ron-bench network flags go after the script's name. Writes the report to stdout
# and as JSON to $OUT (network-<nodes>.json). Kills only the nodes it started; a failed
# run keeps their logs (the path is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${RON:-}" ] || [ -z "${BENCH:-}" ]; then
  cargo build --release -q --locked -p ron-engine -p ron-bench
  RON=${RON:-target/release/ron}
  BENCH=${BENCH:-target/release/ron-bench}
fi
NODES=${NODES:-100}
ZONES=${ZONES:-6}
OBJECTS=${OBJECTS:-300}
OUT=${OUT:-network-$NODES.json}
dir=$(mktemp -d /var/tmp/ron-network.XXXXXX)
bench_pid=
cleanup() {
  local status=$?
  # ron-bench stops its nodes itself; if it was killed, the nodes it started (its
  # process group, which they keep when orphaned) are stopped here.
  if [ -n "$bench_pid" ]; then kill -KILL -- "-$bench_pid" 2>/dev/null || true; fi
  # A failed run keeps the nodes' logs and data for a look; a good one leaves nothing.
  if [ "$status" -eq 0 ]; then rm -rf "$dir"; else echo "network.sh: the nodes' logs are kept in $dir/nodes" >&2; fi
}
trap cleanup EXIT
# Each node holds a few hundred descriptors; the harness holds some per request.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
set -m # ron-bench and its nodes in a process group of their own
"$BENCH" network --ron "$RON" --dir "$dir/nodes" --nodes "$NODES" --zones "$ZONES" \
  --objects "$OBJECTS" --json "$OUT" "$@" &
bench_pid=$!
wait "$bench_pid"
