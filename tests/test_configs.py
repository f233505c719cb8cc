"""Every job of every config file builds, runs a registered mode, and carries the reference's settings."""

import pathlib

import pytest

from piti_jax import main
from piti_jax.data.config import check_data_config
from piti_jax.errors import PitiError
from piti_jax.models.presets import PRESETS
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


def test_every_config_file_is_listed():
  assert {p.stem for p in CONFIGS.glob("*.py")} == set(JOBS) | {"diffusion_check"}


@pytest.mark.parametrize("name, job", [(name, job) for name, jobs in JOBS.items() for job in jobs])
def test_every_job_builds_with_a_registered_mode_and_a_valid_data_config(name, job):
  config = load_config(name, job)
  assert config.mode in main.RUNNERS
  assert config.model.preset in PRESETS
  check_data_config(config.data)
  assert config.model.dtype == "float32" and config.mesh.fsdp == 1  # overridable: --config.model.dtype, mesh.fsdp


def test_base_stages_follow_the_reference():
  stage1, cont, stage2 = (load_config("coco_stuff_mask", job) for job in ("stage1", "stage1_cont", "stage2"))
  assert (stage1.train.trainable, stage1.data.uncond_p, stage1.optim.lr) == ("encoder", 0.0, 3.5e-5)
  assert (cont.train.trainable, cont.data.uncond_p, cont.optim.lr) == ("encoder", 0.2, 2e-5)
  assert (stage2.train.trainable, stage2.data.uncond_p, stage2.optim.lr) == ("", 0.2, 3.5e-5)
  assert stage2.init.prior.prefixes == "decoder" and stage2.init.stage1.prefixes == "encoder"
  assert stage1.diffusion.timestep_sampler == "loss-second-moment" and stage1.diffusion.schedule == "cosine"
  assert stage1.optim.weight_decay == 0.0 and stage1.train.ema_rates == (0.9999,)
  sketch_scales = [load_config("coco_sketch", job).sample.guidance_scale for job in ("stage1", "stage1_cont", "stage2")]
  assert sketch_scales == [1.0, 1.0, 2.5] and [stage1.sample.guidance_scale, stage2.sample.guidance_scale] == [1.0, 1.5]


def test_upsampler_and_fewshot_follow_the_reference():
  upsample = load_config("coco_stuff_mask", "upsample")
  assert (upsample.diffusion.schedule, upsample.diffusion.timestep_sampler) == ("linear", "uniform")
  assert (upsample.optim.lr, upsample.data.uncond_p, upsample.train.trainable) == (1e-5, 0.0, "")
  assert upsample.adversarial.enabled and (upsample.data.image_size, upsample.data.low_res_size) == (256, 64)
  fewshot = load_config("ade20k_mask", "fewshot")
  assert fewshot.data.train_subset == train_config.FEWSHOT_EXAMPLES and fewshot.train.trainable == ""
  assert load_config("coco_stuff_mask", "stage2").data.train_subset == 0


def test_unknown_job_names_the_jobs():
  with pytest.raises(PitiError, match="stage1_cont"):
    load_config("coco_stuff_mask", "stage3")
