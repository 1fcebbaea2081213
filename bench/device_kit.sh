#!/usr/bin/env bash
# The benchmarks that need more cores than this machine has (issue 53's 300 and 1,000
# nodes, issue 54's saturated server cores beside nginx), packed to run on the tool
# library's `device` machine: 16 cores, no package registry, no cargo, no nginx, a
# session's 15 minutes of device time in all (docs/PERF.md "Running the many-core
# figures on the device").
#
#   bash bench/device_kit.sh pack          # here: release build, then target/device-kit/
#   OTHER_RON=PATH bash bench/device_kit.sh pack   # and a second ron build for many_cores's
#                                          # A/B (bench/many_cores.sh OTHER_RON)
#   # then, through the device tool's run, carry ["target/device-kit"]:
#   bash bench/device_kit.sh check         # what the machine has (non-zero on a gap: chain
#                                          # it, `check && many_cores`), and what a shard's
#                                          # sleep costs the others (`ron-bench membarrier`)
#   bash bench/device_kit.sh many_cores    # issue 54's table, S = 1 2 4 8 (~6 min)
#   bash bench/device_kit.sh network       # issue 53 at NODES (300) nodes (~6 min; its
#                                          # flags: network.sh's, default --copies-wait-s
#                                          # 120 --settle-s 20)
#   NODES=1000 OBJECTS=200 bash bench/device_kit.sh network --kill-percent 0 --join-percent 0 \
#     --copies-wait-s 30 --settle-s 5 --calm-max-s 45 --quiet-s 5   # 1,000 nodes in ~4 min
#   KIT_RON=b NODES=1000 … bash bench/device_kit.sh network …   # the same with ron B's nodes
#
# The kit holds ron and ron-bench (release builds without their debug information, their
# symbols kept for profiles: they need glibc 2.34 or later), and nginx, curl and perf
# (where this machine has it: `PROFILE=1 bash bench/device_kit.sh many_cores`) with the
# shared libraries they link beyond glibc's own, each started through a wrapper that
# points only its own loader at them; all of it in one gzip'd tar (the device's working
# tree is limited to 64 MiB), unpacked there by the first mode that needs it. What a mode
# prints also goes to $OUT (the device tool's folder that comes back) when that is set.
# Variables of the scripts it runs pass through (RUNS, DURATION, SHARDS, ONLY, PROFILE, CACHE_BYTES;
# NODES, ZONES, OBJECTS).
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=${KIT:-target/device-kit}
mode=${1:-}
[ $# -gt 0 ] && shift

# The shared libraries BIN loads that the C library does not provide.
libraries_beyond_libc() {
  ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' |
    grep -Ev '/(libc|libm|libpthread|libdl|librt|libresolv|libutil|libanl|libnsl|ld-linux[^/]*)\.so' || true
}

pack() {
  cargo build --release -q --locked -p ron-engine -p ron-bench
  command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; }
  local tree=$KIT.tree
  rm -rf "$KIT" "$tree"
  mkdir -p "$KIT" "$tree/bin" "$tree/libexec" "$tree/lib"
  strip --strip-debug -o "$tree/bin/ron" target/release/ron
  strip --strip-debug -o "$tree/bin/ron-bench" target/release/ron-bench
  if [ -n "${OTHER_RON:-}" ]; then strip --strip-debug -o "$tree/bin/ron-b" "$OTHER_RON"; fi
  local tool path tools="nginx curl"
  command -v perf >/dev/null && tools+=" perf"
  for tool in $tools; do
    path=$(command -v "$tool")
    cp "$path" "$tree/libexec/$tool"
    libraries_beyond_libc "$path" | xargs -r cp -L -t "$tree/lib"
    # exec keeps the PID the benchmark started (it pins it and reads its threads).
    cat >"$tree/bin/$tool" <<EOF
#!/bin/sh
kit=\$(cd "\$(dirname "\$0")/.." && pwd)
LD_LIBRARY_PATH=\$kit/lib exec "\$kit/libexec/$tool" "\$@"
EOF
    chmod +x "$tree/bin/$tool"
  done
  git rev-parse HEAD >"$KIT/REVISION"
  # The figures are credited to the revision: a tree with changes is packed only when
  # asked (DIRTY_OK=1), and its diff travels in the kit.
  if git status --porcelain --untracked-files=no | grep -q .; then
    [ "${DIRTY_OK:-0}" = 1 ] || { echo "the tree has uncommitted changes: commit them, or DIRTY_OK=1" >&2; exit 1; }
    git diff HEAD >"$KIT/REVISION.diff"
    echo "dirty: REVISION.diff, sha256 $(sha256sum <"$KIT/REVISION.diff" | cut -c1-16)" >>"$KIT/REVISION"
  fi
  if [ -n "${OTHER_RON:-}" ]; then echo "ron B: $OTHER_RON" >>"$KIT/REVISION"; fi
  # An earlier build's tar must not be the one unpacked on the device.
  tar -C "$tree" -czf "$KIT/kit.tar.gz" bin libexec lib
  rm -rf "$tree"
  du -sh "$KIT"
  echo "carry [\"$KIT\"]; run: bash bench/device_kit.sh check|many_cores|network"
}

# On the device: the kit's programs, unpacked once from the tar that travelled.
unpack() {
  [ -x "$KIT/bin/ron" ] || tar -C "$KIT" -xzf "$KIT/kit.tar.gz"
}

# Output of a mode: on stdout, and under $OUT when the device tool set it (appended: a
# second run of a mode in one call keeps the first's).
log_to() {
  if [ -n "${OUT:-}" ]; then tee -a "$OUT/$1"; else cat; fi
}

# The kit's revision, for every mode's output.
revision() {
  echo "kit built from $(head -1 "$KIT/REVISION")$(sed -n '2,$p' "$KIT/REVISION" | tr '\n' ' ' | sed 's/^./, &/')"
}

# What `check` found missing: it ends non-zero when anything is, so `check && …` spends
# no device time on a run that cannot succeed.
gaps=()
gap() {
  echo "GAP: $*"
  gaps+=("$*")
}

# A short run of each thing the expensive modes start: nginx serving a file (its
# compiled-in paths made), ron-bench against the ron `check` started, ron B answering.
smoke() {
  local dir=$1 ron_port=$2
  # shellcheck source=workloads.sh
  source bench/workloads.sh
  mkdir -p /var/log/nginx /var/lib/nginx "$dir/www" "$dir/nginx/body"
  echo "kit" >"$dir/www/probe"
  nginx_config "$dir/nginx" "$dir/www" 18993 1 1 64 >"$dir/nginx.conf"
  "$KIT/bin/nginx" -c "$dir/nginx.conf" -p "$dir/nginx" -g 'daemon off;' >"$dir/nginx.out" 2>&1 &
  local nginx=$! served=no
  for _ in $(seq 1 50); do
    [ "$("$KIT/bin/curl" -sf http://127.0.0.1:18993/probe 2>/dev/null)" = kit ] && { served=yes; break; }
    sleep 0.1
  done
  kill "$nginx" 2>/dev/null || true
  wait "$nginx" 2>/dev/null || true
  echo "nginx serves a file: $served"
  [ "$served" = yes ] || { gap "nginx does not serve"; tail -5 "$dir/nginx.out" "$dir/nginx/error.log" 2>/dev/null; }
  if "$KIT/bin/ron-bench" dataset --dir "$dir/set" --objects 4 --size 4096 --seed 1 >/dev/null &&
    "$KIT/bin/ron-bench" run --target "127.0.0.1:$ron_port" --load --objects 4 --size 4096 --seed 1 \
      --duration 0.5 --warmup 0 --connections 2 --cpus 0 --no-verify --discard-bodies >"$dir/bench.out" 2>&1; then
    echo "ron-bench against ron: $(grep '^requests' "$dir/bench.out")"
    grep -q '^statuses   200:[0-9]*$' "$dir/bench.out" || { gap "ron-bench got answers other than 200"; cat "$dir/bench.out"; }
  else
    gap "ron-bench run fails"
    tail -5 "$dir/bench.out"
  fi
  if [ -x "$KIT/bin/ron-b" ]; then
    "$KIT/bin/ron-b" --version >/dev/null 2>&1 || gap "ron B does not start"
  fi
  python3 -c 'pass' 2>/dev/null || gap "python3 does not run"
}

# The limits 1,000 nodes (4 ports, ~20 threads and ~20 files each) run into.
limits() {
  echo "pid_max $(cat /proc/sys/kernel/pid_max), threads-max $(cat /proc/sys/kernel/threads-max), processes $(ulimit -u), local ports $(tr '\t' - </proc/sys/net/ipv4/ip_local_port_range)"
  [ "$(cat /proc/sys/kernel/pid_max)" -ge 32768 ] || gap "pid_max below 32768"
  local tmp
  tmp=$(mktemp -p /var/tmp 2>/dev/null) && rm -f "$tmp" || gap "/var/tmp is not writable (network.sh keeps node logs there)"
}

check() {
  revision
  echo "CPUs $(nproc), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)"
  echo "C library: $(ldd --version 2>&1 | head -1)"
  # BBR paces in the socket on loopback; others do not: it decides how a head is sent.
  echo "TCP congestion control: $(cat /proc/sys/net/ipv4/tcp_congestion_control)"
  local missing=() c
  for c in python3 awk taskset pgrep seq paste sed tail timeout; do
    command -v "$c" >/dev/null || missing+=("$c")
  done
  echo "commands missing: ${missing[*]:-none}"
  [ ${#missing[@]} = 0 ] || gap "commands missing: ${missing[*]}"
  "$KIT/bin/nginx" -v 2>&1
  "$KIT/bin/curl" --version | head -1
  # Whether profiles can be taken here: perf, a software clock, the system call tracepoints.
  if [ -x "$KIT/bin/perf" ]; then
    echo "perf: $("$KIT/bin/perf" version 2>&1)"
    if "$KIT/bin/perf" stat -e cpu-clock -- true >/dev/null 2>&1; then echo "perf cpu-clock: works"
    else echo "perf cpu-clock: fails: $("$KIT/bin/perf" stat -e cpu-clock -- true 2>&1 | tail -1)"; fi
    if "$KIT/bin/perf" stat -e raw_syscalls:sys_enter -- true >/dev/null 2>&1; then
      echo "perf system call tracepoints: work"
    else echo "perf system call tracepoints: missing"; fi
  else
    echo "perf: not in the kit"
  fi
  echo "open files: $(ulimit -n) soft, $(ulimit -Hn) hard"
  limits
  local dir
  dir=$(mktemp -d)
  "$KIT/bin/ron" serve --shards 1 --data-dir "$dir/data" --http 127.0.0.1:18990 \
    --oap 127.0.0.1:18991 --admin 127.0.0.1:18992 >"$dir/ron.log" 2>&1 &
  local ron=$! ready=no
  for _ in $(seq 1 50); do
    "$KIT/bin/curl" -sf http://127.0.0.1:18992/readyz >/dev/null && { ready=yes; break; }
    sleep 0.1
  done
  echo "ron serve ready: $ready"
  if [ "$ready" = yes ]; then smoke "$dir" 18990; else gap "ron serve not ready"; tail -20 "$dir/ron.log"; fi
  kill "$ron" 2>/dev/null || true
  wait "$ron" 2>/dev/null || true
  rm -rf "$dir"
  # What a shard's sleep costs the others here (issue 54's model): seconds.
  "$KIT/bin/ron-bench" membarrier
  [ ${#gaps[@]} = 0 ] || { echo "check: ${#gaps[@]} gap(s): the runs would fail or mislead"; return 1; }
  echo "check: ready"
}

# bench/many_cores.sh, then network.sh: their own cargo build and apt-get are skipped
# when the binaries they are given exist.
tools() {
  unpack
  export PATH="$PWD/$KIT/bin:$PATH" RON="$PWD/$KIT/bin/ron" BENCH="$PWD/$KIT/bin/ron-bench"
  # nginx's compiled-in paths (error log, temp folders) must exist on a bare machine.
  mkdir -p /var/log/nginx /var/lib/nginx 2>/dev/null || true
}

case "$mode" in
  pack) pack ;;
  check) unpack && check 2>&1 | log_to check.txt ;;
  many_cores)
    tools
    if [ -x "$KIT/bin/ron-b" ]; then export OTHER_RON=$PWD/$KIT/bin/ron-b; fi
    { revision; NGINX="$PWD/$KIT/bin/nginx" RUNS=${RUNS:-2} DURATION=${DURATION:-4} \
      REVISION=$(head -1 "$KIT/REVISION" | cut -c1-12) bash bench/many_cores.sh "$@"; } 2>&1 |
      log_to many_cores.txt
    ;;
  network)
    tools
    # KIT_RON=b: the nodes run the kit's second build (`OTHER_RON` at pack), so two
    # networks in one session compare two builds; its output is named -b. (Not a RON_
    # name: the nodes inherit the environment, and ron reads every RON_* as its config.)
    variant=
    if [ "${KIT_RON:-}" = b ]; then RON=$PWD/$KIT/bin/ron-b variant=-b; fi
    # Bounded so the whole run fits one device call (10 min) at 300 nodes.
    [ $# -gt 0 ] || set -- --copies-wait-s 120 --settle-s 20
    { revision; NODES=${NODES:-300} OUT=${OUT:+$OUT/network-${NODES:-300}$variant-$(date +%H%M%S).json} \
      bash bench/network.sh "$@"; } 2>&1 | log_to "network-${NODES:-300}$variant.txt"
    ;;
  *)
    echo "usage: bash bench/device_kit.sh pack|check|many_cores|network [flags of network.sh]" >&2
    exit 2
    ;;
esac
