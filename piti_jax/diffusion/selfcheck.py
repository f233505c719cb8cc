"""Runner of mode "diffusion_check": every sampler against a known Gaussian (configs/diffusion_check.py).

For x0 ~ N(mu, s^2) per dimension and the exact eps as the model, each sampler should
reproduce mu and s. All samplers start from the same x_T noise, standardised per
dimension (sample mean 0, std 1), so DDIM's and DPM-Solver++'s errors are their own
discretisation errors; DDPM's per-step noise adds Monte Carlo error of about the listed
standard errors. The runner logs and writes <workdir>/diffusion_check.json:
  {"config": {...}, "monte_carlo_standard_error": {"mean": 1/sqrt(N), "std": 1/sqrt(2N)},
   "results": [{"sampler", "respacing" or "steps", "model_calls", "max_mean_error",
                "rms_mean_error", "max_std_error", "rms_std_error", "within_tolerance",
                "seconds"}, ...]}
where mean errors are |sample mean - mu| / s and std errors |sample std / s - 1|, per
dimension, then the max or root-mean-square over dimensions; "seconds" is the wall time
of the sampler including its compilation.
"""

import json
import time
from typing import Callable

import ml_collections
import numpy as np
import jax
import jax.numpy as jnp
from absl import logging

from piti_jax.diffusion import samplers
from piti_jax.diffusion.analytic import gaussian_data_model_fn
from piti_jax.diffusion.gaussian import make_diffusion
from piti_jax.diffusion.samplers import SPACINGS
from piti_jax.diffusion.schedules import SCHEDULE_NAMES
from piti_jax import storage
from piti_jax.errors import PitiError

SAMPLERS = ("ddpm", "ddim", "dpm_solver_pp")
RESULT_FILE = "diffusion_check.json"


def _validate(config: ml_collections.ConfigDict) -> list[str]:
  """Checks the config and returns the sampler names to run."""
  if config.schedule not in SCHEDULE_NAMES:
    raise PitiError(f"config.schedule={config.schedule!r} is unknown; use one of {', '.join(SCHEDULE_NAMES)}.")
  names = [name.strip() for name in config.samplers.split(",") if name.strip()]
  unknown = [name for name in names if name not in SAMPLERS]
  if unknown or not names:
    raise PitiError(f"config.samplers={config.samplers!r} must list samplers from {', '.join(SAMPLERS)}, "
                    "separated by commas.")
  if config.dpm_solver_spacing not in SPACINGS:
    raise PitiError(f"config.dpm_solver_spacing={config.dpm_solver_spacing!r} is unknown; use one of "
                    f"{', '.join(SPACINGS)}.")
  for field in ("num_timesteps", "num_samples", "image_size", "channels", "dpm_solver_steps"):
    if config[field] < 1:
      raise PitiError(f"config.{field}={config[field]} must be a positive integer.")
  if config.num_samples < 2:
    raise PitiError("config.num_samples must be >= 2 to measure a standard deviation.")
  if not 0 < config.data_std_min <= config.data_std_max:
    raise PitiError(f"need 0 < config.data_std_min <= config.data_std_max, got {config.data_std_min}, "
                    f"{config.data_std_max}.")
  if config.data_mean_max < 0 or config.tolerance <= 0:
    raise PitiError("config.data_mean_max must be >= 0 and config.tolerance > 0.")
  return names


def _errors(samples: np.ndarray, data_mean: np.ndarray, data_std: np.ndarray) -> dict:
  """Mean/std errors of samples (N, H, W, C) against per-dimension mu, s (H, W, C)."""
  samples = samples.astype(np.float64)
  mean_error = np.abs(samples.mean(axis=0) - data_mean) / data_std
  std_error = np.abs(samples.std(axis=0) / data_std - 1.0)
  return dict(max_mean_error=float(mean_error.max()), rms_mean_error=float(np.sqrt(np.mean(mean_error**2))),
              max_std_error=float(std_error.max()), rms_std_error=float(np.sqrt(np.mean(std_error**2))))


def _standardised_noise(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Standard normal noise (N, ...) shifted and scaled to sample mean 0 and std 1 per dimension."""
  noise = jax.random.normal(key, shape)
  return (noise - noise.mean(axis=0)) / noise.std(axis=0)


def _sampler_run(name: str, config: ml_collections.ConfigDict, data_mean: jax.Array,
                 data_std: jax.Array) -> tuple[dict, Callable[[jax.Array, jax.Array], jax.Array]]:
  """(description of the run, jitted (key, x_T noise) -> samples)."""
  shape = (config.num_samples, config.image_size, config.image_size, config.channels)
  if name == "dpm_solver_pp":
    diffusion = make_diffusion(config.schedule, config.num_timesteps)
    model_fn = gaussian_data_model_fn(diffusion, data_mean, data_std, learned_variance=config.learned_variance)
    description = dict(sampler=name, steps=config.dpm_solver_steps, spacing=config.dpm_solver_spacing,
                       thresholding=config.dpm_solver_thresholding, model_calls=config.dpm_solver_steps)
    return description, jax.jit(lambda key, noise: samplers.dpm_solver_pp_sample(
        diffusion, model_fn, shape, key, steps=config.dpm_solver_steps, spacing=config.dpm_solver_spacing,
        clip_denoised=config.clip_denoised, thresholding=config.dpm_solver_thresholding, noise=noise))
  respacing = config.ddpm_respacing if name == "ddpm" else config.ddim_respacing
  diffusion = make_diffusion(config.schedule, config.num_timesteps, respacing)
  model_fn = gaussian_data_model_fn(diffusion, data_mean, data_std, learned_variance=config.learned_variance)
  description = dict(sampler=name, respacing=respacing, model_calls=diffusion.num_timesteps)
  if name == "ddpm":
    return description, jax.jit(lambda key, noise: samplers.ddpm_sample(
        diffusion, model_fn, shape, key, clip_denoised=config.clip_denoised, noise=noise))
  description["eta"] = config.ddim_eta
  return description, jax.jit(lambda key, noise: samplers.ddim_sample(
      diffusion, model_fn, shape, key, clip_denoised=config.clip_denoised, eta=config.ddim_eta, noise=noise))


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Samples the configured Gaussian with each sampler and writes the errors to the workdir."""
  names = _validate(config)
  data_shape = (config.image_size, config.image_size, config.channels)
  rng = np.random.default_rng(config.seed)
  data_mean = rng.uniform(-config.data_mean_max, config.data_mean_max, data_shape)
  data_std = rng.uniform(config.data_std_min, config.data_std_max, data_shape)
  noise_key, key = jax.random.split(jax.random.key(config.seed))
  noise = _standardised_noise(noise_key, (config.num_samples,) + data_shape)

  results = []
  for name in names:
    description, sample = _sampler_run(name, config, jnp.asarray(data_mean, jnp.float32),
                                       jnp.asarray(data_std, jnp.float32))
    start = time.perf_counter()
    samples = np.asarray(jax.device_get(sample(key, noise)))
    result = dict(description, **_errors(samples, data_mean, data_std))
    result["within_tolerance"] = bool(max(result["max_mean_error"], result["max_std_error"]) <= config.tolerance)
    result["seconds"] = round(time.perf_counter() - start, 3)
    logging.info("diffusion_check %s", json.dumps(result))
    results.append(result)

  report = dict(config=config.to_dict(),
                monte_carlo_standard_error=dict(mean=1.0 / np.sqrt(config.num_samples),
                                                std=1.0 / np.sqrt(2.0 * config.num_samples)),
                results=results)
  if storage.is_leader():
    path = storage.prepare_workdir(workdir, create=True) / RESULT_FILE
    storage.write_text(path, json.dumps(report, indent=2))
    logging.info("diffusion_check: wrote %s", path)
  failed = [result["sampler"] for result in results if not result["within_tolerance"]]
  if failed:
    logging.warning("diffusion_check: %s outside tolerance %g (see %s)", ", ".join(failed), config.tolerance,
                    RESULT_FILE)
