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

JOBS = ("pretrain", "stage1", "stage1_cont", "stage2", "pretrain_upsample", "upsample", "fewshot")

# A 32x32 model with 64x64 conditions (4x4 = 16 tokens) so every job runs on a CPU.
TINY_UNET = dict(image_size=32, model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_ds=(2,),
                 num_head_channels=32, xf_width=64, xf_layers=1, xf_heads=2)
TINY_PITI = dict(TINY_UNET, cond_size=64, cnn_hidden=(8, 16, 32, 64, 64))
TINY_TEXT = dict(TINY_UNET, text_ctx=32, n_vocab=257)


def get_config(arg: str = "pretrain"):
  job = train_config.parse_job(arg, JOBS)
  config = train_config.default_config()
  config.train.ema_rates = (0.99,)  # short CPU runs: a 100-step average
  upsampler = job in ("pretrain_upsample", "upsample")
  text = job.startswith("pretrain")

  config.data.name = "shapes"
  config.data.data_dir = "~/tensorflow_datasets"
  config.data.train_size = 2000
  config.data.val_size = 64
  config.data.load_size = 64
  config.data.condition_size = 64
  config.data.image_size = 64 if upsampler else 32
  config.data.low_res_size = 32 if upsampler else 0
  config.data.degradation = "bicubic"
  config.data.task = "text" if text else "mask"
  config.data.tokenizer = "bytes"
  config.data.max_text_len = 32

  if text:
    config.mode = "pretrain"
    config.model.preset = "tiny_text_upsample64" if upsampler else "tiny_text64"
    config.model.overrides = dict(TINY_TEXT, image_size=config.data.image_size)
    config.data.uncond_p = 0.2
    config.train.trainable = ""
    config.optim.lr = 2e-3 if not upsampler else 1e-3
    config.train.num_steps = 1500
    if upsampler:
      config.diffusion.schedule = "linear"
      config.diffusion.timestep_sampler = "uniform"
      config.sample.respacing = "fast27"
  elif upsampler:
    train_config.set_upsampler(config, "tiny_piti_upsample64")
    config.model.overrides = dict(TINY_PITI, image_size=64)
    config.adversarial.disc_channels = 16
    config.adversarial.start_step = 20
    config.optim.lr = 2e-4
    config.train.num_steps = 300
    config.init.prior = train_config.init_entry(tree="ema_0.99", prefixes="decoder")
  else:
    config.model.preset = "tiny_piti64"
    config.model.overrides = dict(TINY_PITI)
    train_config.set_base_stage(config, "stage2" if job == "fewshot" else job)
    config.optim.lr = {"stage1": 1e-3, "stage1_cont": 5e-4, "stage2": 5e-4, "fewshot": 5e-4}[job]
    config.train.num_steps = {"stage1": 600, "stage1_cont": 200, "stage2": 600, "fewshot": 300}[job]
    if job == "fewshot":
      config.data.train_subset = 32  # the first few dozen examples

  config.diffusion.num_timesteps = 1000
  config.train.global_batch_size = 16
  config.train.log_every = 25
  config.train.save_every = 250
  config.train.eval_every = 250
  config.train.eval_batches = 2
  config.train.sample_every = 500
  config.train.sample_batch_size = 8
  config.sample.respacing = "25" if not upsampler else "fast27"
  config.sample.guidance_scale = 1.0 if (upsampler or job == "stage1") else 1.5
  return config
