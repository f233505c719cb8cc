"""Samplers: ancestral DDPM, DDIM and DPM-Solver++ (2M), each one `lax.fori_loop`.

A `model_fn(x_t (B, H, W, C), t_model float (B,)) -> (B, H, W, 2C) or (B, H, W, C)` gets
the model time `diffusion.model_timesteps(t)` (original index * 1000 / T_orig), never
the respaced index. Wrap it with `guidance.guided_model_fn` for classifier-free guidance.

All samplers are jittable (call them inside `jax.jit`, closing over `model_fn` and the
static shape) and deterministic for a given key: x_T = temperature * N(0, I) is drawn
from `key` (or given as `noise`), and step k draws its noise from fold_in(key', k).
`key` is one typed PRNG key for the whole batch, or a batch of keys (B,), one per sample:
then every random number of sample b comes from its own key, so a sample does not depend
on the batch it was drawn in. `temperature` scales x_T only, as the reference's upsampler
does (0.997).
"""

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import Array

from piti_jax.diffusion.gaussian import GaussianDiffusion, make_diffusion
from piti_jax.errors import PitiError

ModelFn = Callable[[Array, Array], Array]
SPACINGS = ("logsnr", "time_uniform", "time_quadratic")  # DPM-Solver++ step placements


def _per_sample(key: Array) -> bool:
  """True for a batch of keys (B,), False for one key; raises for anything else."""
  if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    raise PitiError("samplers take typed PRNG keys (jax.random.key(seed)), not raw uint32 key data.")
  if key.ndim > 1:
    raise PitiError(f"sampler key must be one key or a batch (B,) of keys, got shape {key.shape}.")
  return key.ndim == 1


def _split(key: Array) -> tuple[Array, Array]:
  """Two independent keys (or key batches) from a key (or key batch)."""
  keys = jax.vmap(jax.random.split)(key) if _per_sample(key) else jax.random.split(key)
  return keys[..., 0], keys[..., 1]


def _normal(key: Array, k: Array | int | None, shape: Sequence[int], dtype) -> Array:
  """N(0, I) of `shape` from fold_in(key, k) (or `key` when k is None), one key per sample or one for all."""
  shape = tuple(shape)

  def draw(one_key: Array, one_shape: tuple) -> Array:
    return jax.random.normal(one_key if k is None else jax.random.fold_in(one_key, k), one_shape, dtype)

  if not _per_sample(key):
    return draw(key, shape)
  if key.shape[0] != shape[0]:
    raise PitiError(f"{key.shape[0]} sampler keys for a batch of {shape[0]}; pass one key per sample.")
  return jax.vmap(lambda one_key: draw(one_key, shape[1:]))(key)


def _start(diffusion: GaussianDiffusion, shape: Sequence[int], key: Array, temperature: float,
           noise: Array | None) -> tuple[Array, Array]:
  """(x_T, key for the per-step noise)."""
  init_key, loop_key = _split(key)
  if noise is None:
    noise = _normal(init_key, None, shape, diffusion.betas.dtype)
  elif noise.shape != tuple(shape):
    raise PitiError(f"sampler noise has shape {noise.shape} but shape={tuple(shape)}; pass matching shapes.")
  return temperature * noise, loop_key


def _step_indices(diffusion: GaussianDiffusion, k: Array, batch: int) -> Array:
  """Step index for loop iteration k (k = 0 is the noisiest step), as int32 (batch,)."""
  return jnp.full((batch,), diffusion.num_timesteps - 1 - k, jnp.int32)


def ddpm_sample(diffusion: GaussianDiffusion, model_fn: ModelFn, shape: Sequence[int], key: Array, *,
                clip_denoised: bool = True, temperature: float = 1.0, noise: Array | None = None) -> Array:
  """Ancestral sampling over every step of `diffusion` (respaced or not).

  x_{t-1} = mu_theta(x_t) + sigma_t z, with sigma_t from the model's learned-range v
  channels (or the diffusion's fixed variance), and no noise at the last step.

  Args:
    diffusion: the (respaced) process.
    model_fn: see the module docstring.
    shape: (B, H, W, C) of the samples.
    key: PRNG key, or one key per sample (B,).
    clip_denoised: clamp x0 predictions to [-1, 1] (the reference samples with True).
    temperature: scale of x_T.
    noise: optional standard-normal x_T noise (B, H, W, C) used instead of one from `key`.

  Returns:
    Samples (B, H, W, C) in the diffusion's dtype.
  """
  x, loop_key = _start(diffusion, shape, key, temperature, noise)

  def step(k, x):
    t = _step_indices(diffusion, k, shape[0])
    out = diffusion.p_mean_variance(model_fn(x, diffusion.model_timesteps(t)), x, t, clip_denoised=clip_denoised)
    z = _normal(loop_key, k, x.shape, x.dtype)
    not_last = (t[0] > 0).astype(x.dtype)
    return out["mean"] + not_last * jnp.exp(0.5 * out["log_variance"]) * z

  return jax.lax.fori_loop(0, diffusion.num_timesteps, step, x)


def ddim_sample(diffusion: GaussianDiffusion, model_fn: ModelFn, shape: Sequence[int], key: Array, *,
                clip_denoised: bool = True, temperature: float = 1.0, noise: Array | None = None,
                eta: float = 0.0) -> Array:
  """DDIM over every step of `diffusion` (respace it, e.g. "ddim50" or "50").

  x_{t-1} = sqrt(abar_{t-1}) x0 + sqrt(1 - abar_{t-1} - sigma^2) eps + sigma z, with
  sigma = eta sqrt((1 - abar_{t-1}) / (1 - abar_t)) sqrt(1 - abar_t / abar_{t-1}) and eps
  re-derived from the (clipped) x0. eta = 0 is deterministic after x_T; eta = 1 is
  ancestral sampling with the small (posterior) variance. Variance channels are ignored.

  Arguments and result as `ddpm_sample`, plus `eta`.
  """
  x, loop_key = _start(diffusion, shape, key, temperature, noise)

  def step(k, x):
    t = _step_indices(diffusion, k, shape[0])
    out = diffusion.p_mean_variance(model_fn(x, diffusion.model_timesteps(t)), x, t, clip_denoised=clip_denoised)
    alpha_bar = diffusion.alphas_cumprod[t[0]]
    alpha_bar_prev = diffusion.alphas_cumprod_prev[t[0]]
    sigma = eta * jnp.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar)) * jnp.sqrt(1.0 - alpha_bar / alpha_bar_prev)
    mean = out["pred_xstart"] * jnp.sqrt(alpha_bar_prev) + jnp.sqrt(1.0 - alpha_bar_prev - sigma**2) * out["eps"]
    z = _normal(loop_key, k, x.shape, x.dtype)
    not_last = (t[0] > 0).astype(x.dtype)
    return mean + not_last * sigma * z

  return jax.lax.fori_loop(0, diffusion.num_timesteps, step, x)


def dynamic_threshold(x0: Array, ratio: float = 0.995, max_value: float = 1.0) -> Array:
  """Imagen's dynamic thresholding of x0 predictions (B, H, W, C).

  Per sample, s = max(quantile_ratio(|x0|), max_value); x0 -> clip(x0, -s, s) / s.
  """
  flat = jnp.abs(x0).reshape(x0.shape[0], -1)
  s = jnp.maximum(jnp.quantile(flat, ratio, axis=1), max_value)
  s = s.reshape((-1,) + (1,) * (x0.ndim - 1))
  return jnp.clip(x0, -s, s) / s


def _solver_grid(diffusion: GaussianDiffusion, steps: int, spacing: str) -> tuple[Array, Array, Array, Array]:
  """Continuous positions where DPM-Solver++ calls the model, and alpha, sigma, lambda there.

  The discrete process is made continuous as in DPM-Solver: log alpha is piecewise
  linear in the (fractional) step index k in [0, T - 1]. The `steps` positions run from
  k = T - 1 to k = 0, evenly spaced in lambda ("logsnr"), in k ("time_uniform"), or in
  sqrt(k) ("time_quadratic", denser near the data).

  Returns:
    k, alpha, sigma, lambda, each float (steps,).
  """
  if not 1 <= steps <= diffusion.num_timesteps:
    raise PitiError(f"DPM-Solver++ steps must be in [1, {diffusion.num_timesteps}] for a "
                    f"{diffusion.num_timesteps}-step process, got {steps}.")
  if spacing not in SPACINGS:
    raise PitiError(f"unknown DPM-Solver++ spacing {spacing!r}; use one of {', '.join(SPACINGS)}.")
  last = diffusion.num_timesteps - 1
  grid = jnp.arange(diffusion.num_timesteps, dtype=diffusion.betas.dtype)
  log_alpha_table = jnp.log(diffusion.sqrt_alphas_cumprod)
  if spacing == "logsnr":
    ends = log_alpha_table[jnp.array([last, 0])]
    lambda_ends = ends - 0.5 * jnp.log(-jnp.expm1(2.0 * ends))
    lambdas = jnp.linspace(lambda_ends[0], lambda_ends[1], steps)
    log_alpha = -0.5 * jnp.logaddexp(0.0, -2.0 * lambdas)
    k = jnp.interp(log_alpha, log_alpha_table[::-1], grid[::-1])
  else:
    if spacing == "time_uniform":
      k = jnp.linspace(float(last), 0.0, steps, dtype=grid.dtype)
    else:
      k = jnp.square(jnp.linspace(float(last)**0.5, 0.0, steps, dtype=grid.dtype))
    log_alpha = jnp.interp(k, grid, log_alpha_table)
  sigma_log = 0.5 * jnp.log(-jnp.expm1(2.0 * log_alpha))
  return k, jnp.exp(log_alpha), jnp.exp(sigma_log), log_alpha - sigma_log


def dpm_solver_pp_sample(diffusion_or_schedule: GaussianDiffusion | str, model_fn: ModelFn, shape: Sequence[int],
                         key: Array, *, steps: int, spacing: str = "logsnr", clip_denoised: bool = True,
                         thresholding: bool = False, threshold_ratio: float = 0.995, threshold_max: float = 1.0,
                         temperature: float = 1.0, noise: Array | None = None) -> Array:
  """DPM-Solver++ (2M, the multistep second-order data-prediction solver; Lu et al. 2022).

  Solves the probability-flow ODE in lambda = log(alpha / sigma), alpha = sqrt(abar),
  sigma = sqrt(1 - abar), through the `steps` model-call positions of `_solver_grid`
  (from the last step of the process to step 0; pass the un-respaced 1000-step
  process). With h_i = lambda_i - lambda_{i-1} and D the data prediction,
    x_i = (sigma_i / sigma_{i-1}) x_{i-1} - alpha_i (exp(-h_i) - 1) D,
  where D = x0_{i-1} at the first step and D = (1 + 1/(2r)) x0_{i-1} - 1/(2r) x0_{i-2},
  r = h_{i-1} / h_i, after it. The final step goes from step 0 to sigma = 0, where the
  update is first order and returns the last x0 prediction (as DDIM's last step does).
  One model call per step. Between grid points the model gets fractional times (the
  original index interpolated linearly, times 1000 / T_orig). Variance channels are
  ignored.

  Args:
    diffusion_or_schedule: a GaussianDiffusion, or a schedule name for a 1000-step one.
    model_fn, shape, key, temperature, noise: as in `ddpm_sample`.
    steps: number of model calls.
    spacing: "logsnr" (default), "time_uniform" or "time_quadratic".
    clip_denoised: clamp x0 predictions to [-1, 1] (ignored when thresholding).
    thresholding: dynamic thresholding of x0 (see `dynamic_threshold`).
    threshold_ratio, threshold_max: its quantile and lower bound of the threshold.
  """
  diffusion = (make_diffusion(diffusion_or_schedule) if isinstance(diffusion_or_schedule, str)
               else diffusion_or_schedule)
  positions, alphas, sigmas, lambdas = _solver_grid(diffusion, steps, spacing)
  grid = jnp.arange(diffusion.num_timesteps, dtype=positions.dtype)
  model_times = jnp.interp(positions, grid, diffusion.timestep_map.astype(positions.dtype))
  model_times = model_times * (1000.0 / diffusion.original_num_steps)
  # One padding entry so that the (unused) update after the last call stays finite.
  alphas, sigmas = jnp.append(alphas, alphas[-1]), jnp.append(sigmas, sigmas[-1])
  lambdas = jnp.append(lambdas, lambdas[-1] + 1.0)
  x, _ = _start(diffusion, shape, key, temperature, noise)

  def data_prediction(x, i):
    output = model_fn(x, jnp.full((shape[0],), model_times[i]))
    prediction, _ = diffusion.split_model_output(output, x)
    if diffusion.prediction == "eps":
      x0 = (x - sigmas[i] * prediction) / alphas[i]
    elif diffusion.prediction == "v":
      x0 = alphas[i] * x - sigmas[i] * prediction
    else:
      x0 = prediction
    if thresholding:
      return dynamic_threshold(x0, threshold_ratio, threshold_max)
    return jnp.clip(x0, -1.0, 1.0) if clip_denoised else x0

  def step(i, carry):
    x, previous_x0, previous_h = carry
    x0 = data_prediction(x, i)
    h = lambdas[i + 1] - lambdas[i]
    half_inverse_r = 0.5 * h / previous_h
    d = jnp.where(i == 0, x0, (1.0 + half_inverse_r) * x0 - half_inverse_r * previous_x0)
    x = (sigmas[i + 1] / sigmas[i]) * x - alphas[i + 1] * jnp.expm1(-h) * d
    return jnp.where(i == steps - 1, x0, x), x0, h

  x, _, _ = jax.lax.fori_loop(0, steps, step, (x, jnp.zeros_like(x), lambdas[1] - lambdas[0]))
  return x
