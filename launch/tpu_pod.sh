#!/usr/bin/env bash
# Run a piti-jax job on every worker of a Cloud TPU VM slice (one process per host; JAX finds the
# other hosts by itself).
#
#   [VARIABLES...] launch/tpu_pod.sh CONFIG WORKDIR [more piti_jax.main flags...]
#   TPU_NAME=my-v4-32 ZONE=us-central2-b CREATE=1 ACCELERATOR_TYPE=v4-32 RUNTIME_VERSION=tpu-ubuntu2204-base \
#     launch/tpu_pod.sh configs/coco_stuff_mask.py:stage2 gs://my-bucket/runs/stage2 --config.mesh.fsdp=8
#
# Variables (environment):
#   TPU_NAME          required  the TPU VM (slice) name; with CREATE=1 the node the queued resource creates
#   ZONE              required  its zone, e.g. us-central2-b
#   PROJECT           optional  Google Cloud project (default: gcloud's configured project)
#   CREATE            optional  1: create the slice through a queued resource first (default 0: use an existing one)
#   ACCELERATOR_TYPE  with CREATE=1  e.g. v4-32, v5litepod-16
#   RUNTIME_VERSION   with CREATE=1  TPU VM software version, e.g. tpu-ubuntu2204-base
#   QUEUED_RESOURCE   optional  queued-resource id (default: TPU_NAME-qr)
#   SPOT              optional  1: ask for spot capacity (preemptible)
#   REMOTE_DIR        optional  where the project is copied on every worker (default: piti_jax, under the home dir)
#   SETUP             optional  1: pip install -e REMOTE_DIR on every worker after copying (default 1)
#   PYTHON            optional  interpreter on the workers (default python3)
#   MAX_RESTARTS      optional  how often a run stopped by preemption (exit status 75) is started again (default 3)
#   CLEANUP           optional  1: delete the queued resource (CREATE=1) or the slice at the end (default 0)
#   DRY_RUN           optional  1: print every command instead of running it
# WORKDIR must be a gs:// URI: every host writes its checkpoint shards there. The logs of all workers
# are streamed to this terminal and appended to ~/piti_jax_run.log on each worker. Exit status: the
# job's (0 finished, 2 bad input, 75 stopped by preemption after saving: run the script again).
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ && !/^#SBATCH/ {print; next} NR > 1 {exit}' "$0"; }
die() { echo "tpu_pod.sh: $*" >&2; exit 2; }
require() { [ -n "${!1:-}" ] || die "$1 is not set: $2 (see the variables at the top of launch/tpu_pod.sh)."; }
run() {  # prints the command (shell-quoted); runs it unless DRY_RUN=1
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [ "${DRY_RUN:-0}" != 1 ]; then "$@"; fi
}

if [ "$#" -lt 2 ]; then usage; exit 2; fi
CONFIG="$1"; WORKDIR="$2"; shift 2
require TPU_NAME "the TPU VM slice to run on"
require ZONE "the zone of the slice"
case "$WORKDIR" in gs://*) ;; *) die "WORKDIR must be a gs:// URI shared by all hosts, got '$WORKDIR'." ;; esac
CREATE="${CREATE:-0}"
if [ "$CREATE" = 1 ]; then
  require ACCELERATOR_TYPE "the slice type to create, e.g. v4-32"
  require RUNTIME_VERSION "the TPU VM software version, e.g. tpu-ubuntu2204-base"
fi
QUEUED_RESOURCE="${QUEUED_RESOURCE:-$TPU_NAME-qr}"
REMOTE_DIR="${REMOTE_DIR:-piti_jax}"
SETUP="${SETUP:-1}"
PYTHON="${PYTHON:-python3}"
MAX_RESTARTS="${MAX_RESTARTS:-3}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
GCLOUD=(gcloud compute tpus)
LOCATION=(--zone="$ZONE")
if [ -n "${PROJECT:-}" ]; then LOCATION+=(--project="$PROJECT"); fi

if [ "$CREATE" = 1 ]; then
  CREATE_FLAGS=(--node-id="$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" --runtime-version="$RUNTIME_VERSION")
  if [ "${SPOT:-0}" = 1 ]; then CREATE_FLAGS+=(--spot); fi
  run "${GCLOUD[@]}" queued-resources create "$QUEUED_RESOURCE" "${LOCATION[@]}" "${CREATE_FLAGS[@]}"
  if [ "${DRY_RUN:-0}" != 1 ]; then
    until [ "$("${GCLOUD[@]}" queued-resources describe "$QUEUED_RESOURCE" "${LOCATION[@]}" \
               --format='value(state.state)')" = ACTIVE ]; do
      echo "tpu_pod.sh: waiting for queued resource $QUEUED_RESOURCE to become ACTIVE" >&2; sleep 30
    done
  fi
fi

cleanup() {
  if [ "${CLEANUP:-0}" != 1 ]; then return; fi
  if [ "$CREATE" = 1 ]; then
    run "${GCLOUD[@]}" queued-resources delete "$QUEUED_RESOURCE" "${LOCATION[@]}" --force --quiet
  else
    run "${GCLOUD[@]}" tpu-vm delete "$TPU_NAME" "${LOCATION[@]}" --quiet
  fi
}
trap cleanup EXIT

# Copy the project (tracked files, as in the working tree) to every worker.
ARCHIVE="${TMPDIR:-/tmp}/piti_jax_$TPU_NAME.tar.gz"
run tar -czf "$ARCHIVE" -C "$REPO" --exclude=.git --exclude=.venv --exclude='*.pyc' .
run "${GCLOUD[@]}" tpu-vm scp "$ARCHIVE" "$TPU_NAME:piti_jax.tar.gz" "${LOCATION[@]}" --worker=all
UNPACK="rm -rf $REMOTE_DIR && mkdir -p $REMOTE_DIR && tar -xzf piti_jax.tar.gz -C $REMOTE_DIR"
if [ "$SETUP" = 1 ]; then UNPACK+=" && $PYTHON -m pip install -q -e $REMOTE_DIR"; fi
run "${GCLOUD[@]}" tpu-vm ssh "$TPU_NAME" "${LOCATION[@]}" --worker=all --command="$UNPACK"

printf -v FLAGS ' %q' "--config=$CONFIG" "--workdir=$WORKDIR" "$@"
JOB="cd $REMOTE_DIR && $PYTHON -m piti_jax.main$FLAGS 2>&1 | tee -a ~/piti_jax_run.log; exit \${PIPESTATUS[0]}"
for ((attempt = 0; ; attempt++)); do
  status=0
  run "${GCLOUD[@]}" tpu-vm ssh "$TPU_NAME" "${LOCATION[@]}" --worker=all --command="$JOB" || status=$?
  if [ "$status" -ne 75 ] || [ "$attempt" -ge "$MAX_RESTARTS" ]; then break; fi
  echo "tpu_pod.sh: the run was preempted (exit status 75); starting it again to resume" >&2
done
exit "$status"
