# shellcheck shell=bash
# The named workloads shared by bench/compare.sh, bench/protocols.sh,
# bench/control_cost.sh, bench/bao.sh, bench/origin_stream.sh, bench/two_cores.sh,
# bench/mesh_cost.sh, bench/bundle.sh and perf/flame.sh (sourced by all), and the helpers
# they share (nginx_config, stop_started, cpu0, busy_share, median, wrk_measured).
# DATA: the deterministic dataset (ron-bench flags: object i is generated from seed+i);
# MODE: what the requests are; DESC: one line for people.
# Reads pick their object at random over the whole dataset (uniform unless the caller
# adds ron-bench's --zipf), like an edge; get_4KiB_one_url is the old single-URL case
# (its one object is object 0 of get_4KiB), kept to compare with earlier numbers.
# get_256MiB and range_64KiB share their dataset (the same two 256 MiB objects).
# Sizes: 2,000 x 4 KiB + 200 x 1 MiB + 2 x 256 MiB = about 720 MiB.
# shellcheck disable=SC2034
declare -A DATA=(
  [get_4KiB]="--objects 2000 --size 4096 --seed 11"
  [get_1MiB]="--objects 200 --size 1048576 --seed 12"
  [get_256MiB]="--objects 2 --size 268435456 --seed 13"
  [range_64KiB]="--objects 2 --size 268435456 --seed 13"
  [put_1MiB]="--objects 1 --size 1048576 --seed 14"
  [get_4KiB_one_url]="--objects 1 --size 4096 --seed 11"
)
# shellcheck disable=SC2034
declare -A MODE=(
  [get_4KiB]="--workload get"
  [get_1MiB]="--workload get"
  [get_256MiB]="--workload get"
  [range_64KiB]="--workload range --range-bytes 65536"
  [put_1MiB]="--workload put"
  [get_4KiB_one_url]="--workload get"
)
# shellcheck disable=SC2034
declare -A DESC=(
  [get_4KiB]="GET a whole 4 KiB object, one of 2,000, picked at random"
  [get_1MiB]="GET a whole 1 MiB object, one of 200, picked at random"
  [get_256MiB]="GET a whole 256 MiB object, one of 2, picked at random, streamed"
  [range_64KiB]="GET bytes=X-(X+65535), X uniform (unaligned) over one of the two 256 MiB objects"
  [put_1MiB]="PUT 1 MiB of fresh random bytes"
  [get_4KiB_one_url]="GET one 4 KiB object, always the same URL (not an edge; for comparison)"
)
# shellcheck disable=SC2034
WORKLOADS="get_4KiB get_1MiB get_256MiB range_64KiB put_1MiB get_4KiB_one_url"

# nginx's configuration for the side-by-side benchmarks, on stdout: WORKERS workers
# (worker_cpu_affinity AFFINITY), the files under ROOT served on 127.0.0.1:PORT with
# sendfile and an open-file cache of CACHED_FILES, access log off, a dav location /put/
# for PUTs; pid, error log and request-body files under DIR. With TLS_DIR, the port is
# TLS with HTTP/2 (`ssl http2`), TLS_DIR/cert.pem and key.pem its certificate.
#   nginx_config DIR ROOT PORT WORKERS AFFINITY CACHED_FILES [TLS_DIR]
nginx_config() {
  local listen="listen 127.0.0.1:$3;"
  if [ -n "${7:-}" ]; then
    listen="listen 127.0.0.1:$3 ssl http2; ssl_certificate $7/cert.pem; ssl_certificate_key $7/key.pem;"
  fi
  cat <<EOF
user $(id -un) $(id -gn);
worker_processes $4;
# open_file_cache keeps every file open: room for all of them plus the connections.
worker_rlimit_nofile $(($6 + 4096));
worker_cpu_affinity $5;
pid $1/nginx.pid;
error_log $1/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush off;
  tcp_nodelay on;
  keepalive_requests 10000000;
  keepalive_timeout 75s;
  open_file_cache max=$6 inactive=60s;
  default_type application/octet-stream;
  client_body_temp_path $1/body;
  client_max_body_size 2g;
  server {
    $listen
    root $2;
    location /put/ { dav_methods PUT; create_full_put_path on; }
  }
}
EOF
}

# Stops the processes in the array `pids` (started by the caller) and waits up to 30 s
# for each to exit: a node still draining on the same ports would share them
# (SO_REUSEPORT) with the next script's node and answer some of its connections with
# resets.
stop_started() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do timeout 30 tail --pid="$p" -f /dev/null 2>/dev/null || true; done
}

# Busy and total jiffies of CPU 0 from /proc/stat: includes the softirq network work on
# the server's CPU, which a process's own CPU time misses.
cpu0() { awk '$1 == "cpu0" { b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6 }' /proc/stat; }
# Reschedule IPIs CPU 0 has taken since boot (the RES row of /proc/interrupts).
cpu0_reschedule_ipis() { awk '$1 == "RES:" { print $2 }' /proc/interrupts; }
# CPU 0's busy share between two `cpu0` readings.
busy_share() { echo "$1 $2" | awk '{ printf "%.3f", ($3 - $1) / ($4 - $2) }'; }
# Busy and total jiffies of every CPU together: the server, the generator, and the
# loopback's receive work wherever it ran (on loopback the sender's CPU often delivers
# the packet into the receiver's socket in its own softirq).
cpus_all() { awk '$1 == "cpu" { b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6 }' /proc/stat; }
# CPUs kept busy between two `cpus_all` readings (0 to the number of CPUs).
busy_cpus() { echo "$1 $2" | awk -v n="$(nproc)" '{ printf "%.3f", n * ($3 - $1) / ($4 - $2) }'; }
# The Lua that starts every generated wrk script's threads: each numbered, its random
# sequence seeded from the script's `seed` and that number (so runs repeat, threads differ).
wrk_lua_seeded_threads() {
  cat <<'EOF'
local threads = 0
function setup(thread) thread:set("id", threads); threads = threads + 1 end
function init(args)
  math.randomseed(seed + 7919 * (id or 0))
  for _ = 1, 16 do math.random() end
end
EOF
}
# The median of the numbers on stdin, one per line (of an even count, the mean of the
# middle two: with two runs, not the lower one); nothing for no numbers.
median() {
  sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2
  }'
}

# One wrk run of DURATION with the Lua script SCRIPT against $base (wrk -t1 on CPU 1,
# $CONNS connections), CPU 0's busy share measured around it: "req/s wire_bytes/s busy".
# Prints wrk's non-2xx and socket-error lines on stderr.
#   wrk_measured DURATION SCRIPT
wrk_measured() {
  local before after out
  before=$(cpu0)
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"$1" --timeout 30s -s "$2" "$base/" 2>&1)
  after=$(cpu0)
  if echo "$out" | grep -qE 'Non-2xx|Socket errors'; then echo "$out" | grep -E 'Non-2xx|Socket errors' >&2; fi
  local rps bps
  rps=$(echo "$out" | awk '/Requests\/sec/ { print $2 }')
  bps=$(echo "$out" | awk '/Transfer\/sec/ { v = $2; n = v + 0; if (v ~ /GB$/) n *= 1073741824;
        else if (v ~ /MB$/) n *= 1048576; else if (v ~ /KB$/) n *= 1024; print n }')
  echo "$rps $bps $(busy_share "$before" "$after")"
}

