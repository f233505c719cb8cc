"""The Gaussian diffusion process: forward noising, the learned reverse step, losses.

Conventions (NHWC): images x are (B, H, W, C); `t` is an int array (B,) of indices into
this process's (possibly respaced) steps, 0 = least noisy. A model output is either
(B, H, W, 2C) = [prediction, v] with a learned-range variance, or (B, H, W, C) = the
prediction alone with a fixed variance. The prediction is eps (the reference), x0 or
v = sqrt(abar) eps - sqrt(1 - abar) x0, chosen by `GaussianDiffusion.prediction`.

Learned-range variance: with f = (v + 1) / 2, log sigma^2 = f log beta_t
+ (1 - f) log beta~_t, where beta~_t is the posterior variance (clipped at t = 0 to its
t = 1 value). Fixed variances: "large" = beta_t (beta~_1 at t = 0), "small" = beta~_t.
"""

import numpy as np
import jax
import jax.numpy as jnp
from flax import struct
from jax import Array

from piti_jax.diffusion import likelihoods
from piti_jax.diffusion.schedules import get_named_beta_schedule, respaced_betas, space_timesteps
from piti_jax.errors import PitiError

PREDICTIONS = ("eps", "x0", "v")
FIXED_VARIANCES = ("large", "small")


def _at(table: Array, t: Array, ndim: int) -> Array:
  """table[t] as (B, 1, ..., 1) with `ndim` dimensions, ready to broadcast against x."""
  values = table[t]
  return values.reshape(values.shape + (1,) * (ndim - values.ndim))


def mean_flat(x: Array) -> Array:
  """Mean over every axis but the first: (B, ...) -> (B,)."""
  return jnp.mean(x, axis=tuple(range(1, x.ndim)))


@struct.dataclass
class GaussianDiffusion:
  """Per-step coefficient tables of a diffusion process (a pytree; pass it to jitted code).

  Every array field is (T,) in the dtype given to `create` (float32 by default); the
  tables are computed in float64 NumPy first. `timestep_map[k]` is the original index of
  step k (the identity unless respaced).
  """

  betas: Array
  alphas_cumprod: Array
  alphas_cumprod_prev: Array
  sqrt_alphas_cumprod: Array
  sqrt_one_minus_alphas_cumprod: Array
  sqrt_recip_alphas_cumprod: Array
  sqrt_recipm1_alphas_cumprod: Array
  log_betas: Array
  posterior_variance: Array
  posterior_log_variance_clipped: Array
  posterior_mean_coef1: Array
  posterior_mean_coef2: Array
  fixed_log_variance: Array
  timestep_map: Array
  num_timesteps: int = struct.field(pytree_node=False)
  original_num_steps: int = struct.field(pytree_node=False)
  prediction: str = struct.field(pytree_node=False, default="eps")

  @classmethod
  def create(cls, betas: np.ndarray, *, timestep_map: list[int] | np.ndarray | None = None,
             original_num_steps: int | None = None, dtype=jnp.float32, prediction: str = "eps",
             fixed_variance: str = "large") -> "GaussianDiffusion":
    """Builds the tables from betas.

    Args:
      betas: (T,) betas in (0, 1], T >= 2.
      timestep_map: original index of each step (respaced processes); default arange(T).
      original_num_steps: T of the original process; default T.
      dtype: dtype of the stored tables (jnp.float32 or jnp.float64 under x64).
      prediction: what the model's first C channels predict: "eps", "x0" or "v".
      fixed_variance: "large" or "small", used when the model outputs no variance channels.
    """
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or betas.shape[0] < 2:
      raise PitiError(f"betas must be 1-D with at least 2 steps, got shape {betas.shape}; respace to >= 2 steps.")
    if not ((betas > 0).all() and (betas <= 1).all()):
      raise PitiError("betas must lie in (0, 1]; check the noise schedule.")
    if prediction not in PREDICTIONS:
      raise PitiError(f"unknown prediction {prediction!r}; use one of {', '.join(PREDICTIONS)}.")
    if fixed_variance not in FIXED_VARIANCES:
      raise PitiError(f"unknown fixed_variance {fixed_variance!r}; use one of {', '.join(FIXED_VARIANCES)}.")
    num_timesteps = betas.shape[0]
    timestep_map = np.arange(num_timesteps) if timestep_map is None else np.asarray(timestep_map)
    if timestep_map.shape != (num_timesteps,):
      raise PitiError(f"timestep_map has {timestep_map.shape[0]} entries but there are {num_timesteps} betas.")
    original_num_steps = num_timesteps if original_num_steps is None else int(original_num_steps)

    alphas = 1.0 - betas
    alphas_cumprod = np.cumprod(alphas)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    posterior_log_variance_clipped = np.log(np.append(posterior_variance[1], posterior_variance[1:]))
    if fixed_variance == "large":
      fixed_log_variance = np.log(np.append(posterior_variance[1], betas[1:]))
    else:
      fixed_log_variance = posterior_log_variance_clipped
    tables = dict(
        betas=betas,
        alphas_cumprod=alphas_cumprod,
        alphas_cumprod_prev=alphas_cumprod_prev,
        sqrt_alphas_cumprod=np.sqrt(alphas_cumprod),
        sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - alphas_cumprod),
        sqrt_recip_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod),
        sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod - 1.0),
        log_betas=np.log(betas),
        posterior_variance=posterior_variance,
        posterior_log_variance_clipped=posterior_log_variance_clipped,
        posterior_mean_coef1=betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        posterior_mean_coef2=(1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod),
        fixed_log_variance=fixed_log_variance,
    )
    arrays = {name: jnp.asarray(value, dtype=dtype) for name, value in tables.items()}
    return cls(**arrays, timestep_map=jnp.asarray(timestep_map, dtype=jnp.int32), num_timesteps=num_timesteps,
               original_num_steps=original_num_steps, prediction=prediction)

  # Time.

  def model_timesteps(self, t: Array) -> Array:
    """Model time input for step indices t (B,): the original index * 1000 / T_orig, float (B,)."""
    return self.timestep_map[t].astype(self.betas.dtype) * (1000.0 / self.original_num_steps)

  # Forward process.

  def q_sample(self, x0: Array, t: Array, noise: Array) -> Array:
    """Samples q(x_t | x0) = N(sqrt(abar_t) x0, (1 - abar_t) I) with the given standard noise."""
    return _at(self.sqrt_alphas_cumprod, t, x0.ndim) * x0 + _at(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise

  def q_posterior_mean_variance(self, x0: Array, x_t: Array, t: Array) -> tuple[Array, Array, Array]:
    """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x0); variances are (B, 1, 1, 1)."""
    ndim = x_t.ndim
    mean = _at(self.posterior_mean_coef1, t, ndim) * x0 + _at(self.posterior_mean_coef2, t, ndim) * x_t
    return mean, _at(self.posterior_variance, t, ndim), _at(self.posterior_log_variance_clipped, t, ndim)

  # Conversions between predictions.

  def pred_xstart_from_eps(self, x_t: Array, t: Array, eps: Array) -> Array:
    """x0 = sqrt(1 / abar) x_t - sqrt(1 / abar - 1) eps."""
    ndim = x_t.ndim
    return _at(self.sqrt_recip_alphas_cumprod, t, ndim) * x_t - _at(self.sqrt_recipm1_alphas_cumprod, t, ndim) * eps

  def pred_eps_from_xstart(self, x_t: Array, t: Array, x0: Array) -> Array:
    """eps = (sqrt(1 / abar) x_t - x0) / sqrt(1 / abar - 1)."""
    ndim = x_t.ndim
    return (_at(self.sqrt_recip_alphas_cumprod, t, ndim) * x_t - x0) / _at(self.sqrt_recipm1_alphas_cumprod, t, ndim)

  def pred_xstart_from_v(self, x_t: Array, t: Array, v: Array) -> Array:
    """x0 = sqrt(abar) x_t - sqrt(1 - abar) v."""
    return _at(self.sqrt_alphas_cumprod, t, x_t.ndim) * x_t - _at(self.sqrt_one_minus_alphas_cumprod, t, x_t.ndim) * v

  def v_target(self, x0: Array, t: Array, noise: Array) -> Array:
    """v = sqrt(abar) eps - sqrt(1 - abar) x0."""
    return _at(self.sqrt_alphas_cumprod, t, x0.ndim) * noise - _at(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * x0

  def pred_xstart(self, prediction: Array, x_t: Array, t: Array) -> Array:
    """x0 implied by the model's mean prediction (eps, x0 or v per `self.prediction`)."""
    if self.prediction == "eps":
      return self.pred_xstart_from_eps(x_t, t, prediction)
    if self.prediction == "v":
      return self.pred_xstart_from_v(x_t, t, prediction)
    return prediction

  def training_target(self, x0: Array, t: Array, noise: Array) -> Array:
    """What the model's first C channels should output: noise, x0 or v."""
    if self.prediction == "eps":
      return noise
    if self.prediction == "v":
      return self.v_target(x0, t, noise)
    return x0

  # Reverse process.

  def split_model_output(self, model_output: Array, x_t: Array) -> tuple[Array, Array | None]:
    """(B, H, W, 2C) -> (prediction, v) or (B, H, W, C) -> (prediction, None)."""
    channels = x_t.shape[-1]
    if model_output.shape[:-1] != x_t.shape[:-1] or model_output.shape[-1] not in (channels, 2 * channels):
      raise PitiError(f"model output shape {model_output.shape} does not fit x_t {x_t.shape}; the model must output "
                      f"{channels} (fixed variance) or {2 * channels} (learned variance) channels.")
    if model_output.shape[-1] == channels:
      return model_output, None
    return model_output[..., :channels], model_output[..., channels:]

  def model_log_variance(self, var_values: Array | None, x_t: Array, t: Array) -> Array:
    """log sigma_t^2 of p(x_{t-1} | x_t): learned-range from v in [-1, 1], or the fixed one if v is None."""
    if var_values is None:
      return _at(self.fixed_log_variance, t, x_t.ndim)
    min_log = _at(self.posterior_log_variance_clipped, t, x_t.ndim)
    max_log = _at(self.log_betas, t, x_t.ndim)
    frac = (var_values + 1.0) / 2.0
    return frac * max_log + (1.0 - frac) * min_log

  def p_mean_variance(self, model_output: Array, x_t: Array, t: Array, *, clip_denoised: bool = True) -> dict:
    """The reverse step p(x_{t-1} | x_t) implied by a model output.

    Args:
      model_output: (B, H, W, 2C) or (B, H, W, C).
      x_t: (B, H, W, C).
      t: int (B,) step indices.
      clip_denoised: clamp the x0 prediction to [-1, 1] before forming the mean.

    Returns:
      dict with "mean" (B, H, W, C), "log_variance" (broadcastable to x_t), "pred_xstart"
      (B, H, W, C, clipped if asked) and "eps" (the eps consistent with that x0).
    """
    prediction, var_values = self.split_model_output(model_output, x_t)
    pred_xstart = self.pred_xstart(prediction, x_t, t)
    if clip_denoised:
      pred_xstart = jnp.clip(pred_xstart, -1.0, 1.0)
    mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x_t, t)
    return dict(mean=mean, log_variance=self.model_log_variance(var_values, x_t, t), pred_xstart=pred_xstart,
                eps=self.pred_eps_from_xstart(x_t, t, pred_xstart))

  # Losses.

  def vb_terms_bpd(self, model_output: Array, x0: Array, x_t: Array, t: Array) -> Array:
    """One variational-bound term per example, in bits per dimension, float (B,).

    KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) for t > 0, and the discretised Gaussian
    decoder NLL -log p(x0 | x_1) for t == 0. x0 predictions are not clipped.
    """
    true_mean, _, true_log_variance = self.q_posterior_mean_variance(x0, x_t, t)
    out = self.p_mean_variance(model_output, x_t, t, clip_denoised=False)
    log_variance = jnp.broadcast_to(out["log_variance"], x_t.shape)
    kl = mean_flat(likelihoods.normal_kl(true_mean, true_log_variance, out["mean"], log_variance)) / likelihoods.LOG2
    decoder_nll = -likelihoods.discretized_gaussian_log_likelihood(x0, means=out["mean"],
                                                                   log_scales=0.5 * log_variance)
    decoder_nll = mean_flat(decoder_nll) / likelihoods.LOG2
    return jnp.where(t == 0, decoder_nll, kl)

  def training_losses(self, model_output: Array, x0: Array, x_t: Array, t: Array, noise: Array,
                      weights: Array | None = None) -> dict:
    """The reference's hybrid (RESCALED_MSE) training loss for one batch.

    Args:
      model_output: (B, H, W, 2C) [prediction, v] (learned-range variance) or (B, H, W, C).
      x0: clean images (B, H, W, C) in [-1, 1].
      x_t: `q_sample(x0, t, noise)`.
      t: int (B,) step indices.
      noise: the standard noise used to make x_t.
      weights: optional float (B,) importance weights (from the timestep sampler).

    Returns:
      dict of float (B,) "mse" (mean squared error of the prediction), "vb" (the
      variational term in bits/dim times T/1000, computed with the prediction under
      stop_gradient so only v learns from it; zeros when the variance is fixed, as the
      reference then trains on mse alone), "loss" = mse + vb (unweighted; feed this to
      the loss-aware timestep sampler), "weighted_loss" = weights * loss (only if
      `weights` is given), and "pred_xstart" (B, H, W, C): the unclipped x0 implied by the
      live prediction (gradients flow into the model through it).
    """
    prediction, var_values = self.split_model_output(model_output, x_t)
    mse = mean_flat(jnp.square(self.training_target(x0, t, noise) - prediction))
    if var_values is None:
      vb = jnp.zeros_like(mse)
    else:
      frozen_output = jnp.concatenate([jax.lax.stop_gradient(prediction), var_values], axis=-1)
      vb = self.vb_terms_bpd(frozen_output, x0, x_t, t) * (self.num_timesteps / 1000.0)
    losses = dict(mse=mse, vb=vb, loss=mse + vb, pred_xstart=self.pred_xstart(prediction, x_t, t))
    if weights is not None:
      losses["weighted_loss"] = weights * losses["loss"]
    return losses


def make_diffusion(schedule: str, num_timesteps: int = 1000, respacing: str = "", *, dtype=jnp.float32,
                   prediction: str = "eps", fixed_variance: str = "large") -> GaussianDiffusion:
  """A diffusion with a named schedule, optionally respaced for sampling.

  Args:
    schedule: "cosine" / "squaredcos_cap_v2" or "linear".
    num_timesteps: T of the (original) process.
    respacing: "" for all T steps, or a `space_timesteps` spec ("250", "100", "10,10,3",
      "ddim50", "fast27"). The model still receives original indices (rescaled to 0..1000).
    dtype, prediction, fixed_variance: as in `GaussianDiffusion.create`.
  """
  betas = get_named_beta_schedule(schedule, num_timesteps)
  if not respacing:
    return GaussianDiffusion.create(betas, dtype=dtype, prediction=prediction, fixed_variance=fixed_variance)
  use_timesteps = space_timesteps(num_timesteps, respacing)
  return GaussianDiffusion.create(respaced_betas(betas, use_timesteps), timestep_map=use_timesteps,
                                  original_num_steps=num_timesteps, dtype=dtype, prediction=prediction,
                                  fixed_variance=fixed_variance)
