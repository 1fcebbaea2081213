#!/usr/bin/env bash
# Bundles (issue 40): what precompression saves on a real text corpus, and what serving a
# bundle entry costs per busy server core against a plain object GET.
#
#   bash bench/bundle.sh                    # RUNS=3 DURATION=6: about 3 minutes
#   RUNS=5 MODES="plain entry" bash bench/bundle.sh
#
# Corpus: this project's own docs and sources at the working tree (docs/, README.md and
# every crate's src/), copied and packed with `ron pack` (brotli 11 and zstd 19 variants
# where they save 5 % and 128 bytes). Prints the corpus's bytes and what each coding
# saves over the files it was kept for and over the whole corpus.
# Load: ron on CPU 0 (--shards 1, every piece in its cache, scrubber paused), wrk -t1 on
# CPU 1, CONNS connections, a random entry per request (uniform over the corpus); CPU
# 0's busy share from /proc/stat; medians of RUNS. Modes:
#   plain   GET /o/b3:<identity hash> of the entry (the object itself)
#   entry   GET /o/b3:<manifest>/<path>, no Accept-Encoding (identity)
#   br      the same with Accept-Encoding: br, gzip (the br variant where there is one)
# Talks only to 127.0.0.1; stops what it started (by PID).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-64}
MODES=${MODES:-plain entry br}
RON_PORT=${RON_PORT:-18090}
ADMIN_PORT=${ADMIN_PORT:-18690}
OAP_PORT=${OAP_PORT:-18494}
WORK=${WORK:-/tmp/ron-bundle-bench}
RON=${RON:-target/release/ron}
SEED=${SEED:-42}

command -v wrk >/dev/null || {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
}
[ -x "$RON" ] || cargo build --release -p ron-engine

rm -rf "$WORK"; mkdir -p "$WORK/site" "$WORK/lua"
pids=()
# shellcheck source=workloads.sh
source bench/workloads.sh
trap stop_started EXIT

cp -r docs README.md "$WORK/site/"
for crate in */src; do mkdir -p "$WORK/site/${crate%/src}"; cp -r "$crate" "$WORK/site/${crate%/src}/"; done

taskset -c 0 "$RON" serve --shards 1 --data-dir "$WORK/ron-data" --http "127.0.0.1:$RON_PORT" \
  --oap "127.0.0.1:$OAP_PORT" --admin "127.0.0.1:$ADMIN_PORT" --cache-bytes 1GiB >"$WORK/ron.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null && break; sleep 0.1; done
curl -sf -X POST "http://127.0.0.1:$ADMIN_PORT/admin/scrub/pause" >/dev/null

echo "== pack" >&2
bundle=$("$RON" pack "$WORK/site" --server "127.0.0.1:$OAP_PORT" 2>"$WORK/pack.log")
"$RON" stat "$bundle" --server "127.0.0.1:$OAP_PORT" | tail -n +2 >"$WORK/entries.tsv"
echo "== corpus: $(wc -l <"$WORK/entries.tsv") files of this repository's docs and sources"
echo "   $(cat "$WORK/pack.log")"
# Bytes saved per coding: over the files it was kept for, and over the whole corpus.
awk -F'\t' '
  { total += $2; for (i = 5; i <= NF; i++) { split($i, v, ":"); kept[v[1]] += $2; len[v[1]] += v[2] } }
  END {
    printf "   identity: %d bytes\n", total
    for (c in kept) printf "   %s: %d of %d files'\'' bytes kept as %d (-%.1f %%); the corpus as served in %s where kept: %d (-%.1f %%)\n",
      c, kept[c], total, len[c], 100 * (1 - len[c] / kept[c]), c, total - kept[c] + len[c], 100 * (kept[c] - len[c]) / total
  }' "$WORK/entries.tsv"

# One Lua script per mode: a random entry of the corpus per request.
for m in $MODES; do
  {
    echo "local paths = {"
    case $m in
      plain) awk -F'\t' '{ printf "  \"/o/%s\",\n", $4 }' "$WORK/entries.tsv" ;;
      *) awk -F'\t' -v b="$bundle" '{ printf "  \"/o/%s/%s\",\n", b, $1 }' "$WORK/entries.tsv" ;;
    esac
    echo "}"
    echo "local accept_encoding, seed = \"$([ "$m" = br ] && echo 'br, gzip' || echo '')\", $SEED"
    wrk_lua_seeded_threads
    cat <<'EOF'
function request()
  local headers = {}
  if accept_encoding ~= "" then headers["Accept-Encoding"] = accept_encoding end
  return wrk.format("GET", paths[math.random(#paths)], headers)
end
EOF
  } >"$WORK/lua/$m.lua"
done

base="http://127.0.0.1:$RON_PORT"
first=$(head -n 1 "$WORK/entries.tsv" | cut -f1)
got=$(curl -s -o /dev/null -w '%{http_code}' "$base/o/$bundle/$first")
[ "$got" = 200 ] || { echo "GET /o/$bundle/$first answered $got" >&2; exit 1; }


echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)"
echo "== RUNS=$RUNS DURATION=${DURATION}s CONNS=$CONNS, medians"
printf '%-6s %10s %10s %6s %14s %9s\n' mode req/s wire_MB/s busy req/s_per_core vs_plain
plain_per_core=""
for m in $MODES; do
  wrk_measured "${WARMUP}s" "$WORK/lua/$m.lua" >/dev/null
  lines=()
  for _ in $(seq 1 "$RUNS"); do lines+=("$(wrk_measured "${DURATION}s" "$WORK/lua/$m.lua")"); done
  col() { printf '%s\n' "${lines[@]}" | awk -v c="$1" '{ print $c }' | median; }
  per_core=$(printf '%s\n' "${lines[@]}" | awk '{ print ($3 > 0 ? $1 / $3 : 0) }' | median)
  [ "$m" = plain ] && plain_per_core=$per_core
  ratio=$([ -n "$plain_per_core" ] && awk -v a="$per_core" -v b="$plain_per_core" 'BEGIN { printf "%.2f", a / b }' || echo "-")
  printf '%-6s %10.0f %10.1f %6.2f %14.0f %9s\n' "$m" "$(col 1)" "$(awk -v b="$(col 2)" 'BEGIN { print b / 1e6 }')" \
    "$(col 3)" "$per_core" "$ratio"
done
