#!/usr/bin/env bash
# OAP/1 vs HTTP/1.1 on the same node, each plain and over TLS.
#
#   bash bench/protocols.sh                 # RUNS=3 DURATION=6: about 4 minutes
#   RUNS=5 DURATION=10 ONLY=get_4KiB bash bench/protocols.sh
#
# One ron node (--shards 1, pinned to CPU 0, a `ron cert --dev` certificate on its TLS
# listener), ron-bench pinned to CPU 1 as the only client (wrk speaks neither OAP nor
# TLS-with-ALPN). Same dataset for all four transports (bench/workloads.sh).
# 1. correctness: a short run per workload and transport with every body verified;
# 2. peak: RUNS rounds; each round runs every transport once, in turn, so drift of the
#    machine spreads over all of them; medians.
# Prints a table per workload and the OAP/HTTP and TLS/plain ratios. Talks only to
# 127.0.0.1, stops what it started (by PID).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-64}
HTTP_PORT=${HTTP_PORT:-18080}
OAP_PORT=${OAP_PORT:-18444}
TLS_PORT=${TLS_PORT:-18443}
ADMIN_PORT=${ADMIN_PORT:-18600}
WORK=${WORK:-/tmp/ron-protocols}
RON=target/release/ron
BENCH=target/release/ron-bench
TRANSPORTS="http oap http+tls oap+tls"

[ -x "$RON" ] && [ -x "$BENCH" ] || cargo build --release -p ron-engine -p ron-bench
rm -rf "$WORK"; mkdir -p "$WORK/json"
pids=()
trap stop_started EXIT

# shellcheck source=workloads.sh
source bench/workloads.sh
WORKLOADS=${ONLY:-"get_4KiB get_1MiB"}

"$RON" cert --dev --out "$WORK/tls" >/dev/null
taskset -c 0 "$RON" serve --shards 1 --data-dir "$WORK/ron-data" --http "127.0.0.1:$HTTP_PORT" \
  --oap "127.0.0.1:$OAP_PORT" --tls "127.0.0.1:$TLS_PORT" --cert "$WORK/tls/cert.pem" \
  --key "$WORK/tls/key.pem" --admin "127.0.0.1:$ADMIN_PORT" --cache-bytes 512MiB \
  >"$WORK/ron.log" 2>&1 &
ron_pid=$!; pids+=("$ron_pid")
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null && break; sleep 0.1; done
# Ready, and the node answering is this one (not another still exiting on the same ports).
kill -0 "$ron_pid" 2>/dev/null && curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null \
  || { echo "ron did not get ready:" >&2; tail -n 5 "$WORK/ron.log" >&2; exit 1; }

# Flags of ron-bench for a transport.
flags() {
  case $1 in
    http) echo "--target 127.0.0.1:$HTTP_PORT --proto http" ;;
    oap) echo "--target 127.0.0.1:$OAP_PORT --proto oap" ;;
    http+tls) echo "--target 127.0.0.1:$TLS_PORT --proto http --tls-insecure" ;;
    oap+tls) echo "--target 127.0.0.1:$TLS_PORT --proto oap --tls-insecure" ;;
  esac
}

# Busy and total jiffies of CPU 0 (server) and CPU 1 (client) from /proc/stat, and both
# CPUs' busy shares between two such readings.
cpus() { awk '$1 == "cpu0" || $1 == "cpu1" { b = $2 + $3 + $4 + $7 + $8 + $9; printf "%d %d ", b, b + $5 + $6 }' /proc/stat; }
busy_shares() { echo "$1 $2" | awk '{ printf "%.3f %.3f", ($5 - $1) / ($6 - $2), ($7 - $3) / ($8 - $4) }'; }
json_field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$1" "$2"; }

echo "== load and verify (every body checked)" >&2
for w in $WORKLOADS; do
  # shellcheck disable=SC2086
  "$BENCH" run $(flags oap) --load ${DATA[$w]} --duration 0.2 --warmup 0 --connections 1 --cpus 1 >/dev/null
  for t in $TRANSPORTS; do
    # shellcheck disable=SC2086
    "$BENCH" run $(flags "$t") ${DATA[$w]} ${MODE[$w]} --connections 8 --cpus 1 --duration 1 \
      --warmup 0.2 --json "$WORK/json/verify-$t-$w.json" >/dev/null \
      || { echo "verification failed: $t $w" >&2; exit 1; }
  done
done

declare -A LINES
echo "== peak runs, $RUNS rounds x ${DURATION}s per transport" >&2
for w in $WORKLOADS; do
  for i in $(seq 1 "$RUNS"); do
    for t in $TRANSPORTS; do
      json="$WORK/json/peak-$t-$w-$i.json"
      before=$(cpus)
      # shellcheck disable=SC2086
      "$BENCH" run $(flags "$t") ${DATA[$w]} ${MODE[$w]} --connections "$CONNS" --cpus 1 \
        --duration "$DURATION" --warmup "$WARMUP" --no-verify --json "$json" >/dev/null
      after=$(cpus)
      errors=$(json_field "$json" "d['unexpected_statuses'] + d['io_errors']")
      [ "$errors" = 0 ] || echo "  $t $w: $errors errors" >&2
      LINES[$t,$w]+="$(json_field "$json" "d['req_per_s']") $(json_field "$json" "d['body_bytes_per_s']") $(json_field "$json" "d['latency_us']['p99']") $(busy_shares "$before" "$after")"$'\n'
    done
  done
done

col() { printf '%s' "${LINES[$1,$2]}" | awk -v c="$3" 'NF { print $c }' | median; }
percore() { printf '%s' "${LINES[$1,$2]}" | awk 'NF && $4 > 0 { print $1 / $4 }' | median; }

echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"
echo "ron $(git rev-parse --short HEAD), --shards 1 on CPU 0; ron-bench on CPU 1, $CONNS connections; $RUNS rounds x ${DURATION}s (+${WARMUP}s warm-up); medians"
for w in $WORKLOADS; do
  echo
  echo "$w:"
  echo "| transport | req/s | MB/s | p99 ms | server CPU busy | client CPU busy | req/s per busy server core |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for t in $TRANSPORTS; do
    printf '| %s | %.0f | %.0f | %.2f | %.0f %% | %.0f %% | %.0f |\n' "$t" "$(col "$t" "$w" 1)" \
      "$(awk -v b="$(col "$t" "$w" 2)" 'BEGIN { print b / 1e6 }')" \
      "$(awk -v p="$(col "$t" "$w" 3)" 'BEGIN { print p / 1000 }')" \
      "$(awk -v c="$(col "$t" "$w" 4)" 'BEGIN { print c * 100 }')" \
      "$(awk -v c="$(col "$t" "$w" 5)" 'BEGIN { print c * 100 }')" "$(percore "$t" "$w")"
  done
done
echo
echo "ratios (medians of req/s; per busy core in brackets):"
echo "| workload | OAP / HTTP | OAP+TLS / OAP | HTTP+TLS / HTTP |"
echo "|---|---:|---:|---:|"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
for w in $WORKLOADS; do
  printf '| %s | %s (%s) | %s (%s) | %s (%s) |\n' "$w" \
    "$(ratio "$(col oap "$w" 1)" "$(col http "$w" 1)")" "$(ratio "$(percore oap "$w")" "$(percore http "$w")")" \
    "$(ratio "$(col oap+tls "$w" 1)" "$(col oap "$w" 1)")" "$(ratio "$(percore oap+tls "$w")" "$(percore oap "$w")")" \
    "$(ratio "$(col http+tls "$w" 1)" "$(col http "$w" 1)")" "$(ratio "$(percore http+tls "$w")" "$(percore http "$w")")"
done
