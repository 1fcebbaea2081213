#!/usr/bin/env bash
# Bao answers against plain ones, per busy server core (issue 38), with compare.sh's
# method: ron on CPU 0 (--shards 1, every object in its cache), wrk -t1 on CPU 1, the
# same datasets (bench/workloads.sh: objects picked at random by a Lua script per run),
# CPU 0's busy share from /proc/stat over each run, medians of RUNS.
#
#   bash bench/bao.sh                      # RUNS=3 DURATION=6: about 6 minutes
#   ONLY="get_1MiB" MODES="plain bao6" bash bench/bao.sh
#
# Workloads: get_4KiB, get_1MiB, range_64KiB (bench/workloads.sh). Modes:
#   plain   the object's bytes (206 for ranges)
#   baoN    Accept: application/x-bao; chunk-group-log=N (N = 0, 4, 6): the encoding,
#           or for ranges the slice proving them
# Before measuring, one answer per workload and mode is fetched with curl and checked:
# status, Content-Type, and for bao0 decoded by the `bao` CLI (bao_bin) when installed.
# Prints per workload and mode: req/s, wire MB/s, CPU 0 busy, requests and object bytes
# per busy core, and the ratio to plain of requests per busy core.
# Variables: RUNS DURATION WARMUP CONNS CACHE ONLY MODES SEED WORK RON RON_PORT ADMIN_PORT
# OAP_PORT. Talks only to 127.0.0.1; stops what it started (by PID).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-64}
CACHE=${CACHE:-2GiB}
SEED=${SEED:-42}
MODES=${MODES:-plain bao0 bao4 bao6}
RON_PORT=${RON_PORT:-18080}
ADMIN_PORT=${ADMIN_PORT:-18600}
OAP_PORT=${OAP_PORT:-18444}
WORK=${WORK:-/tmp/ron-bao-bench}
RON=${RON:-target/release/ron}
BENCH=${BENCH:-$(dirname "$RON")/ron-bench}

command -v wrk >/dev/null || {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
}
if [ ! -x "$RON" ] || [ ! -x "$BENCH" ]; then cargo build --release -p ron-engine -p ron-bench; fi

rm -rf "$WORK"; mkdir -p "$WORK/lua" "$WORK/lists" "$WORK/www"
pids=()
# shellcheck source=workloads.sh
source bench/workloads.sh
trap stop_started EXIT
WORKLOADS=${ONLY:-get_4KiB get_1MiB range_64KiB}
flag() { echo " $1 " | sed -n "s/.* $2 \([^ ]*\) .*/\1/p"; }

taskset -c 0 "$RON" serve --shards 1 --data-dir "$WORK/ron-data" --http "127.0.0.1:$RON_PORT" \
  --oap "127.0.0.1:$OAP_PORT" --admin "127.0.0.1:$ADMIN_PORT" --cache-bytes "$CACHE" >"$WORK/ron.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null && break; sleep 0.1; done

echo "== datasets" >&2
declare -A LIST
for w in $WORKLOADS; do
  LIST[$w]=$WORK/lists/${DATA[$w]//[^a-z0-9]/_}.txt
  [ -e "${LIST[$w]}" ] && continue
  # shellcheck disable=SC2086
  "$BENCH" dataset --dir "$WORK/www" --list "${LIST[$w]}" ${DATA[$w]}
  # shellcheck disable=SC2086
  "$BENCH" run --target "127.0.0.1:$RON_PORT" --load ${DATA[$w]} --duration 0.2 --warmup 0 \
    --connections 1 --cpus 1 >/dev/null
done

accept_of() { case $1 in plain) echo "" ;; bao*) echo "application/x-bao; chunk-group-log=${1#bao}" ;; esac; }
range_of() { [[ ${MODE[$1]} == *"--workload range"* ]] && { r=$(flag "${MODE[$1]}" --range-bytes); echo "${r:-65536}"; } || echo 0; }

# One Lua script per workload and mode: a random object of the list (uniform), the whole
# object or a random unaligned range, with the mode's Accept.
for w in $WORKLOADS; do
  for m in $MODES; do
    {
      echo "local paths = {"
      sed 's/.*/  "&",/' "${LIST[$w]}"
      echo "}"
      echo "local size, range_len, accept, seed = $(flag "${DATA[$w]}" --size), $(range_of "$w"), \"$(accept_of "$m")\", $SEED"
      wrk_lua_seeded_threads
      cat <<'EOF'
function request()
  local headers = {}
  if accept ~= "" then headers["Accept"] = accept end
  if range_len > 0 then
    local first = math.random(0, size - range_len)
    headers["Range"] = "bytes=" .. first .. "-" .. (first + range_len - 1)
  end
  return wrk.format("GET", paths[math.random(#paths)], headers)
end
EOF
    } >"$WORK/lua/$w.$m.lua"
  done
done

echo "== correctness" >&2
base="http://127.0.0.1:$RON_PORT"
for w in $WORKLOADS; do
  path=$(head -n 1 "${LIST[$w]}"); hex=${path##*/b3:}
  range=$(range_of "$w")
  for m in $MODES; do
    args=(-s -o "$WORK/answer" -w '%{http_code} %{content_type}')
    [ -n "$(accept_of "$m")" ] && args+=(-H "Accept: $(accept_of "$m")")
    [ "$range" -gt 0 ] && args+=(-r "1000-$((1000 + range - 1))")
    got=$(curl "${args[@]}" "$base$path")
    case $m in
      plain) want=$([ "$range" -gt 0 ] && echo 206 || echo 200) ;;
      bao*) want="200 $(accept_of "$m")" ;;
    esac
    [[ $got == "$want"* ]] || { echo "$w $m: answered $got, expected $want" >&2; exit 1; }
    if [ "$m" = bao0 ] && command -v bao >/dev/null; then
      if [ "$range" -gt 0 ]; then bao decode-slice "$hex" 1000 "$range" <"$WORK/answer" >/dev/null
      else bao decode "$hex" <"$WORK/answer" >/dev/null; fi
      echo "   $w bao0: decoded by the bao CLI" >&2
    fi
  done
done


echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)"
echo "== ron $("$RON" --version 2>/dev/null || echo '?'), wrk $(wrk -v 2>&1 | head -n1 | awk '{print $2}')"
echo "== RUNS=$RUNS DURATION=${DURATION}s CONNS=$CONNS, medians"
printf '%-12s %-6s %10s %10s %6s %14s %16s %8s\n' workload mode req/s wire_MB/s busy req/s_per_core object_MB/s/core vs_plain
for w in $WORKLOADS; do
  size=$(flag "${DATA[$w]}" --size); range=$(range_of "$w")
  object_bytes=$([ "$range" -gt 0 ] && echo "$range" || echo "$size")
  plain_per_core=""
  for m in $MODES; do
    wrk_measured "${WARMUP}s" "$WORK/lua/$w.$m.lua" >/dev/null
    lines=()
    for _ in $(seq 1 "$RUNS"); do lines+=("$(wrk_measured "${DURATION}s" "$WORK/lua/$w.$m.lua")"); done
    col() { printf '%s\n' "${lines[@]}" | awk -v c="$1" '{ print $c }' | median; }
    per_core=$(printf '%s\n' "${lines[@]}" | awk '{ print ($3 > 0 ? $1 / $3 : 0) }' | median)
    [ "$m" = plain ] && plain_per_core=$per_core
    ratio=$([ -n "$plain_per_core" ] && awk -v a="$per_core" -v b="$plain_per_core" 'BEGIN { printf "%.2f", a / b }' || echo "-")
    printf '%-12s %-6s %10.0f %10.1f %6.2f %14.0f %16.1f %8s\n' "$w" "$m" "$(col 1)" "$(awk -v b="$(col 2)" 'BEGIN { print b / 1e6 }')" \
      "$(col 3)" "$per_core" "$(awk -v r="$per_core" -v s="$object_bytes" 'BEGIN { print r * s / 1e6 }')" "$ratio"
  done
done
