#!/usr/bin/env bash
# Read-through and lookups in a 5-node cluster on loopback (issue 15).
#
#   bash bench/read_through.sh        # N=200 objects of SIZE=1048576 bytes; release binary
#
# Starts five `ron serve --shards 1 --p2p` nodes (A pinned to CPU 0, the edge E to CPU 1,
# B..D unpinned), stores N objects on A, waits until A has published them all, then:
#   1. lookups: E's admin `/resolve` for every object (the DHT query E runs for a miss),
#      and for N addresses nobody stores; p50/p99 of the wall time;
#   2. direct: every object once from A over HTTP (p50/p99 latency, MB/s), 1 client;
#   3. read-through: every object once from E (cold at E: lookup + verified fetch + store
#      while streaming), 1 client, then again with 8 clients (new objects: the second
#      half of the set is kept for it);
#   4. warm: the same objects from E again (now stored there).
# Each pass reads every body whole and checks its status and length (the nodes verify
# every group; the tests check the bytes).
# Stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200}
SIZE=${SIZE:-1048576}
BASE=${BASE:-19100}
bin=target/release/ron
[ -x "$bin" ] || cargo build --release -p ron-engine
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

start() { # name index cpu [peer]
  local name=$1 i=$2 cpu=$3 peer=${4:-}
  local http=$((BASE + 10 * i)) oap=$((BASE + 10 * i + 1)) admin=$((BASE + 10 * i + 2)) p2p=$((BASE + 10 * i + 3))
  local args=(serve --data-dir "$dir/$name" --shards 1 --http 127.0.0.1:$http --oap 127.0.0.1:$oap
              --admin 127.0.0.1:$admin --p2p 127.0.0.1:$p2p)
  [ -n "$peer" ] && args+=(--peer "127.0.0.1:$peer")
  if [ "$cpu" = any ]; then "$bin" "${args[@]}" >"$dir/$name.log" 2>&1 &
  else taskset -c "$cpu" "$bin" "${args[@]}" >"$dir/$name.log" 2>&1 &
  fi
  pids+=($!)
  for _ in $(seq 1 500); do curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null && return 0; sleep 0.02; done
  echo "$name not ready" >&2; exit 1
}
start a 0 0
for i in 1 2 3; do start "n$i" "$i" any $((BASE + 3)); done
start e 4 1 $((BASE + 3))

python3 - "$BASE" "$N" "$SIZE" <<'PY'
import http.client, json, os, statistics, sys, threading, time
base, n, size = (int(a) for a in sys.argv[1:4])
A, E = ("127.0.0.1", base), ("127.0.0.1", base + 40)
A_ADMIN, E_ADMIN = ("127.0.0.1", base + 2), ("127.0.0.1", base + 42)

def request(addr, method, path, body=None):
    c = http.client.HTTPConnection(*addr, timeout=60)
    c.request(method, path, body=body)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data

def metric(admin, name):
    _, text = request(admin, "GET", "/metrics")
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0

addrs = []
for i in range(n):
    status, body = request(A, "PUT", "/o", os.urandom(size))
    assert status in (200, 201), status
    addrs.append(json.loads(body)["obj"])
deadline = time.time() + 300
while metric(A_ADMIN, "ron_dht_keys_published_total") < n:
    assert time.time() < deadline, "A did not publish"
    time.sleep(0.2)

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

def report(label, times_ms, nbytes=None, wall=None):
    line = f"{label:<44} n={len(times_ms):<4} p50 {pct(times_ms, 50):7.2f} ms  p99 {pct(times_ms, 99):7.2f} ms"
    if nbytes is not None:
        line += f"  {nbytes / wall / 1e6:8.1f} MB/s"
    print(line, flush=True)

def lookups(keys):
    out = []
    for k in keys:
        t = time.perf_counter()
        status, body = request(E_ADMIN, "GET", f"/resolve?hash={k}&limit=8")
        out.append((time.perf_counter() - t) * 1000)
        assert status == 200, (status, body)
    return out

def gets(addr, keys, clients):
    times, lock = [], threading.Lock()
    chunks = [keys[i::clients] for i in range(clients)]
    def run(chunk):
        c = http.client.HTTPConnection(*addr, timeout=60)
        for k in chunk:
            t = time.perf_counter()
            c.request("GET", f"/o/{k}")
            r = c.getresponse()
            body = r.read()
            dt = (time.perf_counter() - t) * 1000
            assert r.status == 200 and len(body) == size, (r.status, len(body))
            with lock:
                times.append(dt)
        c.close()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=run, args=(c,)) for c in chunks]
    for t in threads: t.start()
    for t in threads: t.join()
    return times, time.perf_counter() - t0

import hashlib
missing = ["b3:" + hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
report("lookup, stored on A (E's /resolve)", lookups(addrs))
report("lookup, stored nowhere", lookups(missing))
half = n // 2
first, second = addrs[:half], addrs[half:]
for label, addr, keys, clients in [
    ("direct GET from A, 1 client", A, first, 1),
    ("read-through GET at E (cold), 1 client", E, first, 1),
    ("direct GET from A, 8 clients", A, second, 8),
    ("read-through GET at E (cold), 8 clients", E, second, 8),
    ("GET at E again (stored there), 8 clients", E, second, 8),
]:
    times, wall = gets(addr, keys, clients)
    report(label, times, len(keys) * size, wall)
print("E: fetches %d, stored %d, coalesced %d, bad_group %d, lookups %d" % (
    metric(E_ADMIN, "ron_fetches_total"), metric(E_ADMIN, "ron_fetches_stored_total"),
    metric(E_ADMIN, "ron_fetch_coalesced_waiters_total"),
    metric(E_ADMIN, 'ron_fetch_failures_total{reason="bad_group"}'),
    metric(E_ADMIN, "ron_dht_lookup_ms_count")))
PY
