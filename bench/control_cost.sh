#!/usr/bin/env bash
# The hot-path cost of quotas and request metrics: small-object GETs per second on
#   baseline  a ron built without them (BASELINE=path/to/ron, e.g. from commit 88890fd),
#   off       this ron with no quota configured (request metrics and latency HDR on),
#   quotas    this ron with a default quota every request passes through (one token
#             bucket pair per client address, limits far above the load).
#
#   BASELINE=/tmp/ron-baseline bash bench/control_cost.sh      # RUNS=5 DURATION=6
#
# One node per variant (--shards 1, pinned to CPU 0), ron-bench pinned to CPU 1, the
# same 4 KiB dataset on each; each round runs every variant once, in turn, so drift of
# the machine spreads over all of them; medians and ratios. PROTOS="http oap" by
# default. Talks only to 127.0.0.1, stops what it started (by PID).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-64}
PROTOS=${PROTOS:-"http oap"}
WORK=${WORK:-/tmp/ron-control-cost}
RON=target/release/ron
BENCH=target/release/ron-bench
BASELINE=${BASELINE:?set BASELINE to a ron binary built without quotas and request metrics}
VARIANTS="baseline off quotas"

[ -x "$RON" ] && [ -x "$BENCH" ] || cargo build --release -p ron-engine -p ron-bench
rm -rf "$WORK"; mkdir -p "$WORK/json"
pids=()
trap stop_started EXIT

# shellcheck source=workloads.sh
source bench/workloads.sh
w=get_4KiB

cat >"$WORK/quotas.toml" <<'EOF'
[quota_default]
requests_per_s = 1000000000
bytes_per_s = 1000000000000000
EOF

declare -A HTTP_PORT=([baseline]=18180 [off]=18280 [quotas]=18380)
declare -A OAP_PORT=([baseline]=18181 [off]=18281 [quotas]=18381)
declare -A ADMIN_PORT=([baseline]=18182 [off]=18282 [quotas]=18382)

start() {
  local v=$1 bin=$RON extra=()
  [ "$v" = baseline ] && bin=$BASELINE
  [ "$v" = quotas ] && extra=(--config "$WORK/quotas.toml")
  taskset -c 0 "$bin" serve --shards 1 --data-dir "$WORK/data-$v" --http "127.0.0.1:${HTTP_PORT[$v]}" \
    --oap "127.0.0.1:${OAP_PORT[$v]}" --admin "127.0.0.1:${ADMIN_PORT[$v]}" --cache-bytes 512MiB \
    "${extra[@]}" >"$WORK/ron-$v.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:${ADMIN_PORT[$v]}/readyz" >/dev/null && return; sleep 0.1; done
  echo "ron ($v) did not get ready" >&2; exit 1
}

flags() {
  case $2 in
    http) echo "--target 127.0.0.1:${HTTP_PORT[$1]} --proto http" ;;
    oap) echo "--target 127.0.0.1:${OAP_PORT[$1]} --proto oap" ;;
  esac
}

json_field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$1" "$2"; }

echo "== start, load and verify" >&2
for v in $VARIANTS; do
  start "$v"
  # shellcheck disable=SC2086
  "$BENCH" run $(flags "$v" http) --load ${DATA[$w]} --duration 0.2 --warmup 0 --connections 1 --cpus 1 >/dev/null
  for p in $PROTOS; do
    # shellcheck disable=SC2086
    "$BENCH" run $(flags "$v" "$p") ${DATA[$w]} ${MODE[$w]} --connections 8 --cpus 1 --duration 1 \
      --warmup 0.2 >/dev/null || { echo "verification failed: $v $p" >&2; exit 1; }
  done
done

declare -A RPS
echo "== $RUNS rounds x ${DURATION}s per variant and protocol" >&2
for i in $(seq 1 "$RUNS"); do
  # Each round starts with another variant, so no variant always runs first.
  read -r -a order <<<"$VARIANTS"
  shift_by=$(( (i - 1) % ${#order[@]} ))
  order=("${order[@]:shift_by}" "${order[@]:0:shift_by}")
  for p in $PROTOS; do
    for v in "${order[@]}"; do
      json="$WORK/json/$v-$p-$i.json"
      # shellcheck disable=SC2086
      taskset -c 1 "$BENCH" run $(flags "$v" "$p") ${DATA[$w]} ${MODE[$w]} --connections "$CONNS" \
        --cpus 1 --duration "$DURATION" --warmup "$WARMUP" --no-verify --json "$json" >/dev/null
      errors=$(json_field "$json" "d['unexpected_statuses'] + d['io_errors']")
      [ "$errors" = 0 ] || echo "  $v $p: $errors errors" >&2
      RPS[$v,$p]+="$(json_field "$json" "d['req_per_s']")"$'\n'
    done
  done
done

# The quota variant really went through its buckets: no refusals, many requests.
rejected=$(curl -sf "http://127.0.0.1:${ADMIN_PORT[quotas]}/metrics" | awk '$1 == "ron_rejections_total{reason=\"over_quota\"}" { print $2 }')
[ "${rejected:-0}" = 0 ] || echo "quota variant refused $rejected requests" >&2

med() { printf '%s' "${RPS[$1,$2]}" | awk 'NF' | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }'; }
echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"
echo "ron $(git rev-parse --short HEAD) vs baseline $BASELINE; --shards 1 on CPU 0; ron-bench on CPU 1, $CONNS connections, $w; $RUNS rounds x ${DURATION}s (+${WARMUP}s warm-up); medians"
echo "| protocol | baseline req/s | off req/s | quotas req/s | off / baseline | quotas / baseline | runs (baseline; off; quotas) |"
echo "|---|---:|---:|---:|---:|---:|---|"
for p in $PROTOS; do
  b=$(med baseline "$p"); o=$(med off "$p"); q=$(med quotas "$p")
  runs() { printf '%s' "${RPS[$1,$p]}" | awk 'NF { printf "%s%.0f", (NR > 1 ? " " : ""), $1 }'; }
  printf '| %s | %.0f | %.0f | %.0f | %s | %s | %s; %s; %s |\n' "$p" "$b" "$o" "$q" \
    "$(ratio "$o" "$b")" "$(ratio "$q" "$b")" "$(runs baseline)" "$(runs off)" "$(runs quotas)"
done
