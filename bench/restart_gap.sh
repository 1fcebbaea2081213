#!/usr/bin/env bash
# How long the HTTP port refuses connections across a restart, done the way
# `systemctl restart ron` does it: SIGTERM, wait for the exit (drain), start again, and
# the port accepts once the new node has bound its listeners (READY=1 follows).
#
#   bash bench/restart_gap.sh          # RUNS=5; release binary; loopback only
#
# A prober connects to 127.0.0.1:$PORT every 1 ms and records the first refused and the
# next accepted connect; prints each run's gap and the median. Stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
PORT=${PORT:-18180}
bin=target/release/ron
[ -x "$bin" ] || cargo build --release -p ron-engine
dir=$(mktemp -d)
args=(serve --data-dir "$dir/data" --http "127.0.0.1:$PORT" --oap 127.0.0.1:$((PORT + 1))
      --admin 127.0.0.1:$((PORT + 2)))
start() { "$bin" "${args[@]}" >>"$dir/log" 2>&1 & pid=$!; }
ready() {
  for _ in $(seq 1 3000); do
    curl -fs "http://127.0.0.1:$((PORT + 2))/readyz" >/dev/null && return 0
    sleep 0.01
  done
  echo "not ready" >&2; exit 1
}
cleanup() { kill "$pid" 2>/dev/null || true; kill "$prober" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

start; ready
gaps=()
for run in $(seq 1 "$RUNS"); do
  python3 - "$PORT" "$dir/gap" <<'PY' &
import socket, sys, time
port, out = int(sys.argv[1]), sys.argv[2]
refused_at = None
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
        if refused_at is not None:
            open(out, "w").write("%.1f\n" % ((time.monotonic() - refused_at) * 1000))
            break
    except OSError:
        refused_at = refused_at or time.monotonic()
    finally:
        s.close()
    time.sleep(0.001)
PY
  prober=$!
  sleep 0.2
  kill -TERM "$pid"; wait "$pid" || true
  start
  wait "$prober"
  ready
  gaps+=("$(cat "$dir/gap")")
  echo "run $run: port refused connections for ${gaps[-1]} ms"
done
printf '%s\n' "${gaps[@]}" | sort -n | awk '{a[NR]=$1} END {print "median: " a[int((NR+1)/2)] " ms over " NR " restarts"}'
