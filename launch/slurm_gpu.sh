#!/usr/bin/env bash
# SLURM: one process per GPU across the allocated nodes. JAX reads the process count, index and
# coordinator from SLURM's environment, so every task runs the same command.
#
#   sbatch --nodes=2 --ntasks-per-node=8 --gpus-per-node=8 launch/slurm_gpu.sh CONFIG WORKDIR [flags...]
#   sbatch --nodes=1 --ntasks-per-node=8 --gpus-per-node=8 launch/slurm_gpu.sh \
#       configs/coco_stuff_mask.py:stage1 /shared/runs/stage1 --config.init.prior.path=/shared/glide_base
#
# WORKDIR must be on a filesystem all nodes share. SLURM sends SIGTERM before a job's time limit
# or on preemption; the run then saves its step (requeue with the same command to resume).
#SBATCH --job-name=piti-jax
#SBATCH --signal=TERM@120
#SBATCH --output=piti-jax-%j.log
set -euo pipefail
if [ "$#" -lt 2 ]; then
  sed -n '2,12p' "$0"; exit 2
fi
CONFIG="$1"; WORKDIR="$2"; shift 2
PYTHON="${PYTHON:-python3}"
# jax.distributed.initialize() (called by piti_jax.main when SLURM_NTASKS > 1) gives each task
# the GPU of its SLURM_LOCALID.
srun --kill-on-bad-exit=1 "$PYTHON" -m piti_jax.main --config="$CONFIG" --workdir="$WORKDIR" "$@"
