#!/usr/bin/env bash
# Several JAX processes on this machine (CPU), talking over 127.0.0.1: the multi-host code
# path without a cluster. Each process gets DEVICES_PER_PROCESS fake CPU devices.
#
#   launch/local_multiprocess.sh NUM_PROCESSES CONFIG WORKDIR [flags...]
#   launch/local_multiprocess.sh 2 configs/shapes.py:pretrain /tmp/shapes_mp --config.train.num_steps=20
set -euo pipefail
if [ "$#" -lt 3 ]; then
  sed -n '2,8p' "$0"; exit 2
fi
NUM="$1"; CONFIG="$2"; WORKDIR="$3"; shift 3
PORT="${PORT:-$(( 20000 + RANDOM % 20000 ))}"
DEVICES_PER_PROCESS="${DEVICES_PER_PROCESS:-4}"
PYTHON="${PYTHON:-python3}"
cd "$(dirname "$0")/.."
pids=()
for ((i = 0; i < NUM; i++)); do
  JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=$DEVICES_PER_PROCESS" \
    "$PYTHON" -m piti_jax.main --config="$CONFIG" --workdir="$WORKDIR" \
    --coordinator_address="127.0.0.1:$PORT" --num_processes="$NUM" --process_id="$i" "$@" &
  pids+=("$!")
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' INT TERM
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
exit "$status"
