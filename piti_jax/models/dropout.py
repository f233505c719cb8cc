"""Dropout whose mask is the one `jax.random.bernoulli` draws, hashed in one fused pass on a CPU.

JAX lowers its Threefry-2x32 hash on a CPU as a rolled loop of five iterations (to keep
compiles short): XLA:CPU runs each iteration as its own pass over two uint32 maps the size of
the activation, plus copies of the loop state, and cannot fuse the comparison into it.
`keep_mask` writes the same hash out as twenty unrolled rounds of elementwise integer ops, which
XLA fuses into one pass (a dropout layer 1.3-2.8x faster, the demo's base-model train steps
1.03-1.15x, its upsampler's 0.94x; docs/performance.md, section 21). The mask is bit for bit the
one `jax.random.bernoulli(key, keep_prob, shape)` returns (tests/test_dropout.py), so a step's
values do not change. Other backends, other PRNG implementations (`jax_default_prng_impl`) and
`jax_threefry_partitionable=False` keep `jax.random.bernoulli`.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from piti_jax.models import target

# Threefry-2x32 (Salmon et al. 2011, 20 rounds): rotation distances of even and odd groups of four
# rounds, and the key-schedule parity constant.
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = 0x1BD11BDA
_FLOAT32_MANTISSA_BITS = 23


def _rotate_left(x: jax.Array, distance: int) -> jax.Array:
  return jax.lax.shift_left(x, jnp.uint32(distance)) | jax.lax.shift_right_logical(x, jnp.uint32(32 - distance))


def threefry2x32(key: jax.Array, high: jax.Array, low: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The Threefry-2x32 block cipher of the counters (high, low) under key, unrolled.

  key: uint32 (2,); high, low: uint32 arrays of one shape. Returns the two uint32 output words.
  """
  schedule = (key[0], key[1], key[0] ^ key[1] ^ jnp.uint32(_KEY_PARITY))
  x0, x1 = high + schedule[0], low + schedule[1]
  for group in range(5):
    for distance in _ROTATIONS[group % 2]:
      x0 = x0 + x1
      x1 = x0 ^ _rotate_left(x1, distance)
    x0 = x0 + schedule[(group + 1) % 3]
    x1 = x1 + schedule[(group + 2) % 3] + jnp.uint32(group + 1)
  return x0, x1


def _threefry_key_data(key: jax.Array) -> jax.Array | None:
  """The uint32 (2,) data of a Threefry key (typed or raw), or None for another PRNG implementation."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(key) if str(jax.random.key_impl(key)) == "threefry2x32" else None
  return key if jax.config.jax_default_prng_impl == "threefry2x32" else None


def keep_mask(key: jax.Array, keep_prob: float, shape: tuple[int, ...]) -> jax.Array:
  """bool `shape`, True with probability keep_prob: equal to `jax.random.bernoulli(key, keep_prob, shape)`.

  key: a PRNG key, typed or raw uint32 (2,). On a CPU with Threefry keys (partitionable bits, as
  JAX draws by default) the hash runs unrolled here: the counter of element i is the 64-bit i,
  the 32 random bits are the two output words xor-ed, and `bernoulli` keeps an element when the
  float32 in [0, 1) made of the top 23 bits is below float32(keep_prob), i.e. when those 23 bits
  as an integer are below ceil(float32(keep_prob) * 2^23). The mask is then packed 8 elements to
  a byte and unpacked again: XLA fuses cheap elementwise producers into every consumer, so the
  hash would be computed once more in each fusion that reads the mask (the dropout's forward pass
  and its backward pass, two or three fusions); the packing is a reduction, which XLA:CPU
  computes once and does not fuse into its consumers, so they read one bit per element instead.
  """
  data = _threefry_key_data(key)
  size = math.prod(shape)
  if (target.platform() != "cpu" or data is None or not jax.config.jax_threefry_partitionable
      or size >= 2**32):
    return jax.random.bernoulli(key, keep_prob, shape)
  low = jax.lax.iota(jnp.uint32, size).reshape(shape)
  word0, word1 = threefry2x32(data, jnp.zeros(shape, jnp.uint32), low)
  mantissa = jax.lax.shift_right_logical(word0 ^ word1, jnp.uint32(32 - _FLOAT32_MANTISSA_BITS))
  threshold = math.ceil(float(np.float32(keep_prob)) * 2.0**_FLOAT32_MANTISSA_BITS)
  mask = mantissa < jnp.uint32(threshold)
  if size % 8:
    return mask
  bit_values = jnp.left_shift(jnp.uint8(1), jnp.arange(8, dtype=jnp.uint8))
  packed = jax.lax.reduce(jnp.where(mask.reshape(size // 8, 8), bit_values, jnp.uint8(0)), jnp.uint8(0),
                          jax.lax.bitwise_or, (1,))
  return ((packed[:, None] & bit_values) != 0).reshape(shape)


class Dropout(nnx.Module):
  """nn.Dropout(rate): x (any shape, float) -> x / (1 - rate) where kept, else 0; the identity when deterministic.

  Same layer and values as `nnx.Dropout(rate)` called with a key from `rngs.dropout()`; the
  mask comes from `keep_mask`. No parameters (its reference index holds no state).
  """

  def __init__(self, rate: float):
    self.rate = rate

  def __call__(self, x: jax.Array, *, deterministic: bool, rngs: nnx.Rngs | None) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    if self.rate == 1.0:
      return jnp.zeros_like(x)
    keep_prob = 1.0 - self.rate
    mask = keep_mask(rngs.dropout(), keep_prob, x.shape)
    return jax.lax.select(mask, x / keep_prob, jnp.zeros_like(x))
