#!/usr/bin/env bash
# Issue 53: what an idle node costs, over a window long enough to hold its periodic work
# (the routing-table refresh comes every 10 min ± 25 %; a 10 s window misses it or is all
# of it). Starts a network with bench/network.sh (one object, no kill, no join), holds it
# in its settle phase, and samples the CPU time of its nodes (/proc/<pid>/stat) every
# SLICE_S: per node, each slice and the window so far, in % of a core; at the end, each
# node's RSS, routing refreshes and open connections. Then stops the harness, which
# stops its nodes. Kills only what it started.
#
#   NODES=300 WINDOW_S=600 bash bench/network_idle_cpu.sh
#   NODES=40 WINDOW_S=120 RON=target/debug/ron BENCH=target/debug/ron-bench bash bench/network_idle_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-300}
ZONES=${ZONES:-6}
WINDOW_S=${WINDOW_S:-600}
SLICE_S=${SLICE_S:-30}
FORM_S=${FORM_S:-120} # after the last node started, before the window
if [ -z "${RON:-}" ] || [ -z "${BENCH:-}" ]; then
  cargo build --release -q --locked -p ron-engine -p ron-bench
  RON=${RON:-target/release/ron}
  BENCH=${BENCH:-target/release/ron-bench}
fi
log=$(mktemp /var/tmp/ron-idle.XXXXXX)
NODES=$NODES ZONES=$ZONES OBJECTS=1 OUT=/dev/null RON=$RON BENCH=$BENCH \
  bash bench/network.sh --settle-s $((FORM_S + WINDOW_S * 2 + 600)) --kill-percent 0 --join-percent 0 \
  >"$log" 2>&1 &
harness=$!
bench_pid=
nodes_dir=
node_pids=
stop() {
  if [ -n "$bench_pid" ]; then kill -TERM "$bench_pid" 2>/dev/null || true; fi
  wait "$harness" 2>/dev/null || true
  # Stopped this way, network.sh keeps the nodes' logs as for a failed run: not wanted.
  # They go once the nodes have (network.sh kills them; wait up to 10 s).
  for _ in $(seq 1 100); do
    local alive=0 pid
    for pid in $node_pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 1 ] || break
    sleep 0.1
  done
  case "$nodes_dir" in /var/tmp/ron-network.*/nodes) rm -rf "$(dirname "$nodes_dir")" ;; esac
  rm -f "$log"
}
trap stop EXIT
nodes() { pgrep -P "$bench_pid" || true; }
ticks() { # utime + stime of the harness's nodes, in clock ticks
  local total=0 pid stat
  for pid in $(nodes); do
    stat=$(cut -d')' -f2 "/proc/$pid/stat" 2>/dev/null) || continue
    read -r _ _ _ _ _ _ _ _ _ _ _ utime stime _ <<<"$stat"
    total=$((total + utime + stime))
  done
  echo "$total"
}
deadline=$((SECONDS + 600))
# The harness's child is $BENCH (its name as the kernel keeps it: 15 characters).
bench_comm=$(basename "$BENCH" | cut -c1-15)
until bench_pid=$(pgrep -P "$harness" -x "$bench_comm") && [ "$(nodes | wc -l)" -ge "$NODES" ]; do
  if [ "$SECONDS" -ge "$deadline" ] || ! kill -0 "$harness" 2>/dev/null; then
    echo "network_idle_cpu.sh: the network did not start:" >&2; cat "$log" >&2; exit 1
  fi
  sleep 2
done
node_pids=$(nodes)
nodes_dir=$(tr '\0' '\n' <"/proc/$bench_pid/cmdline" | sed -n '/^--dir$/{n;p}')
sleep "$FORM_S"
hz=$(getconf CLK_TCK)
t0=$(ticks); w0=$(date +%s.%N); tp=$t0; wp=$w0
echo "$NODES nodes in $ZONES zones, window ${WINDOW_S} s from ${FORM_S} s after the last start"
while awk -v now="$(date +%s.%N)" -v w0="$w0" -v w="$WINDOW_S" 'BEGIN{exit !(now - w0 < w)}'; do
  sleep "$SLICE_S"
  t=$(ticks); now=$(date +%s.%N)
  awk -v t="$t" -v t0="$t0" -v tp="$tp" -v now="$now" -v w0="$w0" -v wp="$wp" -v n="$NODES" -v hz="$hz" \
    'BEGIN{printf "+%4.0f s  per node: this slice %.3f %%, window %.3f %% of a core\n", now-w0, (t-tp)/hz/(now-wp)/n*100, (t-t0)/hz/(now-w0)/n*100}'
  tp=$t; wp=$now
done
# At the window's end, per node: its resident memory, and from its /metrics the routing
# refreshes it made (so the window is known to hold them) and its open connections.
summary() { # a list of numbers on stdin -> "p50 X, p90 Y, max Z, sum S"
  sort -n | awk '{v[NR]=$1; s+=$1} END{if (NR) printf "p50 %s, p90 %s, max %s, sum %s\n", v[int((NR+1)/2)], v[int((NR*9+9)/10)], v[NR], s}'
}
rss=""; private=""; refreshes=""; connected=""; kept=""; table=""
for pid in $(nodes); do
  status=$(cat "/proc/$pid/status" 2>/dev/null) || continue
  rss+="$(awk '/^VmRSS:/{printf "%.1f", $2/1024}' <<<"$status")"$'\n'
  private+="$(awk '/^(RssAnon|RssShmem):/{k+=$2} END{printf "%.1f", k/1024}' <<<"$status")"$'\n'
  admin=$(tr '\0' '\n' <"/proc/$pid/cmdline" | sed -n '/^--admin$/{n;p}')
  metrics=$(curl -fs --max-time 5 "http://$admin/metrics") || continue
  refreshes+="$(awk '/^ron_dht_routing_refreshes_total /{print $2}' <<<"$metrics")"$'\n'
  connected+="$(awk '/^ron_dht_peers_connected /{print $2}' <<<"$metrics")"$'\n'
  kept+="$(awk '/^ron_dht_connections_kept /{print $2}' <<<"$metrics")"$'\n'
  table+="$(awk '/^ron_dht_routing_table_peers /{print $2}' <<<"$metrics")"$'\n'
done
echo "at the end, per node: RSS MiB $(grep . <<<"$rss" | summary)"
echo "  of it not the binary's or libraries' pages (RssAnon + RssShmem) MiB $(grep . <<<"$private" | summary)"
echo "  routing refreshes so far $(grep . <<<"$refreshes" | summary)"
echo "  libp2p peers connected $(grep . <<<"$connected" | summary)"
echo "  connections kept while idle $(grep . <<<"$kept" | summary)"
echo "  routing table peers $(grep . <<<"$table" | summary)"
