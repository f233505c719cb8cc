#!/usr/bin/env bash
# Several JAX processes on this machine (CPU), talking over 127.0.0.1: the multi-host code path
# without a cluster. Each process gets DEVICES_PER_PROCESS fake CPU devices.
#
#   launch/local_multiprocess.sh NUM_PROCESSES CONFIG WORKDIR [flags...]
#   launch/local_multiprocess.sh 2 configs/shapes.py:pretrain /tmp/shapes_mp --config.train.num_steps=20
#
# Variables (environment):
#   PORT                 optional  coordinator port on 127.0.0.1 (default: a random one in 20000-39999)
#   DEVICES_PER_PROCESS  optional  fake CPU devices per process (default 4)
#   PYTHON               optional  interpreter (default python3)
#   DRY_RUN              optional  1: print the commands instead of running them
# Exit status: the first non-zero status of a process (75: stopped by preemption; run it again).
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ && !/^#SBATCH/ {print; next} NR > 1 {exit}' "$0"; }
die() { echo "local_multiprocess.sh: $*" >&2; exit 2; }

if [ "$#" -lt 3 ]; then usage; exit 2; fi
NUM="$1"; CONFIG="$2"; WORKDIR="$3"; shift 3
[[ "$NUM" =~ ^[1-9][0-9]*$ ]] || die "NUM_PROCESSES must be a positive integer, got '$NUM'."
PORT="${PORT:-$(( 20000 + RANDOM % 20000 ))}"
DEVICES_PER_PROCESS="${DEVICES_PER_PROCESS:-4}"
[[ "$DEVICES_PER_PROCESS" =~ ^[1-9][0-9]*$ ]] || die "DEVICES_PER_PROCESS must be a positive integer."
PYTHON="${PYTHON:-python3}"
cd "$(dirname "$0")/.."
pids=()
for ((i = 0; i < NUM; i++)); do
  command=(env JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=$DEVICES_PER_PROCESS"
           "$PYTHON" -m piti_jax.main --config="$CONFIG" --workdir="$WORKDIR"
           --coordinator_address="127.0.0.1:$PORT" --num_processes="$NUM" --process_id="$i" "$@")
  printf '+'; printf ' %q' "${command[@]}"; printf '\n'
  if [ "${DRY_RUN:-0}" != 1 ]; then
    "${command[@]}" &
    pids+=("$!")
  fi
done
if [ "${#pids[@]}" -eq 0 ]; then exit 0; fi
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' INT TERM
status=0
for pid in "${pids[@]}"; do
  code=0
  wait "$pid" || code=$?
  if [ "$status" -eq 0 ]; then status=$code; fi
done
exit "$status"
