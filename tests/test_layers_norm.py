"""`layers.normalize_affine` (GroupNorm / InstanceNorm + activation with a closed-form backward)
against JAX's own autodiff of the plain formula, computed in float64."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from piti_jax.models import layers


def plain_norm_float64(x, scale, bias, groups, activation):
  grouped = x.reshape(x.shape[0], -1, groups, x.shape[-1] // groups)
  mean = grouped.mean(axis=(1, 3), keepdims=True)
  var = jnp.square(grouped - mean).mean(axis=(1, 3), keepdims=True)
  as_x = lambda affine: affine.reshape(affine.shape[:-1] + (1,) * (x.ndim - affine.ndim) + affine.shape[-1:])
  pre = ((grouped - mean) / jnp.sqrt(var + layers.NORM_EPS)).reshape(x.shape) * as_x(scale) + as_x(bias)
  return {"identity": lambda z: z, "silu": jax.nn.silu,
          "leaky_relu": lambda z: jnp.where(z >= 0, z, layers.LEAKY_RELU_SLOPE * z)}[activation](pre)


def value_and_grads(norm, x, scale, bias, groups, activation, weight):
  def loss(x, scale, bias):
    return jnp.sum(norm(x, scale, bias, groups, activation) * weight)
  return jax.value_and_grad(loss, argnums=(0, 1, 2))(x, scale, bias)


@pytest.mark.parametrize("shape, groups, activation, per_sample", [
    ((2, 8, 8, 64), 32, "silu", False),          # GroupNorm32 + SiLU, as in a ResBlock's in-layers
    ((2, 8, 8, 64), 32, "silu", True),           # ... with a per-sample affine, as in its scale-shift out-norm
    ((2, 8, 8, 64), 32, "identity", False),      # GroupNorm32 alone
    ((2, 16, 64), 32, "identity", False),        # token-shaped input (B, L, C)
    ((2, 16, 16, 8), 8, "leaky_relu", False),    # InstanceNorm + LeakyReLU(0.2), as in the task encoder
    ((2, 32, 32, 64), 32, "silu", True),         # 1024 positions: statistics summed in stages on a CPU
    ((2, 32, 32, 8), 8, "leaky_relu", False),    # ... and InstanceNorm's backward sums too
])
def test_values_and_gradients_match_float64_autodiff(shape, groups, activation, per_sample):
  rng = np.random.default_rng(0)
  x = rng.normal(1.0, 2.0, shape)
  affine_shape = (shape[0], shape[-1]) if per_sample else (shape[-1],)
  scale = rng.uniform(0.5, 1.5, affine_shape)
  bias = rng.uniform(-0.3, 0.3, affine_shape)
  weight = rng.normal(size=shape)
  with jax.enable_x64(True):
    want_value, want_grads = value_and_grads(plain_norm_float64, *map(jnp.asarray, (x, scale, bias)), groups,
                                             activation, jnp.asarray(weight))
    want = [np.asarray(want_value)] + [np.asarray(g) for g in want_grads]
  as32 = lambda a: jnp.asarray(a, jnp.float32)
  got_value, got_grads = jax.jit(value_and_grads, static_argnums=(0, 4, 5))(
      layers.normalize_affine, as32(x), as32(scale), as32(bias), groups, activation, as32(weight))
  for got, expected in zip([got_value, *got_grads], want):
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), expected, rtol=2e-4, atol=2e-4 * np.abs(expected).max())


def test_bfloat16_input_gets_a_bfloat16_gradient():
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 32), jnp.bfloat16)
  scale, bias = jnp.ones(32), jnp.zeros(32)
  grads = jax.grad(lambda x, s, b: layers.normalize_affine(x, s, b, 32, "silu").sum(), argnums=(0, 1, 2))(
      x, scale, bias)
  assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.float32, jnp.float32]
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


def _windowed_sums_over_whole_maps(fn, *args) -> int:
  """How many of XLA's windowed sums in fn's compiled program read an array as large as args[0].

  XLA:CPU computes a long sum as a windowed sum, which cannot compute its input in place: an
  elementwise map feeding it is first written out whole."""
  hlo = jax.jit(fn).lower(*args).compile().as_text()
  inputs = re.findall(r"%wrapped_reduce-window_computation\S* \(param_0\S*: f32\[([\d,]+)\]", hlo)
  return sum(int(np.prod([int(d) for d in dims.split(",")])) >= args[0].size for dims in inputs)


def test_staged_sums_match_float64_and_read_no_whole_map_through_a_windowed_sum():
  """On a CPU, long sums over positions take their input in place instead of writing it out whole first."""
  rng = np.random.default_rng(0)
  x = rng.normal(1.0, 2.0, (3, 4096, 5))
  np.testing.assert_allclose(np.asarray(layers.sum_over_positions(jnp.asarray(x, jnp.float32))), x.sum(axis=1),
                             rtol=1e-6)
  grad = rng.normal(size=(2, 32, 32, 6))
  bias_grad = jax.grad(lambda b: jnp.sum(layers.add_channel_bias(jnp.zeros((2, 32, 32, 6)), b) * grad))(jnp.zeros(6))
  np.testing.assert_allclose(np.asarray(bias_grad), grad.sum(axis=(0, 1, 2)), rtol=1e-5)

  maps = jnp.ones((2, 64, 64, 16))
  scale, bias = jnp.ones(16), jnp.zeros(16)
  # what is counted: XLA's own sum of an elementwise map reads it whole through a windowed sum
  assert _windowed_sums_over_whole_maps(lambda x: jnp.square(x - 1).sum(axis=(1, 2)), maps) >= 1
  # InstanceNorm forward and backward (XLA's own sums: 5 of them over (x - mean)^2, the gradient and its products)
  instance_norm_vjp = lambda x, g: jax.vjp(lambda x: layers.normalize_affine(x, scale, bias, 16, "leaky_relu"), x)[1](g)
  assert _windowed_sums_over_whole_maps(instance_norm_vjp, maps, maps) == 0
  # GroupNorm's statistics
  assert _windowed_sums_over_whole_maps(lambda x: layers.normalize_affine(x, scale, bias, 8, "silu"), maps) == 0
  # a convolution bias's gradient
  bias_vjp = lambda y, g: jax.vjp(lambda b: layers.add_channel_bias(y, b), bias)[1](g)
  assert _windowed_sums_over_whole_maps(bias_vjp, maps, maps) == 0
