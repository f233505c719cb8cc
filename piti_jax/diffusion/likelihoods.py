"""Gaussian KL divergence and the discretised Gaussian image likelihood (in nats)."""

import math

import jax.numpy as jnp
from jax import Array

LOG2 = math.log(2.0)


def normal_kl(mean1: Array, logvar1: Array, mean2: Array, logvar2: Array) -> Array:
  """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats.

  All arguments broadcast against each other; the result has the broadcast shape.
  """
  return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2) + jnp.square(mean1 - mean2) * jnp.exp(-logvar2))


def approx_standard_normal_cdf(x: Array) -> Array:
  """The tanh approximation of the standard normal CDF used by the reference losses.

  Phi(x) ~ 0.5 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))).
  """
  return 0.5 * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: Array, *, means: Array, log_scales: Array) -> Array:
  """Log-probability of 8-bit images under a Gaussian discretised to 256 bins.

  `x` holds uint8 values rescaled to [-1, 1], so a bin is [x - 1/255, x + 1/255]; the two
  edge bins extend to -inf (x < -0.999) and +inf (x > 0.999). Probabilities are floored
  at 1e-12 before the log.

  Args:
    x: images (..., ) in [-1, 1].
    means: Gaussian means, same shape.
    log_scales: log standard deviations, same shape.

  Returns:
    Log-probabilities in nats, shape of `x`.
  """
  centered = x - means
  inv_std = jnp.exp(-log_scales)
  cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
  cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
  log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, 1e-12))
  log_one_minus_cdf_min = jnp.log(jnp.maximum(1.0 - cdf_min, 1e-12))
  log_cdf_delta = jnp.log(jnp.maximum(cdf_plus - cdf_min, 1e-12))
  return jnp.where(x < -0.999, log_cdf_plus, jnp.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))
