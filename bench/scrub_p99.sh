#!/usr/bin/env bash
# What the scrubber costs clients (issue 14): p99 of cold GETs at a fixed request rate
# while the scrubber runs at its default pace vs paused, same node, same data, same run.
#
#   bash bench/scrub_p99.sh                 # RUNS=5: about 4 minutes
#   RUNS=5 RATE=800 SCRUB=50MiB bash bench/scrub_p99.sh
#
# One node, `--shards 1` pinned to CPU 0, a 64 MiB verified cache and `--scrub-rate
# $SCRUB`; ron-bench on CPU 1. The dataset is OBJECTS objects of SIZE bytes (default 12,000
# x 256 KiB = 3 GiB, with 4+1 parity 3.75 GiB on disk: a scrub pass at 50 MiB/s takes
# ~75 s, longer than all the scrubbing windows of 5 runs, and the working set is 48x the
# cache, so GETs read the disk with O_DIRECT). Per run, interleaved: scrub paused, then resumed, each an open-loop
# `ron-bench run --rate $RATE` of uniform random GETs for DURATION s (latency from the
# intended send time, so a stall is not hidden by the client waiting). The scrub's bytes
# read in each window are reported, so a window where it did not run shows. Prints each
# run and the medians with the ratio. Talks only to 127.0.0.1, stops only what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
RATE=${RATE:-1000}
DURATION=${DURATION:-10}
OBJECTS=${OBJECTS:-12000}
SIZE=${SIZE:-262144}
SCRUB=${SCRUB:-50MiB}
CACHE=${CACHE:-64MiB}
WORK=${WORK:-$(mktemp -d /var/tmp/ron-scrub.XXXXXX)}
RON=target/release/ron
BENCH=target/release/ron-bench
[ -x "$RON" ] && [ -x "$BENCH" ] || cargo build --release -p ron-engine -p ron-bench

HTTP=127.0.0.1:18390
ADMIN=127.0.0.1:18790
pids=()
# shellcheck source=workloads.sh
source bench/workloads.sh  # stop_started
cleanup() { stop_started; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK"

# start SCRUB_RATE: the node, pinned to CPU 0
start() {
  taskset -c 0 "$RON" serve --shards 1 --data-dir "$WORK/data" --http "$HTTP" --admin "$ADMIN" \
    --oap 127.0.0.1:18754 --cache-bytes "$CACHE" --scrub-rate "$1" >>"$WORK/node.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 100); do curl -sf "http://$ADMIN/readyz" >/dev/null && return; sleep 0.1; done
  echo "the node did not start" >&2; exit 1
}

# Loaded with no scrubber, then started again with it (a scrubber that starts on an
# empty node finishes its first round at once and rests a minute).
dataset=(--objects "$OBJECTS" --size "$SIZE" --seed 7)
start 0
echo "loading $OBJECTS x $SIZE B ..." >&2
taskset -c 1 "$BENCH" run --target "$HTTP" "${dataset[@]}" --load --workload get \
  --connections 4 --cpus 1 --duration 1 --warmup 0 >/dev/null
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
start "$SCRUB"
"$RON" scrub pause --admin "$ADMIN" >/dev/null

scrubbed() { curl -sf "http://$ADMIN/metrics" | awk '/^ron_scrub_bytes_total/ { print $2 }'; }
# window: prints "p99_us p50_us achieved_req_per_s scrub_MiB_per_s"
window() {
  local before after t0 t1
  before=$(scrubbed); t0=$(date +%s.%N)
  taskset -c 1 "$BENCH" run --target "$HTTP" "${dataset[@]}" --workload get --rate "$RATE" \
    --connections 64 --cpus 1 --duration "$DURATION" --warmup 1 --json "$WORK/get.json" >/dev/null
  after=$(scrubbed); t1=$(date +%s.%N)
  python3 - "$WORK/get.json" "$before" "$after" "$t0" "$t1" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
scrub = (int(sys.argv[3]) - int(sys.argv[2])) / (float(sys.argv[5]) - float(sys.argv[4])) / 2**20
print(d['latency_us']['p99'], d['latency_us']['p50'], round(d['req_per_s']), round(scrub, 1))
EOF
}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

printf 'run\tp99_paused_us\tp99_scrub_us\tp50_paused_us\tp50_scrub_us\treq/s paused\treq/s scrub\tscrub MiB/s\n'
rows=()
for run in $(seq 1 "$RUNS"); do
  "$RON" scrub pause --admin "$ADMIN" >/dev/null; sleep 2
  read -r p99_off p50_off rps_off _ < <(window)
  "$RON" scrub resume --admin "$ADMIN" >/dev/null; sleep 2
  read -r p99_on p50_on rps_on mib_on < <(window)
  row=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$run" "$p99_off" "$p99_on" "$p50_off" "$p50_on" "$rps_off" "$rps_on" "$mib_on")
  echo "$row"; rows+=("$row")
done
"$RON" scrub pause --admin "$ADMIN" >/dev/null
col() { printf '%s\n' "${rows[@]}" | cut -f"$1" | median; }
echo
echo "medians of $RUNS runs: ron $(git rev-parse --short HEAD), $OBJECTS x $SIZE B, cache $CACHE, $RATE GET/s open loop, scrub $SCRUB"
python3 - "$(col 2)" "$(col 3)" "$(col 4)" "$(col 5)" "$(col 8)" <<'EOF'
import sys
p99_off, p99_on, p50_off, p50_on, mib = map(float, sys.argv[1:])
print("| cold GET latency | scrub paused | scrub running | ratio |")
print("|---|---:|---:|---:|")
print(f"| p99 (ms) | {p99_off/1000:.2f} | {p99_on/1000:.2f} | {p99_on/p99_off:.2f} |")
print(f"| p50 (ms) | {p50_off/1000:.2f} | {p50_on/1000:.2f} | {p50_on/p50_off:.2f} |")
print(f"scrub read {mib:.1f} MiB/s (median) while running")
EOF
