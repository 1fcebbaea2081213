# shellcheck shell=bash
# The named workloads shared by bench/compare.sh, bench/protocols.sh,
# bench/control_cost.sh, bench/bao.sh, bench/origin_stream.sh and perf/flame.sh (sourced
# by all), and the helpers they share (stop_started, cpu0, busy_share, median).
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
# CPU 0's busy share between two `cpu0` readings.
busy_share() { echo "$1 $2" | awk '{ printf "%.3f", ($3 - $1) / ($4 - $2) }'; }
# The median of the numbers on stdin, one per line.
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
