"""mode=sample: condition images -> base (64x64) -> upsampler (256x256) PNGs, grid and manifest.

Released PITI mask weights (converted with `python -m piti_jax.convert`), a folder of
colour-coded masks, the reference's sampling settings:

  python -m piti_jax.main --config=configs/sample.py --workdir=out \
      --config.base.checkpoint=ckpt/piti_base_mask --config.upsampler.checkpoint=ckpt/piti_upsample_mask \
      --config.input.paths=masks/ --config.data.name=coco_stuff

A prepared dataset split instead of files (the ground truth is written beside the samples):

  python -m piti_jax.main --config=configs/sample.py --workdir=out \
      --config.base.checkpoint=runs/stage2 --config.upsampler.checkpoint=runs/upsample \
      --config.input.split=validation --config.input.count=64 --config.data.data_dir=TFDS

Faster settings: `--config.base.sample.sampler=dpm_solver_pp --config.base.sample.steps=20`;
normalized guidance: `--config.base.sample.guidance=normalized --config.base.sample.guidance_scale=3`.
Without `upsampler.checkpoint` only the base samples are written. The samples land in
<workdir>/<output_name> (default "samples"); evaluate them with configs/evaluate.py.
"""

import ml_collections

from piti_jax.data.config import default_data_config
from piti_jax.sampling import sample_config


def get_config(arg: str = ""):
  del arg
  config = ml_collections.ConfigDict()
  config.mode = "sample"
  config.seed = 0
  config.task = "mask"  # "mask" | "sketch" | "depth": the checkpoints' task
  config.dtype = "float32"
  config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})
  config.batch_size = 16  # images per sampling call (padded to a multiple of the device count)
  config.output_name = "samples"
  config.grid_rows = 16  # rows shown in grid.png
  config.upsample_ground_truth = True  # dataset input: also upsample the real low-res images (for LPIPS)
  # False: the upsampler skips the base samples and runs only on the real low-res images of a
  # dataset split (upsample_ground_truth), to evaluate the upsampler alone at half the cost.
  config.upsample_samples = True
  # input.paths: a folder or comma-separated files (depth: normal.png+depth.png pairs);
  # input.split: a split of the prepared dataset config.data instead (count 0 = all of it).
  config.input = ml_collections.ConfigDict({"paths": "", "split": "", "count": 0})
  config.data = default_data_config()  # the dataset (palette of mask files; dataset input)
  # The reference: base DDPM over 250 steps with plain guidance 1.3 (image_sample.py, sample.sh).
  config.base = ml_collections.ConfigDict({
      "checkpoint": "", "schedule": "cosine", "num_timesteps": 1000,
      "sample": sample_config(respacing="250", guidance_scale=1.3)})
  # The reference's upsampler: linear schedule, fast27, temperature 0.997, no guidance.
  config.upsampler = ml_collections.ConfigDict({
      "checkpoint": "", "schedule": "linear", "num_timesteps": 1000,
      "sample": sample_config(respacing="fast27", temperature=0.997)})
  return config
