"""Tiny CPU-sized jobs on the built-in generated `shapes` dataset (no download needed).

The same recipe as the real jobs at a size a laptop CPU trains in minutes: a 32x32
text-to-image prior pretrained on shapes captions, then PITI's mask finetune from it.

  python -m piti_jax.main --config=configs/shapes.py:pretrain     --workdir=/tmp/shapes/prior
  python -m piti_jax.main --config=configs/shapes.py:stage1       --workdir=/tmp/shapes/stage1 \
      --config.init.prior.path=/tmp/shapes/prior
  python -m piti_jax.main --config=configs/shapes.py:stage1_cont  --workdir=/tmp/shapes/stage1_cont \
      --config.init.prior.path=/tmp/shapes/prior --config.init.stage1.path=/tmp/shapes/stage1
  python -m piti_jax.main --config=configs/shapes.py:stage2       --workdir=/tmp/shapes/stage2 \
      --config.init.prior.path=/tmp/shapes/prior --config.init.stage1.path=/tmp/shapes/stage1
  python -m piti_jax.main --config=configs/shapes.py:pretrain_upsample --workdir=/tmp/shapes/prior_up
  python -m piti_jax.main --config=configs/shapes.py:upsample     --workdir=/tmp/shapes/upsample \
      --config.init.prior.path=/tmp/shapes/prior_up
  python -m piti_jax.main --config=configs/shapes.py:fewshot      --workdir=/tmp/shapes/fewshot \
      --config.init.prior.path=/tmp/shapes/prior

Any field can be overridden, e.g. `--config.train.num_steps=50 --config.mesh.fsdp=2
--config.model.dtype=bfloat16`. The dataset is generated into data.data_dir on first use.
"""

from piti_jax.train import config as train_config

# A 32x32 model with 64x64 conditions (4x4 = 16 tokens) so every job runs on a CPU.
TINY_UNET = dict(image_size=32, model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_ds=(2,),
                 num_head_channels=32, xf_width=64, xf_layers=1, xf_heads=2)
TINY_PITI = dict(TINY_UNET, cond_size=64, cnn_hidden=(8, 16, 32, 64, 64))
TINY_TEXT = dict(TINY_UNET, text_ctx=32, n_vocab=257)
EMA_RATE = 0.99

# job -> (recipe in piti_jax.train.config, its job, tiny preset, what this job sets besides the recipe).
# Everything else comes from the recipe (the reference's settings) and `_shrink` (sizes for a CPU).
JOBS = {
    "pretrain": ("text", "base", "tiny_text64",
                 {"optim.lr": 2e-3, "train.num_steps": 1500, "sample.guidance_scale": 1.5}),
    "stage1": ("piti", "stage1", "tiny_piti64", {"optim.lr": 1e-3, "train.num_steps": 600}),
    "stage1_cont": ("piti", "stage1_cont", "tiny_piti64", {"optim.lr": 5e-4, "train.num_steps": 200}),
    "stage2": ("piti", "stage2", "tiny_piti64", {"optim.lr": 5e-4, "train.num_steps": 600}),
    "pretrain_upsample": ("text", "upsample", "tiny_text_upsample64",
                          {"optim.lr": 1e-3, "train.num_steps": 1500, "data.uncond_p": 0.2}),
    "upsample": ("piti", "upsample", "tiny_piti_upsample64",
                 {"optim.lr": 2e-4, "train.num_steps": 300, "adversarial.disc_channels": 16,
                  "adversarial.start_step": 20}),
    "fewshot": ("piti", "fewshot", "tiny_piti64",
                {"optim.lr": 5e-4, "train.num_steps": 300, "data.train_subset": 32}),  # the first few dozen
}


def _shrink(config, preset: str) -> None:
  """The sizes every shapes job shares: 32x32 images (64x64 for upsamplers, from 32x32), batch 16."""
  upsampler = config.data.low_res_size > 0
  text = config.data.task == "text"
  config.model.preset = preset
  config.data.image_size = 64 if upsampler else 32
  config.model.overrides = train_config.model_overrides(
      **dict(TINY_TEXT if text else TINY_PITI, image_size=config.data.image_size))
  config.train.ema_rates = (EMA_RATE,)  # short CPU runs: a 100-step average
  for entry in config.init.values():  # priors and stage-1 encoders come from shapes runs: their averages
    entry.tree = f"ema_{EMA_RATE:g}"
  config.data.data_dir = "~/tensorflow_datasets"
  config.data.train_size = 2000
  config.data.val_size = 64
  config.data.load_size = 64
  config.data.condition_size = 64
  config.data.low_res_size = 32 if upsampler else 0
  config.data.degradation = "bicubic"
  config.data.tokenizer = "bytes"
  config.data.max_text_len = 32
  config.optim.warmup_steps = 0
  config.train.global_batch_size = 16
  config.train.log_every = 25
  config.train.save_every = 250
  config.train.eval_every = 250
  config.train.eval_batches = 2
  config.train.sample_every = 500
  config.train.sample_batch_size = 8
  config.sample.respacing = "fast27" if upsampler else "25"


def get_config(arg: str = "pretrain"):
  job = train_config.parse_job(arg, tuple(JOBS))
  recipe, recipe_job, preset, settings = JOBS[job]
  if recipe == "text":
    config = train_config.text_pretrain_config(recipe_job, dataset="shapes")
  else:
    config = train_config.piti_finetune_config(recipe_job, dataset="shapes", task="mask")
  _shrink(config, preset)
  config.update_from_flattened_dict(settings)
  return config
