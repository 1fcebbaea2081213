#!/usr/bin/env bash
# HTTP/2 over TLS with h2load, ron beside nginx (`listen ... ssl http2`), on the same
# objects, per busy server core (issue 55).
#
#   bash bench/http2.sh
#   STREAMS="1 16" ONLY=4KiB RUNS=5 bash bench/http2.sh
#
# Servers: `ron serve --shards S --tls` and nginx with S workers (sendfile, open_file_cache,
# `ssl http2`, its default 128 streams per connection), both with the same `ron cert --dev`
# certificate, pinned to CPUs 0..S-1; the same objects in both: 2,000 x 4 KiB and
# 200 x 1 MiB (ron-bench's deterministic datasets), asked for as /o/b3:<hex>.
# Load: h2load on the other CPUs, CONNS connections (default 8) with M streams each (-m,
# for M in STREAMS, default "1 16 64"), the URIs of a dataset shuffled (h2load asks
# for them in turn), DURATION s measured after a 1 s warm-up, RUNS runs, ron and nginx
# alternating. Per run: req/s, and the server's own CPU time over the window (every
# thread of the process and its children, /proc/PID/task/*/schedstat); per server core =
# req/s / that. On fewer than 4 CPUs (or QUOTA set) the 2-core method of
# bench/many_cores.sh: S = 1, both servers in a cgroup of QUOTA (0.5) of a core on CPU 0,
# h2load on CPU 1, so the server and not the client is the bottleneck.
#
# Variables: SHARDS ONLY STREAMS CONNS RUNS DURATION QUOTA RON BENCH NGINX WORK PORT.
# Talks only to 127.0.0.1, stops what it started (by PID), removes its cgroup.
set -euo pipefail
cd "$(dirname "$0")/.."
# nginx_config, stop_started, median.
# shellcheck source=workloads.sh
source bench/workloads.sh
# make_cgroup, start_pinned, affinity_masks, tree_ns.
# shellcheck source=cores.sh
source bench/cores.sh

RUNS=${RUNS:-3}
DURATION=${DURATION:-6}
CONNS=${CONNS:-8}
STREAMS=${STREAMS:-"1 16 64"}
RON=${RON:-target/release/ron}
BENCH=${BENCH:-target/release/ron-bench}
NGINX=${NGINX:-nginx}
WORK=${WORK:-/tmp/ron-http2}
PORT=${PORT:-18780}
NGINX_PORT=$((PORT + 1))
ADMIN=$((PORT + 2))
WORKLOADS=${ONLY:-"4KiB 1MiB"}
CPUS=$(nproc)
if [ -z "${QUOTA:-}" ] && [ "$CPUS" -lt 4 ]; then QUOTA=0.5; fi
QUOTA=${QUOTA:-}
[ "$QUOTA" = none ] && QUOTA=
if [ -n "$QUOTA" ]; then S=1; else S=${SHARDS:-$((CPUS / 2))}; fi
declare -A SET=([4KiB]="--objects 2000 --size 4096 --seed 11"
  [1MiB]="--objects 200 --size 1048576 --seed 12")
for w in $WORKLOADS; do
  [ -n "${SET[$w]:-}" ] || { echo "unknown workload $w (${!SET[*]})" >&2; exit 2; }
done
command -v "$NGINX" >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; }
command -v h2load >/dev/null || { apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null; }
if [ ! -x "$RON" ] || [ ! -x "$BENCH" ]; then cargo build --release -p ron-engine -p ron-bench; fi

pids=()
cleanup() {
  stop_started
  if [ -n "$cgroup" ] && [ -d "$cgroup" ]; then rmdir "$cgroup" 2>/dev/null || true; fi
}
trap cleanup EXIT

[ -n "$QUOTA" ] && make_cgroup
rm -rf "$WORK"; mkdir -p "$WORK/www" "$WORK/nginx"
"$RON" cert --dev --out "$WORK/tls" >/dev/null
: >"$WORK/runs.txt"
last=$((S - 1))
if [ -n "$QUOTA" ]; then client_cpus=1; else client_cpus=$S-$((CPUS - 1)); fi
start_pinned "0-$last" "$WORK/ron.log" "$RON" serve --shards "$S" --data-dir "$WORK/ron-data" \
  --http "127.0.0.1:$((PORT + 3))" --oap "127.0.0.1:$((PORT + 4))" --admin "127.0.0.1:$ADMIN" \
  --tls "127.0.0.1:$PORT" --cert "$WORK/tls/cert.pem" --key "$WORK/tls/key.pem" --cache-bytes 2GiB
ron_pid=$started
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null || { echo "ron did not get ready" >&2; exit 1; }
curl -sf -X POST "http://127.0.0.1:$ADMIN/admin/scrub/pause" >/dev/null
for w in $WORKLOADS; do
  # shellcheck disable=SC2086
  "$BENCH" dataset --dir "$WORK/www" --list "$WORK/$w.paths" ${SET[$w]}
  # shellcheck disable=SC2086
  "$BENCH" run --target "127.0.0.1:$((PORT + 3))" --load ${SET[$w]} --duration 0.2 --warmup 0 \
    --connections 1 >/dev/null
  shuf --random-source=<(yes) "$WORK/$w.paths" >"$WORK/$w.shuffled"
done
nginx_config "$WORK/nginx" "$WORK/www" "$NGINX_PORT" "$S" "$(affinity_masks "$S")" 10000 "$WORK/tls" \
  >"$WORK/nginx/nginx.conf"
start_pinned "0-$last" "$WORK/nginx.log" "$NGINX" -c "$WORK/nginx/nginx.conf" -g 'daemon off;'
nginx_pid=$started
sleep 1
for w in $WORKLOADS; do
  for m in $STREAMS; do
    for run in $(seq 1 "$RUNS"); do
      for server in ron nginx; do
        if [ $server = ron ]; then port=$PORT; pid=$ron_pid; else port=$NGINX_PORT; pid=$nginx_pid; fi
        sed "s|^|https://localhost:$port|" "$WORK/$w.shuffled" >"$WORK/uris"
        taskset -c "$client_cpus" h2load -c "$CONNS" -m "$m" -t 1 -D "$DURATION" --warm-up-time 1 \
          -i "$WORK/uris" >"$WORK/h2load.txt" 2>&1 &
        load=$!
        sleep 1.2
        ns0=$(tree_ns "$pid")
        sleep "$DURATION"
        ns1=$(tree_ns "$pid")
        wait "$load" || { cat "$WORK/h2load.txt" >&2; exit 1; }
        rps=$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' "$WORK/h2load.txt")
        bad=$(awk '/^requests:/ { print $10 + $12 }' "$WORK/h2load.txt")
        ok2xx=$(awk '/^status codes:/ { print $3 }' "$WORK/h2load.txt")
        if [ -z "$rps" ] || [ "${bad:-1}" != 0 ] || [ "${ok2xx:-0}" = 0 ]; then
          echo "$server $w m=$m: failed or errored requests" >&2; cat "$WORK/h2load.txt" >&2; exit 1
        fi
        cores=$(awk -v a="$ns0" -v b="$ns1" -v d="$DURATION" 'BEGIN { printf "%.3f", (b - a) / 1e9 / d }')
        echo "$w $m $server $rps $cores" >>"$WORK/runs.txt"
      done
    done
  done
done

git_rev=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
echo "machine: $CPUS CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"
echo "ron binary $RON (tree at $git_rev); nginx $("$NGINX" -v 2>&1 | cut -d/ -f2); $(h2load --version | head -1); $CONNS connections; $RUNS runs x ${DURATION}s, medians"
if [ -n "$QUOTA" ]; then
  echo "2-core method: S = 1, both servers in a cgroup of $QUOTA of a core on CPU 0, h2load on CPU 1"
else
  echo "S = $S: servers on CPUs 0-$last, h2load on CPUs $client_cpus"
fi
echo "| workload | streams per connection | ron req/s | nginx req/s | ron cores | nginx cores | ron / nginx per server core |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for w in $WORKLOADS; do
  for m in $STREAMS; do
    col() { awk -v w="$w" -v m="$m" -v v="$1" -v c="$2" '$1 == w && $2 == m && $3 == v { print $c }' "$WORK/runs.txt" | median; }
    per() { awk -v w="$w" -v m="$m" -v v="$1" '$1 == w && $2 == m && $3 == v { print $4 / $5 }' "$WORK/runs.txt" | median; }
    ratio=$(awk -v a="$(per ron)" -v b="$(per nginx)" 'BEGIN { printf "%.2f", a / b }')
    echo "| $w | $m | $(col ron 4 | xargs printf '%.0f') | $(col nginx 4 | xargs printf '%.0f') | $(col ron 5) | $(col nginx 5) | **$ratio** |"
  done
done
