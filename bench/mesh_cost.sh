#!/usr/bin/env bash
# What a request costs when it crosses the mesh (its connection on one shard, its object
# owned by the other) against one served by the shard that owns it, at --shards 2
# (issue 39, item 4; the model built on these figures is in docs/PERF.md).
#
#   bash bench/mesh_cost.sh                 # RUNS=3: about 2 minutes
#   RUNS=5 SETS="1MiB" CLIENTS=16 bash bench/mesh_cost.sh   # 16 connections at once
#
# For each dataset (4 KiB: 2,000 objects; 1 MiB: 200) and each run, on a freshly started
# node (`ron serve --shards 2 --cache-bytes 2GiB`, so every cache starts cold; the
# objects are on its disk from the first start):
#   - which shard owns each object: its partition (the address's top 12 bits) in the
#     data dir's partitions.bin (docs/design/partition-table.md), store modulo shards;
#   - which shard a connection lands on: SO_REUSEPORT picks a listener by a hash of the
#     connection's addresses;
#     the walker (Python's http.client) opens connections until CLIENTS have landed on
#     the shard it wants, reading each one's shard from the X-Corr-ID (`<shard>-<seq>`)
#     of a 404 for a path that is no object;
#   - then the walker goes through a list of objects once, dealt out round robin over
#     its connections, one request at a time on each, every answer a 200 with a body:
#       local cold     shard 1's objects over a shard-1 connection, then shard 0's over a
#                      shard-0 one (read off the disk, verified, cached by the owner)
#       local hit      shard 0's objects over the shard-0 connection again (its cache)
#       cross, first   shard 1's objects over the shard-0 connection: shard 0 asks shard 1
#                      for the metadata and each group over the mesh (from shard 1's
#                      cache), verifies each group again and caches it itself
#       cross, again   the same again: now shard 0's own cache
#   CPU per request: the run time of each shard's threads (its executor and its blocking
#   pool, which share the name ron-shard-N; /proc/PID/task/*/schedstat, ns; the softirq
#   work the kernel does on a shard's CPU for loopback counts only when it runs in a
#   thread's context) over the phase, divided by its requests.
# The mesh hop's cost is "cross, first" minus "local hit": what shard 0 pays for an
# object it does not own the first time it serves it (and shard 1's share of the work).
# Prints a table per dataset, medians of RUNS.
# Variables: RUNS CLIENTS SETS RON BENCH WORK PORT.
# Talks only to 127.0.0.1, stops what it started (by PID).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
CLIENTS=${CLIENTS:-1}           # connections walking a phase's list at once
SETS=${SETS:-"4KiB 1MiB"}
RON=${RON:-target/release/ron}
BENCH=${BENCH:-target/release/ron-bench}
WORK=${WORK:-/tmp/ron-mesh-cost}
PORT=${PORT:-18380}
ADMIN=$((PORT + 2))
declare -A DATASET=(
  [4KiB]="--objects 2000 --size 4096 --seed 31"
  [1MiB]="--objects 200 --size 1048576 --seed 32"
)
for s in $SETS; do
  [ -n "${DATASET[$s]:-}" ] || { echo "unknown dataset $s (${!DATASET[*]})" >&2; exit 2; }
done
if [ ! -x "$RON" ] || [ ! -x "$BENCH" ]; then cargo build --release -p ron-engine -p ron-bench; fi

pids=()
# shellcheck source=workloads.sh
source bench/workloads.sh
trap stop_started EXIT

start_node() {
  "$RON" serve --shards 2 --data-dir "$WORK/data" --http "127.0.0.1:$PORT" \
    --oap "127.0.0.1:$((PORT + 1))" --admin "127.0.0.1:$ADMIN" --cache-bytes 2GiB \
    >>"$WORK/ron.log" 2>&1 &
  node=$!; pids=("$node")
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null \
    || { echo "ron did not get ready:" >&2; tail -n 5 "$WORK/ron.log" >&2; exit 1; }
  # The scrubber runs on the shards' threads: paused, so it is not counted as requests'.
  curl -sf -X POST "http://127.0.0.1:$ADMIN/admin/scrub/pause" >/dev/null
}
stop_node() { stop_started; pids=(); }

# Walks list $2 over CLIENTS connections that landed on shard $3, at once (the list dealt
# out round robin, one request at a time on each), and appends "phase ns-per-request
# shard0-ns shard1-ns" to $WORK/phases.txt. A connection's shard is read from the
# X-Corr-ID of a 404 for a path that names no object (no storage touched); connections
# that land on the other shard are closed. The shards' run time is read right before the
# first request of the walk and right after the last answer.
phase() {
  python3 - "$1" "$2" "$3" "$CLIENTS" "$PORT" "$node" "$WORK/phases.txt" <<'PY'
import glob, http.client, sys, threading
name, path, shard, clients, port, pid, out = sys.argv[1:]
urls = open(path).read().split()
def run_ns(n):
    # The shard's executor and its blocking pool's threads (arena set-up, LMDB) share
    # the name; all of them are the shard's cost.
    total, seen = 0, False
    for task in glob.glob(f"/proc/{pid}/task/*"):
        try:
            if open(f"{task}/comm").read().strip() == f"ron-shard-{n}":
                total += int(open(f"{task}/schedstat").read().split()[0])
                seen = True
        except FileNotFoundError:
            pass  # a pool thread that ended
    if not seen:
        sys.exit(f"no thread ron-shard-{n}")
    return total
conns = []
for _ in range(1000):
    if len(conns) == int(clients):
        break
    c = http.client.HTTPConnection("127.0.0.1", int(port))
    c.request("GET", "/probe-which-shard")
    r = c.getresponse(); r.read()
    if r.status != 404:
        sys.exit(f"probe: {r.status}")
    if r.getheader("X-Corr-ID", "").split("-")[0] == shard:
        conns.append(c)
    else:
        c.close()
else:
    sys.exit(f"no connection landed on shard {shard}")
bad = []
def walk(c, part):
    for u in part:
        c.request("GET", u)
        r = c.getresponse(); body = r.read()
        if r.status != 200 or not body:
            bad.append((u, r.status))
threads = [threading.Thread(target=walk, args=(c, urls[i::len(conns)])) for i, c in enumerate(conns)]
a0, a1 = run_ns(0), run_ns(1)
for t in threads: t.start()
for t in threads: t.join()
b0, b1 = run_ns(0), run_ns(1)
if bad:
    sys.exit(f"{name}: {len(bad)} answers not 200, e.g. {bad[0]}")
n = len(urls)
with open(out, "a") as f:
    f.write(f"{name} {(b0 - a0 + b1 - a1) // n} {(b0 - a0) // n} {(b1 - a1) // n}\n")
PY
}

echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"
echo "ron $(git rev-parse --short HEAD 2>/dev/null || echo '?') at $RON; $RUNS runs per dataset"
for set in $SETS; do
  rm -rf "$WORK"; mkdir -p "$WORK"
  start_node
  # shellcheck disable=SC2086
  "$BENCH" dataset --list "$WORK/all.txt" ${DATASET[$set]}
  # shellcheck disable=SC2086
  "$BENCH" run --target "127.0.0.1:$PORT" --load ${DATASET[$set]} --duration 0.2 --warmup 0 \
    --connections 1 --cpus 1 >/dev/null
  python3 - "$WORK/data/partitions.bin" "$WORK/all.txt" "$WORK" <<'PY'
import struct, sys
table = open(sys.argv[1], "rb").read()
assert table[:5] == b"RONPT" and len(table) == 8 + 2 + 4096 * 2 + 32, "partitions.bin format"
shards = struct.unpack(">H", table[8:10])[0]
stores = struct.unpack(">4096H", table[10:10 + 8192])
lists = [open(f"{sys.argv[3]}/own{s}.txt", "w") for s in range(2)]
for url in open(sys.argv[2]).read().split():
    partition = int(url.split("b3:")[1][:3], 16)
    lists[stores[partition] % shards].write(url + "\n")
PY
  echo "$set: $(wc -l <"$WORK/own0.txt") objects owned by shard 0, $(wc -l <"$WORK/own1.txt") by shard 1" >&2
  stop_node
  : >"$WORK/phases.txt"
  for _ in $(seq 1 "$RUNS"); do
    start_node
    phase "local_cold(1)" "$WORK/own1.txt" 1
    phase "local_cold(0)" "$WORK/own0.txt" 0
    phase "local_hit" "$WORK/own0.txt" 0
    phase "cross_first" "$WORK/own1.txt" 0
    phase "cross_again" "$WORK/own1.txt" 0
    mesh=$(curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '$1 == "ron_mesh_requests_total" { print $2 }')
    echo "mesh_requests $mesh 0 0" >>"$WORK/phases.txt"
    stop_node
  done
  echo
  echo "$set objects, $CLIENTS connection(s) at once, one request at a time on each, CPU µs per request (both shards; medians of $RUNS):"
  echo "| phase | µs per request | shard 0 | shard 1 |"
  echo "|---|---:|---:|---:|"
  for p in "local_cold(1)" "local_cold(0)" local_hit cross_first cross_again; do
    row=$p
    for col in 2 3 4; do
      v=$(awk -v p="$p" -v c="$col" '$1 == p { print $c }' "$WORK/phases.txt" | median)
      row="$row | $(awk -v v="$v" 'BEGIN { printf "%.1f", v / 1000 }')"
    done
    echo "| $row |"
  done
  hit=$(awk '$1 == "local_hit" { print $2 }' "$WORK/phases.txt" | median)
  first=$(awk '$1 == "cross_first" { print $2 }' "$WORK/phases.txt" | median)
  echo "mesh hop (cross, first - local hit): $(awk -v a="$first" -v b="$hit" 'BEGIN { printf "%.1f µs per request (%.2fx a local hit)", (a - b) / 1000, a / b }')"
  echo "ron_mesh_requests_total at the end of a run (median): $(awk '$1 == "mesh_requests" { print $2 }' "$WORK/phases.txt" | median)"
done
