#!/usr/bin/env bash
# ron's cold reads and durable ingest against what the disk under its data dir does, in
# the same run.
#
#   bash bench/device_rates.sh                # RUNS=3: about 2 minutes
#   RUNS=5 SIZE_MIB=512 bash bench/device_rates.sh
#   EC=off bash bench/device_rates.sh         # no parity: every byte PUT is written once
#
# ron --shards 1 pinned to CPU 0 with a verified cache (CACHE, default 64 MiB) much
# smaller than the objects, clients (curl) on CPU 1. Per run, interleaved:
#   cold read:  page cache dropped; `dd iflag=direct bs=1M` of one object's file (the
#               device's O_DIRECT read rate), then a whole-object GET of the other
#               object through ron (every group read from disk and verified);
#   ingest:     `dd oflag=direct conv=fsync bs=1M` of SIZE_MIB fresh bytes (the device's
#               best durable write rate), then a PUT of SIZE_MIB fresh bytes to ron
#               (acknowledged once hashed, written and committed durably), then PARALLEL
#               concurrent PUTs of SIZE_MIB/PARALLEL each.
# Prints each run and the medians with ron/device ratios. Talks only to 127.0.0.1, stops
# only what it started (by PID). Needs root for drop_caches (skipped otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
SIZE_MIB=${SIZE_MIB:-256}
PARALLEL=${PARALLEL:-4}
CACHE=${CACHE:-64MiB}
EC=${EC:-auto}                 # the node's --ec: auto is 4+1 on one data dir (1.25x the bytes)
PORT=${PORT:-18280}
ADMIN_PORT=${ADMIN_PORT:-18680}
OAP_PORT=${OAP_PORT:-18644}
WORK=${WORK:-$(mktemp -d /var/tmp/ron-device.XXXXXX)}
RON=target/release/ron
[ -x "$RON" ] || cargo build --release -p ron-engine

pids=()
# shellcheck source=workloads.sh
source bench/workloads.sh  # stop_started
cleanup() { stop_started; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK"

taskset -c 0 "$RON" serve --shards 1 --data-dir "$WORK/data" --http "127.0.0.1:$PORT" \
  --admin "127.0.0.1:$ADMIN_PORT" --oap "127.0.0.1:$OAP_PORT" --cache-bytes "$CACHE" \
  --ec "$EC" >"$WORK/ron.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null && break; sleep 0.1; done

fresh() { head -c "$((SIZE_MIB << 20))" /dev/urandom >"$1"; }
put() { taskset -c 1 curl -sf -T "$1" "http://127.0.0.1:$PORT/o" | grep -o 'b3:[0-9a-f]*' | head -1; }
# bytes per second of a dd run, from dd's own summary line
dd_rate() { dd "$@" 2>&1 | awk '/copied/ { print $1 / $(NF-3) }'; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
object_file() { find "$WORK/data" -type f -name "${1#b3:}*" | head -1; }

# Objects for the cold reads, taking turns: dd reads one while ron reads the other, which
# ron last read two runs ago (evicted since by a whole read of the first: CACHE is much
# smaller than an object).
fresh "$WORK/a"; fresh "$WORK/b"
objects=("$(put "$WORK/a")" "$(put "$WORK/b")")
for o in "${objects[@]}"; do
  [ -n "$(object_file "$o")" ] || { echo "object file of $o not found" >&2; exit 1; }
done

printf 'run\tdd_read_direct\tron_cold_get\tdd_write_direct_fsync\tron_put\tron_put_x%s\n' "$PARALLEL"
results=()
for run in $(seq 1 "$RUNS"); do
  by_dd=${objects[$((run % 2))]}; by_ron=${objects[$(((run + 1) % 2))]}
  drop_caches
  dd_read=$(dd_rate if="$(object_file "$by_dd")" of=/dev/null bs=1M iflag=direct)
  drop_caches
  get=$(taskset -c 1 curl -sf -o /dev/null -w '%{speed_download}' "http://127.0.0.1:$PORT/o/$by_ron")
  fresh "$WORK/w"
  dd_write=$(dd_rate if="$WORK/w" of="$WORK/dd.out" bs=1M oflag=direct conv=fsync)
  rm -f "$WORK/dd.out"
  fresh "$WORK/w"
  put_rate=$(taskset -c 1 curl -sf -o /dev/null -w '%{speed_upload}' -T "$WORK/w" "http://127.0.0.1:$PORT/o")
  part=$((SIZE_MIB / PARALLEL))
  for i in $(seq 1 "$PARALLEL"); do head -c "$((part << 20))" /dev/urandom >"$WORK/p$i"; done
  started=$(date +%s.%N)
  cpids=()
  for i in $(seq 1 "$PARALLEL"); do
    taskset -c 1 curl -sf -o /dev/null -T "$WORK/p$i" "http://127.0.0.1:$PORT/o" & cpids+=("$!")
  done
  for p in "${cpids[@]}"; do wait "$p"; done
  ended=$(date +%s.%N)
  parallel=$(echo "$((part * PARALLEL << 20)) / ($ended - $started)" | bc -l)
  row=$(printf '%s\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f' "$run" "$dd_read" "$get" "$dd_write" "$put_rate" "$parallel")
  echo "$row"; results+=("$row")
done

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
col() { printf '%s\n' "${results[@]}" | cut -f"$1" | median; }
r=$(col 2); g=$(col 3); w=$(col 4); p=$(col 5); q=$(col 6)
echo
echo "medians of $RUNS runs, GB/s (1e9 B/s): ron $(git rev-parse --short HEAD), cache $CACHE, --ec $EC, ${SIZE_MIB} MiB objects"
printf '| measure | device | ron | ron / device |\n|---|---:|---:|---:|\n'
row() { awk -v name="$1" -v d="$2" -v r="$3" 'BEGIN { printf "| %s | %.2f | %.2f | %.2f |\n", name, d / 1e9, r / 1e9, r / d }'; }
row "cold whole-object GET vs dd iflag=direct bs=1M" "$r" "$g"
row "PUT (1 upload) vs dd oflag=direct conv=fsync bs=1M" "$w" "$p"
row "PUT ($PARALLEL concurrent uploads) vs the same dd" "$w" "$q"
