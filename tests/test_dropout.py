"""The dropout mask hashed in one pass on a CPU is JAX's own Bernoulli mask, bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from piti_jax.models import dropout

SHAPES = [(4, 8, 8, 32), (3, 5, 7)]
KEEP_PROBS = [0.9, 0.5, 0.999]


@pytest.mark.parametrize("shape", SHAPES)
def test_keep_mask_is_bernoullis_mask_bit_for_bit(shape):
  typed = jax.random.key(11)
  for keep in KEEP_PROBS:
    ours = jax.jit(lambda k, keep=keep: dropout.keep_mask(k, keep, shape))
    theirs = jax.jit(lambda k, keep=keep: jax.random.bernoulli(k, keep, shape))
    keys = [jax.random.key_data(jax.random.fold_in(typed, i)) for i in range(3)]  # raw uint32 (2,)
    if keep == KEEP_PROBS[0]:
      keys.append(typed)
    for key in keys:
      np.testing.assert_array_equal(np.asarray(ours(key)), np.asarray(theirs(key)))
  # The fast path was taken: the hash is unrolled, where JAX's CPU lowering loops over it.
  ours_hlo = jax.jit(lambda k: dropout.keep_mask(k, 0.9, shape)).lower(typed).as_text()
  theirs_hlo = jax.jit(lambda k: jax.random.bernoulli(k, 0.9, shape)).lower(typed).as_text()
  assert "stablehlo.while" in theirs_hlo
  assert "stablehlo.while" not in ours_hlo


def test_keep_mask_falls_back_to_jax_for_other_prng_implementations():
  key = jax.random.key(3, impl="rbg")
  np.testing.assert_array_equal(np.asarray(dropout.keep_mask(key, 0.9, (64, 16))),
                                np.asarray(jax.random.bernoulli(key, 0.9, (64, 16))))


def test_dropout_layer_equals_nnx_dropout():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 16))
  for rate in (0.1, 0.5):
    ours = dropout.Dropout(rate)(x, deterministic=False, rngs=nnx.Rngs(dropout=5))
    theirs = nnx.Dropout(rate)(x, deterministic=False, rngs=nnx.Rngs(dropout=5))
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    assert 0 < int((ours == 0).sum()) < x.size
  np.testing.assert_array_equal(dropout.Dropout(0.1)(x, deterministic=True, rngs=None), x)
  np.testing.assert_array_equal(dropout.Dropout(0.0)(x, deterministic=False, rngs=None), x)
  assert not jnp.any(dropout.Dropout(1.0)(x, deterministic=False, rngs=nnx.Rngs(dropout=5)))


def test_the_hash_runs_once_per_mask_in_a_forward_and_backward_pass():
  shape = (2, 8, 8, 16)

  def loss(x, kernel, key):
    h = jax.lax.select(dropout.keep_mask(key, 0.9, shape), jax.nn.silu(x) / 0.9, jnp.zeros(shape))
    y = jax.lax.conv_general_dilated(h, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return (y**2).sum()

  x = jax.random.normal(jax.random.key(0), shape)
  kernel = jnp.full((3, 3, 16, 16), 0.01)
  hlo = jax.jit(jax.grad(loss)).lower(x, kernel, jax.random.key_data(jax.random.key(1))).compile().as_text()
  # XLA computations holding the unrolled hash (20 rounds, 20 xors). Unpacked, the mask's hash
  # was fused into the forward select and again into the backward one.
  assert [text.count(" xor(") >= 20 for text in hlo.split("\n\n")].count(True) == 1
