#!/usr/bin/env bash
# Durable small-object ingest: how many 4 KiB PUTs one shard acknowledges per second
# (each a 201 sent only once its bytes are durable in a synced segment), and at what
# latency, with many clients at once.
#
#   bash bench/small_puts.sh                   # RUNS=3 of 10 s: about a minute
#   RUNS=5 SIZE=16384 CONNS=128 bash bench/small_puts.sh
#
# Per run: a fresh data dir, `ron serve --shards 1` pinned to CPU 0, `ron-bench run
# --workload put` on CPU 1 (every PUT a new body; closed loop, CONNS connections).
# Prints each run (PUT/s, p50, p99, how busy CPU 0 was) and the medians, and first what
# the disk's own sync costs in the same directory: 500 writes of SIZE bytes, each
# followed by fdatasync, one at a time (p50, p99, max) — a PUT's p99 cannot beat that
# disk's sync p99 plus the time a batch waits for the sync before it. Talks only to
# 127.0.0.1, stops only what it started (by PID).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
SIZE=${SIZE:-4096}
CONNS=${CONNS:-64}
DURATION=${DURATION:-10}
PORT=${PORT:-18380}
ADMIN_PORT=${ADMIN_PORT:-18780}
WORK=${WORK:-$(mktemp -d /var/tmp/ron-small-puts.XXXXXX)}
RON=${RON:-target/release/ron}
BENCH=${BENCH:-target/release/ron-bench}
[ -x "$RON" ] && [ -x "$BENCH" ] || cargo build --release -p ron-engine -p ron-bench

ron_pid=
cleanup() { [ -n "$ron_pid" ] && kill "$ron_pid" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK"

# One run: prints "put_per_s p50_ms p99_ms cpu0_busy_percent".
run_once() {
  rm -rf "$WORK/data"
  taskset -c 0 "$RON" serve --shards 1 --data-dir "$WORK/data" --http "127.0.0.1:$PORT" \
    --admin "127.0.0.1:$ADMIN_PORT" >"$WORK/ron.log" 2>&1 &
  ron_pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null && break; sleep 0.1; done
  "$BENCH" run --target "127.0.0.1:$PORT" --workload put --put-size "$SIZE" \
    --connections "$CONNS" --cpus 1 --duration "$DURATION" --warmup 2 --busy-cpu 0 \
    --json "$WORK/run.json" >"$WORK/bench.log" 2>&1
  kill "$ron_pid"; wait "$ron_pid" 2>/dev/null || true; ron_pid=
  python3 - "$WORK/run.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
bad = r["unexpected_statuses"] + r["io_errors"]
if bad:
    sys.exit(f"{bad} PUTs failed")
lat = r["latency_us"]
print(f'{r["req_per_s"]:.0f} {lat["p50"] / 1000:.2f} {lat["p99"] / 1000:.2f} {100 * r["busy_share"]:.1f}')
EOF
}

python3 - "$WORK/sync.probe" "$SIZE" <<'EOF'
import os, statistics, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
block = os.urandom(int(sys.argv[2]))
lat = []
for i in range(500):
    t = time.perf_counter()
    os.pwrite(fd, block, i * len(block))
    os.fdatasync(fd)
    lat.append((time.perf_counter() - t) * 1000)
os.close(fd)
os.unlink(sys.argv[1])
lat.sort()
print(f"the disk's own sync ({len(block)}-byte write + fdatasync, 500 in a row): "
      f"p50 {statistics.median(lat):.2f} ms  p99 {lat[494]:.2f} ms  max {lat[-1]:.2f} ms")
EOF
echo "ron --shards 1 (CPU 0), ron-bench on CPU 1: $SIZE-byte PUTs, $CONNS connections, ${DURATION}s runs"
echo "run  put/s  p50_ms  p99_ms  cpu0_busy_%"
results=()
for i in $(seq 1 "$RUNS"); do
  line=$(run_once)
  echo "$i    $line"
  results+=("$line")
done
printf '%s\n' "${results[@]}" | python3 -c '
import statistics, sys
rows = [list(map(float, l.split())) for l in sys.stdin if l.strip()]
med = [statistics.median(c) for c in zip(*rows)]
print(f"median  {med[0]:.0f} PUT/s  p50 {med[1]:.2f} ms  p99 {med[2]:.2f} ms  cpu0 {med[3]:.1f} %")
'
