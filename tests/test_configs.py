"""Every job of every config file builds, runs a registered mode, and carries the reference's settings."""

import pathlib

import pytest
from absl import flags
from ml_collections import config_flags

from piti_jax import main
from piti_jax.data.config import check_data_config
from piti_jax.errors import PitiError
from piti_jax.models.presets import FIELD_TYPES, PRESETS, get_config
from piti_jax.param_paths import flatten
from piti_jax.train import config as train_config
from tests.train_helpers import load_config

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"
REAL_DATASETS = ("coco_stuff_mask", "coco_sketch", "ade20k_mask", "diode_depth")
JOBS = {
    **{name: train_config.PITI_JOBS for name in REAL_DATASETS},
    "shapes": ("pretrain", "stage1", "stage1_cont", "stage2", "pretrain_upsample", "upsample", "fewshot"),
    "text_pretrain": ("base", "upsample"),
    "bench": ("tiny", "small"),
}


# Configs of the modes that do not train: one job each, the file's default.
OTHER_MODES = {"diffusion_check": "diffusion_check", "sample": "sample", "evaluate": "evaluate", "demo": "demo"}


def test_every_config_file_is_listed():
  assert {p.stem for p in CONFIGS.glob("*.py")} == set(JOBS) | set(OTHER_MODES)


@pytest.mark.parametrize("name, mode", sorted(OTHER_MODES.items()))
def test_every_other_config_runs_its_own_mode(name, mode):
  config = train_config.load_config_file(str(CONFIGS / f"{name}.py"))
  assert config.mode == mode and mode in main.RUNNERS


@pytest.mark.parametrize("name, job", [(name, job) for name, jobs in JOBS.items() for job in jobs])
def test_every_job_builds_with_a_registered_mode_and_a_valid_data_config(name, job):
  config = load_config(name, job)
  assert config.mode in main.RUNNERS
  assert config.model.preset in PRESETS
  check_data_config(config.data)
  # every model field exists, so the command line can set it (`--config.model.overrides.remat=True`)
  assert set(config.model.overrides) == set(FIELD_TYPES)


def test_the_command_line_sets_any_model_field_and_a_new_preset_brings_its_own_values():
  argv = ["main", f"--config={CONFIGS / 'bench.py'}:tiny", "--config.model.preset=bench_small",
          "--config.model.overrides.dropout=0", "--config.model.overrides.channel_mult=(1, 2)",
          "--config.model.overrides.remat=True"]  # parsed as piti_jax.main parses its flags
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=values, sys_argv=argv)
  values(argv)
  config = values.config
  model = get_config(config.model.preset, **dict(config.model.overrides))
  assert (model.dropout, model.channel_mult, model.remat) == (0.0, (1, 2), True)
  expected = dict(PRESETS["bench_small"].__dict__, dropout=0.0, channel_mult=(1, 2), remat=True)
  assert model.__dict__ == expected  # the other fields are bench_small's values, not bench_tiny's


# The reference's settings, written out from PITI_SPEC.md (sections 4-7), not taken from the code.
SPEC_COMMON = {"diffusion.num_timesteps": 1000, "optim.b1": 0.9, "optim.b2": 0.999, "optim.eps": 1e-8,
               "optim.weight_decay": 0.0, "optim.grad_clip_norm": 0.0, "optim.warmup_steps": 0,
               "optim.cosine_decay_steps": 0, "train.ema_rates": (0.9999,), "model.dtype": "float32"}
SPEC_BASE = {**SPEC_COMMON, "diffusion.schedule": "cosine", "diffusion.timestep_sampler": "loss-second-moment",
             "train.global_batch_size": 128, "data.image_size": 64, "data.condition_size": 256,
             "data.load_size": 256, "data.low_res_size": 0, "data.flip": True, "data.random_crop": False,
             "sample.respacing": "100", "adversarial.enabled": False}
SPEC_STAGES = {
    "stage1": {"train.trainable": "encoder", "data.uncond_p": 0.0, "optim.lr": 3.5e-5, "train.num_steps": 200_000},
    "stage1_cont": {"train.trainable": "encoder", "data.uncond_p": 0.2, "optim.lr": 2e-5, "train.num_steps": 60_000},
    "stage2": {"train.trainable": "", "data.uncond_p": 0.2, "optim.lr": 3.5e-5},
}
SPEC_UPSAMPLE = {**SPEC_COMMON, "model.preset": "piti_upsample256", "diffusion.schedule": "linear",
                 "diffusion.timestep_sampler": "uniform", "train.trainable": "", "data.uncond_p": 0.0,
                 "optim.lr": 1e-5, "train.global_batch_size": 4, "data.image_size": 256, "data.low_res_size": 64,
                 "data.degradation": "bsrgan_light", "adversarial.enabled": True, "adversarial.start_step": 100,
                 "adversarial.perceptual_weight": 0.004, "adversarial.adversarial_weight": 0.01,
                 "adversarial.gradient_penalty_weight": 10.0, "adversarial.disc_lr": 1e-5,
                 "adversarial.disc_channels": 64, "adversarial.disc_layers": 3, "adversarial.critic_first": True,
                 "sample.respacing": "fast27", "sample.temperature": 0.997, "sample.guidance_scale": 1.0}


def _mismatches(config, expected: dict) -> dict:
  flat = flatten(config.to_dict())
  return {k: (flat.get(k), v) for k, v in expected.items() if flat.get(k) != v}


@pytest.mark.parametrize("name", REAL_DATASETS)
def test_base_stages_follow_the_reference(name):
  for stage, settings in SPEC_STAGES.items():
    config = load_config(name, stage)
    assert not _mismatches(config, {**SPEC_BASE, **settings, "model.preset": "piti_base64"}), (stage,)
    assert config.init.prior.prefixes == "decoder"
    assert config.init.prior.tree == "ema_0.9999"
    if stage != "stage1":
      assert (config.init.stage1.prefixes, config.init.stage1.tree) == ("encoder", "ema_0.9999")
  scales = [load_config(name, stage).sample.guidance_scale for stage in SPEC_STAGES]
  assert scales == ([1.0, 1.0, 2.5] if name == "coco_sketch" else [1.0, 1.5, 1.5])  # validation sample_c
  tasks = {"coco_stuff_mask": "mask", "coco_sketch": "sketch", "ade20k_mask": "mask", "diode_depth": "depth"}
  assert load_config(name, "stage1").model.overrides.task == tasks[name]


@pytest.mark.parametrize("name", REAL_DATASETS)
def test_upsampler_and_fewshot_follow_the_reference(name):
  assert not _mismatches(load_config(name, "upsample"), SPEC_UPSAMPLE)
  fewshot = load_config(name, "fewshot")
  assert not _mismatches(fewshot, {**SPEC_BASE, **SPEC_STAGES["stage2"], "data.train_subset": 1000})
  assert load_config(name, "stage2").data.train_subset == 0


def test_text_pretraining_vocabulary_follows_the_tokenizer():
  from piti_jax.train import loop

  config = load_config("text_pretrain", "base")
  assert config.data.tokenizer == "bytes"
  assert loop.resolve_text_vocabulary(config).model.overrides.n_vocab == 257  # not GLIDE's 50,257 rows
  config.model.overrides.n_vocab = 100
  with pytest.raises(PitiError, match="smaller than the 257 token ids"):
    loop.resolve_text_vocabulary(config)
  assert loop.resolve_text_vocabulary(load_config("coco_stuff_mask", "stage1")).model.overrides.n_vocab is None


def test_unknown_job_names_the_jobs():
  with pytest.raises(PitiError, match="stage1_cont"):
    load_config("coco_stuff_mask", "stage3")
