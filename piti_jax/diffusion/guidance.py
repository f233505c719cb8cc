"""Classifier-free guidance on eps, with the model run once on the doubled batch.

Convention (the reference's): the guidance *scale* s gives
  eps_hat = eps_u + s (eps_c - eps_u),
so s = 1 is the plain conditional model. In the paper's / GLIDE's notation
eps_hat = eps_c + w (eps_c - eps_u), i.e. w = s - 1 (the released PITI scripts use
s = 1.3, w = 0.3).

Statistics below are per sample over all of (H, W, C): for a (B, H, W, C) array,
mean(a)[b] = mean of a[b] and std(a)[b] = sqrt(mean((a[b] - mean(a)[b])^2)) (population
std, ddof = 0), each broadcast back over (H, W, C).

Kinds:
  "plain": eps_hat as above.
  "normalized" (PITI's normalized guidance): re-standardise eps_hat to the conditional
    prediction's statistics,
      eps = (eps_hat - m_hat) / s_hat * std(eps_c) + mean(eps_c).
    With stats="empirical" (default) m_hat = mean(eps_hat), s_hat = std(eps_hat), so the
    result has exactly the mean and std of eps_c. With stats="analytic", m_hat and s_hat
    are the paper's values under the assumption that eps_c and eps_u are independent:
    m_hat = mean_c + w (mean_c - mean_u), s_hat^2 = (1 + w)^2 std_c^2 + w^2 std_u^2.
    Because eps_c and eps_u are strongly correlated in practice, the analytic s_hat is
    larger than std(eps_hat) and shrinks the guided noise more than the empirical rule.
  "rescaled" (CFG-rescale, Lin et al. 2023, applied to eps): with phi in [0, 1],
      eps = phi * eps_hat * std(eps_c) / std(eps_hat) + (1 - phi) * eps_hat.

Only the first C channels (the mean prediction) are guided; the variance channels of
the conditional half are returned unchanged.
"""

from typing import Callable

import jax.numpy as jnp
from jax import Array

from piti_jax.errors import PitiError

GUIDANCE_KINDS = ("plain", "normalized", "rescaled")
NORMALIZED_STATS = ("empirical", "analytic")
_STD_FLOOR = 1e-12


def _per_sample_mean(a: Array) -> Array:
  return jnp.mean(a, axis=tuple(range(1, a.ndim)), keepdims=True)


def _per_sample_std(a: Array) -> Array:
  return jnp.sqrt(jnp.mean(jnp.square(a - _per_sample_mean(a)), axis=tuple(range(1, a.ndim)), keepdims=True))


def plain_guidance(eps_cond: Array, eps_uncond: Array, scale: float) -> Array:
  """eps_u + s (eps_c - eps_u); arrays (B, H, W, C)."""
  return eps_uncond + scale * (eps_cond - eps_uncond)


def normalized_guidance(eps_cond: Array, eps_uncond: Array, scale: float, stats: str = "empirical") -> Array:
  """PITI's normalized guidance (see the module docstring); arrays (B, H, W, C)."""
  guided = plain_guidance(eps_cond, eps_uncond, scale)
  mean_c, std_c = _per_sample_mean(eps_cond), _per_sample_std(eps_cond)
  if stats == "empirical":
    mean_hat, std_hat = _per_sample_mean(guided), _per_sample_std(guided)
  elif stats == "analytic":
    w = scale - 1.0
    mean_u, std_u = _per_sample_mean(eps_uncond), _per_sample_std(eps_uncond)
    mean_hat = mean_c + w * (mean_c - mean_u)
    std_hat = jnp.sqrt((1.0 + w)**2 * jnp.square(std_c) + w**2 * jnp.square(std_u))
  else:
    raise PitiError(f"unknown normalized-guidance stats {stats!r}; use one of {', '.join(NORMALIZED_STATS)}.")
  return (guided - mean_hat) / jnp.maximum(std_hat, _STD_FLOOR) * std_c + mean_c


def rescaled_guidance(eps_cond: Array, eps_uncond: Array, scale: float, phi: float) -> Array:
  """CFG-rescale (Lin et al. 2023) on eps; arrays (B, H, W, C)."""
  guided = plain_guidance(eps_cond, eps_uncond, scale)
  rescaled = guided * (_per_sample_std(eps_cond) / jnp.maximum(_per_sample_std(guided), _STD_FLOOR))
  return phi * rescaled + (1.0 - phi) * guided


def guided_model_fn(model_fn_doubled: Callable[[Array, Array], Array], scale: float, *, kind: str = "plain",
                    rescale_phi: float = 0.7,
                    normalized_stats: str = "empirical") -> Callable[[Array, Array], Array]:
  """A guided model_fn for a B-batch from a model run on the doubled batch [cond; uncond].

  Args:
    model_fn_doubled: (x (2B, H, W, C), t (2B,)) -> (2B, H, W, C or 2C); rows [:B] are
      conditioned, rows [B:] unconditioned (e.g. the null condition).
    scale: guidance scale s (reference convention; w = s - 1).
    kind: "plain", "normalized" or "rescaled".
    rescale_phi: phi of "rescaled".
    normalized_stats: "empirical" or "analytic" for "normalized".

  Returns:
    model_fn(x (B, H, W, C), t (B,)) -> (B, H, W, C or 2C): the same x_t and t feed both
    halves; guided eps, then the conditional half's variance channels.
  """
  if kind not in GUIDANCE_KINDS:
    raise PitiError(f"unknown guidance kind {kind!r}; use one of {', '.join(GUIDANCE_KINDS)}.")
  if normalized_stats not in NORMALIZED_STATS:
    raise PitiError(f"unknown normalized-guidance stats {normalized_stats!r}; use one of "
                    f"{', '.join(NORMALIZED_STATS)}.")

  def model_fn(x: Array, t: Array) -> Array:
    batch, channels = x.shape[0], x.shape[-1]
    output = model_fn_doubled(jnp.concatenate([x, x], axis=0), jnp.concatenate([t, t], axis=0))
    cond, uncond = output[:batch], output[batch:]
    eps_cond, eps_uncond = cond[..., :channels], uncond[..., :channels]
    if kind == "plain":
      eps = plain_guidance(eps_cond, eps_uncond, scale)
    elif kind == "normalized":
      eps = normalized_guidance(eps_cond, eps_uncond, scale, normalized_stats)
    else:
      eps = rescaled_guidance(eps_cond, eps_uncond, scale, rescale_phi)
    return jnp.concatenate([eps, cond[..., channels:]], axis=-1)

  return model_fn
