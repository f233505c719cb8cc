"""PITI on COCO sketches (edge maps -> distance transform): base stages and the upsampler finetune (reference settings).

Sketches: the reference's are HED edges (BSDS500 weights, probability > 0.6). They are made when
the HED weights are given (HED: the PyTorch port's network-bsds500.pytorch or a converted .npz):
add --config.data.hed_weights=HED to every command below. Without them the dataset is prepared
with Canny edges instead (a warning says so). Canny marks every intensity step one pixel wide,
texture included, where HED draws thicker object contours: the conditions differ, so a model
trained on Canny sketches is not the reference's, does not match its released sketch weights,
wants Canny sketches at sampling time, and its FID is not comparable with the paper's.

Train the base in stages, then the upsampler (GLIDE_BASE / GLIDE_UP: converted GLIDE
checkpoints, see piti_jax.convert; DATA: the raw files the dataset builder asks for):

  python -m piti_jax.main --config=configs/coco_sketch.py:stage1 --workdir=runs/coco_sketch/stage1 \
      --config.data.manual_dir=DATA --config.init.prior.path=GLIDE_BASE
  python -m piti_jax.main --config=configs/coco_sketch.py:stage1_cont --workdir=runs/coco_sketch/stage1_cont \
      --config.data.manual_dir=DATA --config.init.prior.path=GLIDE_BASE \
      --config.init.stage1.path=runs/coco_sketch/stage1
  python -m piti_jax.main --config=configs/coco_sketch.py:stage2 --workdir=runs/coco_sketch/stage2 \
      --config.data.manual_dir=DATA --config.init.prior.path=GLIDE_BASE \
      --config.init.stage1.path=runs/coco_sketch/stage1_cont
  python -m piti_jax.main --config=configs/coco_sketch.py:upsample --workdir=runs/coco_sketch/upsample \
      --config.data.manual_dir=DATA --config.init.prior.path=GLIDE_UP

Few-shot (stage 2 on the first 1,000 training examples; --config.data.train_subset=N for another N):

  python -m piti_jax.main --config=configs/coco_sketch.py:fewshot --workdir=runs/coco_sketch/fewshot \
      --config.data.manual_dir=DATA --config.init.prior.path=GLIDE_BASE \
      --config.init.stage1.path=runs/coco_sketch/stage1_cont

Pods: add --config.mesh.fsdp=N to shard parameters and optimizer state N ways, and
--config.model.dtype=bfloat16 for bfloat16 compute (parameters stay float32).
"""

from piti_jax.train import config as train_config


def get_config(arg: str = "stage1"):
  job = train_config.parse_job(arg, train_config.PITI_JOBS)
  return train_config.piti_finetune_config(job, dataset="coco_sketch", task="sketch")
