#!/usr/bin/env bash
# Run a job on every worker of a Cloud TPU VM pod slice (one process per host; JAX finds the
# other hosts by itself). The repository must be at the same path on every worker.
#
#   launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [more flags...]
#   launch/tpu_pod.sh my-v4-32 us-central2-b configs/coco_stuff_mask.py:stage2 gs://bucket/runs/stage2 \
#       --config.mesh.fsdp=8 --config.model.dtype=bfloat16 --config.init.prior.path=... --config.init.stage1.path=...
#
# WORKDIR must be shared by all hosts (a GCS bucket or a shared filesystem). On a preemption
# notice the run saves its current step; run the same command again to resume.
set -euo pipefail
if [ "$#" -lt 4 ]; then
  sed -n '2,12p' "$0"; exit 2
fi
TPU_NAME="$1"; ZONE="$2"; CONFIG="$3"; WORKDIR="$4"; shift 4
REPO_DIR="${REPO_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
PYTHON="${PYTHON:-python3}"
printf -v EXTRA ' %q' "$@"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="cd $REPO_DIR && \
  $PYTHON -m piti_jax.main --config=$CONFIG --workdir=$WORKDIR$EXTRA"
