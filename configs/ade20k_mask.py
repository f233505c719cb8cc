"""PITI on ADE20K masks: base stages and the upsampler finetune (reference settings).

Conditions: by default the 150-class benchmark masks (ADEChallengeData2016, one VOC colour per
class). The reference instead feeds the full ADE20K release's `_seg.png` colours (about 3,000
classes in red/green, the instance in blue); add --config.data.ade20k_source=full_release (with
the full release in DATA) to train on those. See piti_jax.data.builders.ade20k for the layouts.

Train the base in stages, then the upsampler (GLIDE_BASE / GLIDE_UP: converted GLIDE
checkpoints, see piti_jax.convert; DATA: the raw files the dataset builder asks for):

  python -m piti_jax.main --config=configs/ade20k_mask.py:stage1 --workdir=runs/ade20k_mask/stage1 \
      --config.data.manual_dir=DATA --config.init.prior.path=GLIDE_BASE
  python -m piti_jax.main --config=configs/ade20k_mask.py:stage1_cont --workdir=runs/ade20k_mask/stage1_cont \
      --config.data.manual_dir=DATA --config.init.prior.path=GLIDE_BASE \
      --config.init.stage1.path=runs/ade20k_mask/stage1
  python -m piti_jax.main --config=configs/ade20k_mask.py:stage2 --workdir=runs/ade20k_mask/stage2 \
      --config.data.manual_dir=DATA --config.init.prior.path=GLIDE_BASE \
      --config.init.stage1.path=runs/ade20k_mask/stage1_cont
  python -m piti_jax.main --config=configs/ade20k_mask.py:upsample --workdir=runs/ade20k_mask/upsample \
      --config.data.manual_dir=DATA --config.init.prior.path=GLIDE_UP

Few-shot (stage 2 on the first 1,000 training examples; --config.data.train_subset=N for another N):

  python -m piti_jax.main --config=configs/ade20k_mask.py:fewshot --workdir=runs/ade20k_mask/fewshot \
      --config.data.manual_dir=DATA --config.init.prior.path=GLIDE_BASE \
      --config.init.stage1.path=runs/ade20k_mask/stage1_cont

Pods: add --config.mesh.fsdp=N to shard parameters and optimizer state N ways, and
--config.model.dtype=bfloat16 for bfloat16 compute (parameters stay float32).
"""

from piti_jax.train import config as train_config


def get_config(arg: str = "stage1"):
  job = train_config.parse_job(arg, train_config.PITI_JOBS)
  return train_config.piti_finetune_config(job, dataset="ade20k", task="mask")
