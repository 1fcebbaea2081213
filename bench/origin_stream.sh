#!/usr/bin/env bash
# A cold 1 GiB read-through from an HTTP origin, with and without the origin's bao
# outboard (issue 38): time to first byte and throughput at an edge with default
# settings, nginx as the origin serving the object (and, for "outboard", the object's
# `.obao` beside it, log 6, as docs/OPERATIONS.md says to make it).
#
#   bash bench/origin_stream.sh              # RUNS=3: about 3 minutes
#   RATE=50m bash bench/origin_stream.sh     # the origin sends at most 50 MB/s (nginx limit_rate)
#
# Each run starts a new edge on an empty data dir (cold: nothing fetched yet) and reads
# the object through it once with curl: time to first byte, total time, and the bytes,
# checked against the address by `ron get` afterwards from the edge's store. Prints every
# run and the medians. Variables: RUNS SIZE RATE WORK RON ORIGIN_PORT EDGE_PORT.
# Talks only to 127.0.0.1; stops what it started (by PID).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
SIZE=${SIZE:-1073741824}
RATE=${RATE:-0}
WORK=${WORK:-/tmp/ron-origin-stream}
RON=${RON:-target/release/ron}
ORIGIN_PORT=${ORIGIN_PORT:-18090}
EDGE_PORT=${EDGE_PORT:-18091}

command -v nginx >/dev/null || {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null
}
[ -x "$RON" ] || cargo build --release -p ron-engine

rm -rf "$WORK"; mkdir -p "$WORK/www/o" "$WORK/nginx"
pids=()
# shellcheck source=workloads.sh
source bench/workloads.sh
trap stop_started EXIT

wait_ready() { for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && return; sleep 0.1; done; echo "not ready on $1" >&2; exit 1; }

echo "== the object: $SIZE random bytes, stored by a helper ron for its address and outboard" >&2
head -c "$SIZE" /dev/urandom >"$WORK/object"
"$RON" serve --data-dir "$WORK/helper" --http 127.0.0.1:18092 --oap 127.0.0.1:18093 --admin 127.0.0.1:18094 \
  >"$WORK/helper.log" 2>&1 &
helper=$!; pids+=("$helper")
wait_ready 18094
addr=$("$RON" put "$WORK/object" --server 127.0.0.1:18093 -q)
mv "$WORK/object" "$WORK/www/o/$addr"
curl -sf -o "$WORK/obao" "http://127.0.0.1:18092/o/$addr.obao"
kill "$helper"; timeout 30 tail --pid="$helper" -f /dev/null || true
echo "   $addr, outboard $(stat -c %s "$WORK/obao") bytes" >&2

rate_line=""; [ "$RATE" != 0 ] && rate_line="limit_rate $RATE;"
cat >"$WORK/nginx/nginx.conf" <<EOF
user $(id -un) $(id -gn);
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 256; }
http {
  access_log $WORK/nginx/access.log;
  sendfile on;
  default_type application/octet-stream;
  client_body_temp_path $WORK/nginx/body;
  server { listen 127.0.0.1:$ORIGIN_PORT; root $WORK/www; $rate_line }
}
EOF
nginx -c "$WORK/nginx/nginx.conf" -g 'daemon off;' >"$WORK/nginx.log" 2>&1 &
pids+=("$!")
sleep 0.5

echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r); origin rate: ${RATE/#0/unlimited}"
printf '%-9s %4s %10s %10s %10s\n' origin run ttfb_s total_s MB/s
for mode in whole outboard; do
  if [ "$mode" = outboard ]; then cp "$WORK/obao" "$WORK/www/o/$addr.obao"; else rm -f "$WORK/www/o/$addr.obao"; fi
  ttfbs=(); rates=()
  for run in $(seq 1 "$RUNS"); do
    rm -rf "$WORK/edge"
    "$RON" serve --data-dir "$WORK/edge" --http "127.0.0.1:$EDGE_PORT" --oap 127.0.0.1:18095 \
      --admin 127.0.0.1:18096 --origin "http://127.0.0.1:$ORIGIN_PORT" >"$WORK/edge.log" 2>&1 &
    edge=$!; pids+=("$edge")
    wait_ready 18096
    read -r ttfb total bytes < <(curl -s -o /dev/null -w '%{time_starttransfer} %{time_total} %{size_download}\n' \
      "http://127.0.0.1:$EDGE_PORT/o/$addr")
    [ "$bytes" = "$SIZE" ] || { echo "$mode run $run: $bytes bytes, not $SIZE" >&2; exit 1; }
    # The copy the edge stored, read back verified over OAP.
    "$RON" get "$addr" --server 127.0.0.1:18095 -q | cmp -s - "$WORK/www/o/$addr" \
      || { echo "$mode run $run: the stored copy differs" >&2; exit 1; }
    streamed=$(curl -s http://127.0.0.1:18096/metrics | awk '$1 == "ron_fetch_origin_streamed_total" { print $2 }')
    [ "$mode" = outboard ] && [ "$streamed" != 1 ] && { echo "outboard run $run: not streamed" >&2; exit 1; }
    rate=$(awk -v b="$SIZE" -v t="$total" 'BEGIN { printf "%.1f", b / t / 1e6 }')
    printf '%-9s %4s %10s %10s %10s\n' "$mode" "$run" "$ttfb" "$total" "$rate"
    ttfbs+=("$ttfb"); rates+=("$rate")
    kill "$edge"; timeout 30 tail --pid="$edge" -f /dev/null || true
  done
  printf '%-9s %4s %10s %10s %10s\n' "$mode" median "$(printf '%s\n' "${ttfbs[@]}" | median)" "-" \
    "$(printf '%s\n' "${rates[@]}" | median)"
done
