#!/usr/bin/env bash
# The CPU demo: pretrain a small text-to-image prior on the generated `shapes` dataset,
# then PITI's mask finetune from it (stage 1: encoder only on the frozen prior decoder;
# stage 2: everything). About 10 minutes on a 2-core CPU, dataset generation included.
#
#   bash launch/demo_cpu.sh [OUT_DIR]        (default OUT_DIR: /tmp/piti_demo)
#
# Look at the sample grids afterwards (rows: examples; columns: condition | sample | truth):
#   OUT_DIR/prior/samples/step_*.png    text-to-image samples of the prior
#   OUT_DIR/stage1/samples/step_*.png   mask -> image after stage 1
#   OUT_DIR/stage2/samples/step_*.png   mask -> image after stage 2
# and the curves with `tensorboard --logdir OUT_DIR`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-/tmp/piti_demo}"
PYTHON="${PYTHON:-python}"
COMMON=(
  "--config.data.data_dir=$OUT/tfds" "--config.data.train_size=1000"
  "--config.train.global_batch_size=8" "--config.train.log_every=25" "--config.train.eval_every=0"
)
run() {  # run <job> <workdir> <steps> [extra flags...]
  local job="$1" workdir="$2" steps="$3"
  shift 3
  echo "== $job -> $workdir ($steps steps)"
  "$PYTHON" -m piti_jax.main --config="configs/shapes.py:$job" --workdir="$workdir" "${COMMON[@]}" \
    "--config.train.num_steps=$steps" "--config.train.save_every=$steps" "--config.train.sample_every=$steps" "$@"
}
start=$(date +%s)
run pretrain "$OUT/prior" 800
run stage1 "$OUT/stage1" 200 "--config.init.prior.path=$OUT/prior"
run stage2 "$OUT/stage2" 600 "--config.init.prior.path=$OUT/prior" "--config.init.stage1.path=$OUT/stage1"
echo "demo done in $(( $(date +%s) - start ))s; sample grids:"
ls "$OUT"/*/samples/*.png
