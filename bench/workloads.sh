# The named workloads shared by bench/compare.sh and perf/flame.sh (sourced by both).
# DATA: the deterministic dataset (ron-bench flags); MODE: what the requests are.
# shellcheck disable=SC2034
declare -A DATA=(
  [get_4KiB]="--objects 100 --size 4096 --seed 11"
  [get_1MiB]="--objects 8 --size 1048576 --seed 12"
  [range_64KiB]="--objects 1 --size 67108864 --seed 13"
  [put_1MiB]="--objects 1 --size 1048576 --seed 14"
)
# shellcheck disable=SC2034
declare -A MODE=(
  [get_4KiB]="--workload get"
  [get_1MiB]="--workload get"
  [range_64KiB]="--workload range --range-bytes 65536"
  [put_1MiB]="--workload put"
)
# shellcheck disable=SC2034
WORKLOADS="get_4KiB get_1MiB range_64KiB put_1MiB"
