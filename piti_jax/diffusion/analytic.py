"""The exact denoiser for Gaussian data, used to check samplers end to end.

For data x0 ~ N(mu, s^2) independently per dimension and x_t = sqrt(abar) x0
+ sqrt(1 - abar) eps, x_t ~ N(sqrt(abar) mu, D) with D = abar s^2 + 1 - abar, and
  E[eps | x_t]  = sqrt(1 - abar) (x_t - sqrt(abar) mu) / D,
  Var[x0 | x_t] = s^2 (1 - abar) / D.
The true reverse step q(x_{k-1} | x_k) of a (respaced) process is then Gaussian with
the posterior mean at x0 = E[x0 | x_k] and variance beta~_k + coef1_k^2 Var[x0 | x_k];
the model's v channel selects that variance in the learned range (clipped to [-1, 1]).
Between the process's steps (DPM-Solver++ asks there) log alpha is interpolated linearly
in the step index, the same continuous process the solver assumes.
"""

from typing import Callable

import jax.numpy as jnp
from jax import Array

from piti_jax.diffusion.gaussian import GaussianDiffusion


def analytic_eps(x_t: Array, alpha_bar: Array, data_mean: Array, data_std: Array) -> Array:
  """E[eps | x_t] for Gaussian data; alpha_bar broadcasts against x_t (B, H, W, C)."""
  variance = alpha_bar * jnp.square(data_std) + 1.0 - alpha_bar
  return jnp.sqrt(1.0 - alpha_bar) * (x_t - jnp.sqrt(alpha_bar) * data_mean) / variance


def gaussian_data_model_fn(diffusion: GaussianDiffusion, data_mean: Array, data_std: Array, *,
                           learned_variance: bool = True) -> Callable[[Array, Array], Array]:
  """A model_fn that outputs the exact eps (and optimal v) for x0 ~ N(data_mean, data_std^2).

  Args:
    diffusion: the process the sampler walks (respaced or not); model times are mapped
      back to its step indices.
    data_mean, data_std: per-dimension statistics, (H, W, C) or broadcastable to it.
    learned_variance: output (B, H, W, 2C) = [eps, v] (True) or (B, H, W, C) eps only.

  Returns:
    model_fn(x_t (B, H, W, C), t_model float (B,)) -> (B, H, W, 2C or C).
  """
  grid = jnp.arange(diffusion.num_timesteps, dtype=diffusion.betas.dtype)
  model_times = diffusion.model_timesteps(jnp.arange(diffusion.num_timesteps))
  log_alpha_table = jnp.log(diffusion.sqrt_alphas_cumprod)

  def model_fn(x_t: Array, t_model: Array) -> Array:
    position = jnp.interp(t_model, model_times, grid)
    column = (-1,) + (1,) * (x_t.ndim - 1)
    alpha_bar = jnp.exp(2.0 * jnp.interp(position, grid, log_alpha_table)).reshape(column)
    eps = analytic_eps(x_t, alpha_bar, data_mean, data_std)
    if not learned_variance:
      return eps
    k = jnp.round(position).astype(jnp.int32)
    variance_x0 = jnp.square(data_std) * (1.0 - alpha_bar) / (alpha_bar * jnp.square(data_std) + 1.0 - alpha_bar)
    true_variance = diffusion.posterior_variance[k].reshape(column) + jnp.square(
        diffusion.posterior_mean_coef1[k].reshape(column)) * variance_x0
    min_log = diffusion.posterior_log_variance_clipped[k].reshape(column)
    max_log = diffusion.log_betas[k].reshape(column)
    span = jnp.where(max_log > min_log, max_log - min_log, 1.0)
    v = jnp.clip(2.0 * (jnp.log(true_variance) - min_log) / span - 1.0, -1.0, 1.0)
    return jnp.concatenate([eps, jnp.broadcast_to(v, eps.shape)], axis=-1)

  return model_fn
