"""Samplers on data from a known Gaussian, with the exact (analytic) eps as the model.

Data: x0 ~ N(mu, s^2) independently in each of 16 dimensions (mu in [-0.3, 0.3], s in
[0.2, 0.45]), 8192 samples per sampler, all starting from the same x_T noise, which is
standardised per dimension (sample mean 0, std 1) so that the deterministic samplers'
errors are their own and not Monte Carlo noise of x_T. Errors per dimension:
|sample mean - mu| / s and |sample std / s - 1|; DDPM's fresh noise at every step still
adds Monte Carlo error of about 1/sqrt(N) = 0.011 and 1/sqrt(2N) = 0.008.
Stated tolerance: the max over dimensions of both errors is below TOLERANCE = 0.05 for
DDPM (250 respaced steps, learned variance), DDIM (100 steps) and DPM-Solver++ (20
steps). clip_denoised=False here because clipping would also cut the Gaussian's own
tails beyond +-1; clipping is checked separately.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from piti_jax.diffusion.analytic import analytic_eps, gaussian_data_model_fn
from piti_jax.diffusion.gaussian import make_diffusion
from piti_jax.diffusion.samplers import ddim_sample, ddpm_sample, dpm_solver_pp_sample, dynamic_threshold
from piti_jax.errors import PitiError

TOLERANCE = 0.05
SHAPE = (8192, 2, 2, 4)
_rng = np.random.default_rng(0)
MEAN = _rng.uniform(-0.3, 0.3, SHAPE[1:]).astype(np.float32)
STD = _rng.uniform(0.2, 0.45, SHAPE[1:]).astype(np.float32)
KEY = jax.random.key(0)


def standardised_noise():
  noise = np.random.default_rng(1).normal(size=SHAPE)
  return jnp.asarray((noise - noise.mean(0)) / noise.std(0), jnp.float32)


def errors(samples):
  """(max mean error, max std error) over dimensions, in units of s."""
  samples = np.asarray(samples, np.float64)
  mean_error = np.abs(samples.mean(0) - MEAN) / STD
  std_error = np.abs(samples.std(0) / STD - 1.0)
  return float(mean_error.max()), float(std_error.max())


def model_for(diffusion, mean=MEAN, std=STD, learned_variance=True):
  return gaussian_data_model_fn(diffusion, jnp.asarray(mean), jnp.asarray(std), learned_variance=learned_variance)


@functools.cache
def gaussian_samples(sampler: str) -> np.ndarray:
  if sampler == "ddpm250":
    diffusion = make_diffusion("cosine", 1000, "250")
    fn = lambda noise: ddpm_sample(diffusion, model_for(diffusion), SHAPE, KEY, clip_denoised=False, noise=noise)
  elif sampler == "ddim100":
    diffusion = make_diffusion("cosine", 1000, "100")
    fn = lambda noise: ddim_sample(diffusion, model_for(diffusion), SHAPE, KEY, clip_denoised=False, noise=noise)
  else:
    diffusion = make_diffusion("cosine", 1000)
    fn = lambda noise: dpm_solver_pp_sample(diffusion, model_for(diffusion), SHAPE, KEY, steps=20,
                                            clip_denoised=False, noise=noise)
  return np.asarray(jax.jit(fn)(standardised_noise()))


def test_analytic_eps_is_the_posterior_mean_of_the_noise():
  rng = np.random.default_rng(3)
  alpha_bar, mean, std = 0.3, 0.2, 0.4
  x0 = rng.normal(mean, std, 200_000)
  eps = rng.normal(size=200_000)
  x_t = np.sqrt(alpha_bar) * x0 + np.sqrt(1 - alpha_bar) * eps
  # E[eps | x_t] is linear in x_t; least squares recovers it from samples.
  slope, intercept = np.polyfit(x_t, eps, 1)
  grid = np.array([-1.0, 0.0, 1.5])
  np.testing.assert_allclose(analytic_eps(grid, alpha_bar, mean, std), slope * grid + intercept, atol=0.01)


@pytest.mark.parametrize("sampler", ["ddpm250", "ddim100", "dpm20"])
def test_samplers_reproduce_gaussian_data(sampler):
  samples = gaussian_samples(sampler)
  assert samples.shape == SHAPE and np.isfinite(samples).all()
  mean_error, std_error = errors(samples)
  assert mean_error < TOLERANCE and std_error < TOLERANCE, (sampler, mean_error, std_error)


def test_dpm_solver_20_steps_lands_as_close_as_ddpm_250():
  dpm, ddpm = errors(gaussian_samples("dpm20")), errors(gaussian_samples("ddpm250"))
  assert max(dpm) < TOLERANCE and max(ddpm) < TOLERANCE, (dpm, ddpm)
  # DPM-Solver++'s own (systematic) error is within 0.02 of DDPM-250's sampling error.
  assert max(dpm) < max(ddpm) + 0.02, (dpm, ddpm)
  # DDIM with 20 steps, for contrast, is far off (first order, shrinks the std).
  diffusion = make_diffusion("cosine", 1000, "20")
  linear_map = jax.jit(lambda noise: ddim_sample(diffusion, model_for(diffusion, MEAN[:1, :1], STD[:1, :1]),
                                                 (2, 1, 1, 4), KEY, clip_denoised=False, noise=noise))
  gain = np.asarray(linear_map(jnp.stack([jnp.zeros((1, 1, 4)), jnp.ones((1, 1, 4))])))
  assert np.max(np.abs((gain[1] - gain[0]) / STD[0, 0] - 1.0)) > 2 * TOLERANCE


@functools.cache
def solver_gain(steps: int) -> np.ndarray:
  """Per-dimension std gain of DPM-Solver++ (a linear map for Gaussian data), without sampling noise.

  x_T = 0 and x_T = 1 give the map's offset and slope; the exact flow has slope s.
  """
  diffusion = make_diffusion("cosine", 1000)
  std = np.array([0.1, 0.3, 0.6, 1.0], np.float32).reshape(1, 1, 4)
  noise = jnp.stack([jnp.zeros((1, 1, 4)), jnp.ones((1, 1, 4))])
  out = jax.jit(lambda noise: dpm_solver_pp_sample(diffusion, model_for(diffusion, 0.1, std), (2, 1, 1, 4), KEY,
                                                   steps=steps, clip_denoised=False, noise=noise))(noise)
  return np.ravel((np.asarray(out[1]) - np.asarray(out[0])) / std) - 1.0


def test_dpm_solver_is_second_order():
  error_20, error_40 = np.abs(solver_gain(20)), np.abs(solver_gain(40))
  assert error_20.max() < TOLERANCE
  # Halving the step size divides the error by about 4 (second order), not 2.
  assert np.all(error_40 < error_20 / 3), (error_20, error_40)


@functools.cache
def small_ddpm():
  diffusion = make_diffusion("cosine", 1000, "10")
  model_fn = model_for(diffusion, np.full((2, 2, 3), 0.7, np.float32), np.full((2, 2, 3), 0.5, np.float32))
  return jax.jit(lambda key, noise, temperature, clip: jax.lax.cond(
      clip, lambda: ddpm_sample(diffusion, model_fn, (64, 2, 2, 3), key, noise=noise, temperature=temperature),
      lambda: ddpm_sample(diffusion, model_fn, (64, 2, 2, 3), key, noise=noise, temperature=temperature,
                          clip_denoised=False)))


def test_ddpm_is_deterministic_per_key_and_temperature_scales_x_t():
  sample = small_ddpm()
  noise = jax.random.normal(jax.random.key(5), (64, 2, 2, 3))
  first = sample(jax.random.key(1), noise, 1.0, True)
  np.testing.assert_array_equal(first, sample(jax.random.key(1), noise, 1.0, True))
  assert not np.allclose(first, sample(jax.random.key(2), noise, 1.0, True))
  np.testing.assert_allclose(sample(jax.random.key(1), noise, 0.5, True), sample(jax.random.key(1), 0.5 * noise, 1.0,
                                                                                 True), rtol=1e-6)
  assert not np.allclose(first, sample(jax.random.key(1), noise, 0.5, True))


def test_clip_denoised_keeps_samples_in_range():
  # Data N(0.7, 0.5^2) has much mass above 1: clipped x0 predictions keep samples in [-1, 1].
  sample = small_ddpm()
  noise = jax.random.normal(jax.random.key(5), (64, 2, 2, 3))
  clipped = np.asarray(sample(jax.random.key(1), noise, 1.0, True))
  unclipped = np.asarray(sample(jax.random.key(1), noise, 1.0, False))
  assert clipped.max() <= 1.0 and clipped.min() >= -1.0
  assert unclipped.max() > 1.2


def test_dynamic_threshold():
  x0 = jnp.asarray(np.random.default_rng(4).normal(0, 1.5, (3, 4, 4, 2)), jnp.float32)
  x0 = x0.at[2].multiply(0.3)  # a sample whose quantile is below 1: plain clipping to [-1, 1]
  out = np.asarray(dynamic_threshold(x0, 0.9, 1.0))
  for b in range(3):
    s = max(np.quantile(np.abs(np.asarray(x0[b])), 0.9), 1.0)
    np.testing.assert_allclose(out[b], np.clip(np.asarray(x0[b]), -s, s) / s, rtol=1e-5)
  assert np.abs(out).max() <= 1.0


def test_dpm_solver_with_thresholding_stays_in_range():
  diffusion = make_diffusion("cosine", 1000)
  model_fn = model_for(diffusion, np.full((2, 2, 3), 0.7, np.float32), np.full((2, 2, 3), 0.5, np.float32))
  out = jax.jit(lambda key: dpm_solver_pp_sample(diffusion, model_fn, (64, 2, 2, 3), key, steps=8,
                                                 thresholding=True))(KEY)
  assert np.isfinite(np.asarray(out)).all() and np.abs(np.asarray(out)).max() <= 1.0


def test_bad_solver_settings_are_user_errors():
  diffusion = make_diffusion("cosine", 1000)
  with pytest.raises(PitiError, match="spacing"):
    dpm_solver_pp_sample(diffusion, model_for(diffusion), (2, 2, 2, 4), KEY, steps=10, spacing="karras")
  with pytest.raises(PitiError, match="steps"):
    dpm_solver_pp_sample(diffusion, model_for(diffusion), (2, 2, 2, 4), KEY, steps=0)
