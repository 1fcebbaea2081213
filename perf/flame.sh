#!/usr/bin/env bash
# Flamegraph of one ron-bench workload against a ron node.
#
#   bash perf/flame.sh get_4KiB        # or get_1MiB, range_64KiB, put_1MiB
#   DURATION=10 bash perf/flame.sh range_64KiB
#
# Builds ron with frame pointers (cargo profile `profiling`, its own target dir so the
# release build stays as it is), starts it with --shards 1 on CPU 0, loads the
# workload's dataset, drives it with ron-bench on CPU 1, and samples the node with
# `perf record -e cpu-clock -g` (software clock: works on VMs without hardware
# counters). Writes, under perf/out/:
#   flame-<workload>.svg   the flamegraph (inferno)
#   top-<workload>.txt     where the time goes: kernel / ron / libc shares, then the
#                          top functions by self time
# Installs linux-perf and inferno if missing. Talks only to 127.0.0.1; stops what it
# started.
set -euo pipefail
cd "$(dirname "$0")/.."

WORKLOAD=${1:-get_4KiB}
DURATION=${DURATION:-8}
PORT=${PORT:-18280}
ADMIN=${ADMIN:-18880}
OUT=perf/out
WORK=${WORK:-/tmp/ron-flame}
# shellcheck source=../bench/workloads.sh
source bench/workloads.sh
[ -n "${DATA[$WORKLOAD]:-}" ] || { echo "unknown workload $WORKLOAD (${!DATA[*]})" >&2; exit 2; }

if ! command -v perf >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null
fi
command -v inferno-flamegraph >/dev/null || cargo install inferno --locked
RUSTFLAGS="-C force-frame-pointers=yes" cargo build --profile profiling -p ron-engine \
  --target-dir target/profiling
[ -x target/release/ron-bench ] || cargo build --release -p ron-bench
RON=target/profiling/profiling/ron
BENCH=target/release/ron-bench

rm -rf "$WORK"; mkdir -p "$WORK" "$OUT"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
taskset -c 0 "$RON" serve --shards 1 --data-dir "$WORK/data" --http "127.0.0.1:$PORT" \
  --admin "127.0.0.1:$ADMIN" --cache-bytes 512MiB >"$WORK/ron.log" 2>&1 &
ron_pid=$!; pids+=("$ron_pid")
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null && break; sleep 0.1; done

# shellcheck disable=SC2086
"$BENCH" run --target "127.0.0.1:$PORT" --load ${DATA[$WORKLOAD]} --duration 0.5 --warmup 0 \
  --connections 4 --cpus 1 >/dev/null
# shellcheck disable=SC2086
"$BENCH" run --target "127.0.0.1:$PORT" ${DATA[$WORKLOAD]} ${MODE[$WORKLOAD]} --no-verify \
  --connections 64 --cpus 1 --duration "$DURATION" --warmup 1 >"$WORK/bench.txt" &
bench_pid=$!; pids+=("$bench_pid")
sleep 1.5
perf record -e cpu-clock -F 997 -g -p "$ron_pid" -o "$WORK/perf.data" -- sleep $((DURATION - 2)) 2>/dev/null
wait "$bench_pid" || true

perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf > "$WORK/collapsed.txt"
inferno-flamegraph --title "ron $WORKLOAD ($(git rev-parse --short HEAD))" \
  < "$WORK/collapsed.txt" > "$OUT/flame-$WORKLOAD.svg"
{
  echo "ron $WORKLOAD, $(git rev-parse --short HEAD), $(date -u +%FT%TZ)"
  grep -E 'requests|latency' "$WORK/bench.txt"
  echo
  echo "self time by binary:"
  perf report -i "$WORK/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | awk 'NR <= 8'
  echo
  echo "top functions by self time:"
  perf report -i "$WORK/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
    | grep -E '^ +[0-9]' | awk 'NR <= 30' | cut -c1-120
} > "$OUT/top-$WORKLOAD.txt"
cat "$OUT/top-$WORKLOAD.txt"
echo "flamegraph: $OUT/flame-$WORKLOAD.svg"
