#!/usr/bin/env bash
# What erasure coding costs (issue 14): durable ingest with parity on vs off, and cold
# GETs of degraded objects (one bad block in every stripe) vs healthy ones, same run.
#
#   bash bench/ec_rates.sh                  # RUNS=3: about 3 minutes
#   RUNS=5 EC=4+1 bash bench/ec_rates.sh
#
# Two nodes side by side, `--shards 1` pinned to CPU 0, one with `--ec $EC`, one with
# `--ec off`, each with a 64 MiB verified cache; clients on CPU 1. Per run, interleaved:
#   ingest:   `ron-bench run --workload put --put-size 1MiB --connections 16` for
#             DURATION s against each node (every 201 durable: data and parity synced);
#   degraded: OBJECTS fresh objects of OBJECT_MIB on the EC node (over a quarter of the
#             cache: read from disk at every GET), one byte flipped in one data block of
#             every stripe of half of them; each object is read once with curl, the
#             degraded ones rebuilt stripe by stripe (and repaired behind the reads).
# Prints each run and the medians with the ratios. Talks only to 127.0.0.1, stops only
# what it started (by PID).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
EC=${EC:-4+1}
DURATION=${DURATION:-5}
OBJECTS=${OBJECTS:-4}
OBJECT_MIB=${OBJECT_MIB:-64}
CACHE=${CACHE:-64MiB}
WORK=${WORK:-$(mktemp -d /var/tmp/ron-ec.XXXXXX)}
RON=target/release/ron
BENCH=target/release/ron-bench
[ -x "$RON" ] && [ -x "$BENCH" ] || cargo build --release -p ron-engine -p ron-bench

pids=()
# shellcheck source=workloads.sh
source bench/workloads.sh  # stop_started
cleanup() { stop_started; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK"

# start NAME EC HTTP_PORT ADMIN_PORT OAP_PORT
start() {
  taskset -c 0 "$RON" serve --shards 1 --data-dir "$WORK/$1" --http "127.0.0.1:$3" \
    --admin "127.0.0.1:$4" --oap "127.0.0.1:$5" --cache-bytes "$CACHE" --ec "$2" \
    >"$WORK/$1.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$4/readyz" >/dev/null && return; sleep 0.1; done
  echo "node $1 did not start" >&2; exit 1
}
start on "$EC" 18380 18780 18744
start off off 18381 18781 18745
K=${EC%+*}

ingest() {
  taskset -c 1 "$BENCH" run --target "127.0.0.1:$1" --workload put --put-size 1048576 \
    --connections 16 --cpus 1 --duration "$DURATION" --warmup 1 --json "$WORK/put.json" >/dev/null
  python3 -c "import json; print(json.load(open('$WORK/put.json'))['req_per_s'] * 1048576)"
}
put_file() { taskset -c 1 curl -sf -T "$1" "http://127.0.0.1:18380/o" | grep -o 'b3:[0-9a-f]*' | head -1; }
object_file() { find "$WORK/on" -type f -name "${1#b3:}" | head -1; }
# One flipped byte in data block (s mod k) of every stripe s of the file at $1.
rot_every_stripe() {
  python3 - "$1" "$K" <<'EOF'
import os, sys
path, k = sys.argv[1], int(sys.argv[2])
block = 65536
with open(path, "r+b") as f:
    size = os.fstat(f.fileno()).st_size
    groups = (size + block - 1) // block
    for s in range((groups + k - 1) // k):
        g = s * k + s % k
        if g >= groups:
            g = s * k
        at = g * block + 17
        f.seek(at); b = f.read(1); f.seek(at); f.write(bytes([b[0] ^ 1]))
    f.flush(); os.fsync(f.fileno())
EOF
}
get_rate() { taskset -c 1 curl -sf -o /dev/null -w '%{speed_download}' "http://127.0.0.1:18380/o/$1"; }
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

printf 'run\tput_ec\tput_off\tget_healthy\tget_degraded\n'
rows=()
for run in $(seq 1 "$RUNS"); do
  put_on=$(ingest 18380)
  put_off=$(ingest 18381)
  healthy=(); degraded=()
  for i in $(seq 1 "$OBJECTS"); do
    head -c "$((OBJECT_MIB << 20))" /dev/urandom >"$WORK/obj"
    addr=$(put_file "$WORK/obj")
    if [ $((i % 2)) = 0 ]; then rot_every_stripe "$(object_file "$addr")"; degraded+=("$addr"); else healthy+=("$addr"); fi
  done
  h=$(for a in "${healthy[@]}"; do get_rate "$a"; echo; done | median)
  d=$(for a in "${degraded[@]}"; do get_rate "$a"; echo; done | median)
  row=$(printf '%s\t%s\t%s\t%s\t%s' "$run" "$put_on" "$put_off" "$h" "$d")
  echo "$row"; rows+=("$row")
done
metric() { curl -sf "http://127.0.0.1:18780/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
# Repairs write back behind the reads (deferred while reads are in flight): wait for them.
for _ in $(seq 1 100); do [ "$(metric ron_ec_missing_shards)" = 0 ] && break; sleep 0.1; done
degraded_reads=$(curl -sf "http://127.0.0.1:18780/metrics" | awk '/^ron_ec_degraded_reads_total/ { print $2 }')
repaired=$(curl -sf "http://127.0.0.1:18780/metrics" | awk '/^ron_ec_repair_bytes_total/ { print $2 }')
col() { printf '%s\n' "${rows[@]}" | cut -f"$1" | median; }
echo
echo "medians of $RUNS runs, GB/s (1e9 B/s): ron $(git rev-parse --short HEAD), --ec $EC vs off, cache $CACHE"
echo "degraded reads served: $degraded_reads groups; repair wrote $repaired bytes; blocks still missing: $(metric ron_ec_missing_shards)"
python3 - "$(col 2)" "$(col 3)" "$(col 4)" "$(col 5)" <<'EOF'
import sys
on, off, healthy, degraded = map(float, sys.argv[1:])
print("| measure | value | baseline | ratio |")
print("|---|---:|---:|---:|")
print(f"| PUT 1 MiB x 16 clients, EC on vs off | {on/1e9:.2f} | {off/1e9:.2f} | {on/off:.2f} |")
print(f"| cold GET of a degraded object vs a healthy one | {degraded/1e9:.2f} | {healthy/1e9:.2f} | {degraded/healthy:.2f} |")
EOF
