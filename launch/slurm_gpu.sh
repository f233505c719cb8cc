#!/usr/bin/env bash
# SLURM: one process per GPU across the allocated nodes. jax.distributed.initialize() (called by
# piti_jax.main when SLURM_NTASKS > 1) reads the process count, index and coordinator from SLURM.
#
#   sbatch --nodes=2 --ntasks-per-node=8 --gpus-per-node=8 launch/slurm_gpu.sh CONFIG WORKDIR [flags...]
#   sbatch --nodes=1 --ntasks-per-node=8 --gpus-per-node=8 launch/slurm_gpu.sh \
#       configs/coco_stuff_mask.py:stage1 /shared/runs/stage1 --config.init.prior.path=/shared/glide_base
#
# Variables (environment; SLURM sets its own):
#   PYTHON             optional  interpreter (default python3)
#   NCCL_DEBUG         optional  NCCL log level (default WARN)
#   NCCL_SOCKET_IFNAME optional  network interface for NCCL's bootstrap, e.g. ib0 (default: NCCL's choice)
#   NCCL_IB_DISABLE    optional  1 on clusters without InfiniBand (default: NCCL's choice)
#   XLA_PYTHON_CLIENT_MEM_FRACTION  optional  share of GPU memory JAX preallocates (default 0.9)
#   DRY_RUN            optional  1: print the command instead of running it (works outside SLURM)
# WORKDIR must be on a filesystem every node shares (or a gs:// URI). SLURM sends SIGTERM 120 s
# before the time limit or on preemption; the run saves its step and exits with status 75, and this
# script then requeues the job (scontrol requeue), which resumes from that checkpoint. Exit status:
# the job's (0 finished, 2 bad input, 75 preempted and requeued).
#SBATCH --job-name=piti-jax
#SBATCH --signal=TERM@120
#SBATCH --requeue
#SBATCH --output=piti-jax-%j.log
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ && !/^#SBATCH/ {print; next} NR > 1 {exit}' "$0"; }
die() { echo "slurm_gpu.sh: $*" >&2; exit 2; }
run() {
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [ "${DRY_RUN:-0}" != 1 ]; then "$@"; fi
}

if [ "$#" -lt 2 ]; then usage; exit 2; fi
CONFIG="$1"; WORKDIR="$2"; shift 2
if [ "${DRY_RUN:-0}" != 1 ] && [ -z "${SLURM_JOB_ID:-}" ]; then
  die "SLURM_JOB_ID is not set: submit this script with sbatch (or set DRY_RUN=1 to see the command)."
fi
PYTHON="${PYTHON:-python3}"
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
# Each task sees only the GPU of its node-local rank; JAX then has one local device per process.
TASK='export CUDA_VISIBLE_DEVICES="$SLURM_LOCALID"; exec "$0" "$@"'
status=0
run srun --kill-on-bad-exit=1 bash -c "$TASK" "$PYTHON" -m piti_jax.main --config="$CONFIG" --workdir="$WORKDIR" \
  "$@" || status=$?
if [ "$status" -eq 75 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
  echo "slurm_gpu.sh: preempted (exit status 75); requeueing job $SLURM_JOB_ID to resume" >&2
  run scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
