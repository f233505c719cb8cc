"""PatchGAN discriminator: output shape, exact parameter count, sharding metadata, gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from piti_jax.models.discriminator import PatchDiscriminator
from piti_jax.models.layers import instance_norm


def _pix2pix_param_count(in_channels: int, ndf: int, n_layers: int) -> int:
  """Parameters of pix2pix's NLayerDiscriminator, counted from its layer list (all convs biased)."""
  widths = [in_channels] + [ndf * min(2**n, 8) for n in range(n_layers + 1)] + [1]
  return sum(16 * c_in * c_out + c_out for c_in, c_out in zip(widths[:-1], widths[1:]))


@functools.cache
def _abstract_model() -> PatchDiscriminator:
  """The default (ndf 64) discriminator with abstract params: shapes and metadata, nothing allocated."""
  return nnx.eval_shape(lambda: PatchDiscriminator(rngs=nnx.Rngs(0)))


def test_param_count_matches_pix2pix():
  params = nnx.state(_abstract_model(), nnx.Param)
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  assert _pix2pix_param_count(3, 64, 3) == 2_764_737
  assert count == 2_764_737


def test_kernels_carry_fsdp_metadata():
  model = _abstract_model()
  kernels = [model.first.kernel, model.last.kernel] + [conv.kernel for conv in model.normed]
  for kernel in kernels:
    assert kernel.get_metadata()["fsdp_dims"] == (2, 3)


def test_output_shape_is_30x30_on_256():
  graphdef, state = nnx.split(_abstract_model())
  logits = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, jax.ShapeDtypeStruct((1, 256, 256, 3),
                                                                                           jnp.float32))
  assert logits.shape == (1, 30, 30, 1)
  assert logits.dtype == jnp.float32


def test_small_input_and_gradient_penalty_usable():
  model = PatchDiscriminator(ndf=8, rngs=nnx.Rngs(1))
  x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-1.0, maxval=1.0)

  @nnx.jit
  def logits_input_grad_and_penalty(model, images):
    input_grad = jax.grad(lambda z: jnp.sum(model(z)))(images)
    # The WGAN-GP term is differentiable w.r.t. the critic's weights (a second-order gradient).
    penalty, weight_grads = nnx.value_and_grad(penalty_with)(model, images)
    return model(images), input_grad, penalty, weight_grads

  logits, input_grad, penalty, weight_grads = logits_input_grad_and_penalty(model, x)
  assert logits.shape == (2, 2, 2, 1)
  assert input_grad.shape == x.shape
  norms = jnp.sqrt(jnp.sum(jnp.square(input_grad.reshape(2, -1)), axis=1))
  assert bool(jnp.all(jnp.isfinite(norms))) and bool(jnp.all(norms > 0))
  assert np.isfinite(float(penalty))
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(nnx.state(weight_grads, nnx.Param)))


def penalty_with(model: PatchDiscriminator, images: jax.Array) -> jax.Array:
  """10 * (||d D(x)/dx||_2 - 1)^2 averaged over the batch, as in the reference's WGAN-GP."""
  grads = jax.grad(lambda z: jnp.sum(model(z)))(images)
  norms = jnp.sqrt(jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=1))
  return 10.0 * jnp.mean(jnp.square(norms - 1.0))


def test_instance_norm_matches_numpy():
  x = np.random.default_rng(0).normal(size=(2, 5, 6, 3)).astype(np.float32) * 3 + 1
  mean = x.mean(axis=(1, 2), keepdims=True)
  var = x.var(axis=(1, 2), keepdims=True)
  expected = (x - mean) / np.sqrt(var + 1e-5)
  np.testing.assert_allclose(np.asarray(instance_norm(jnp.asarray(x))), expected, rtol=1e-5, atol=1e-5)


def test_initialisation_is_pytorch_default_and_deterministic():
  first = PatchDiscriminator(ndf=8, n_layers=2, rngs=nnx.Rngs(7))
  again = PatchDiscriminator(ndf=8, n_layers=2, rngs=nnx.Rngs(7))
  other = PatchDiscriminator(ndf=8, n_layers=2, rngs=nnx.Rngs(8))
  convs = [first.first, *first.normed, first.last]
  for conv in convs:
    bound = 1.0 / np.sqrt(16 * conv.kernel.shape[2])  # U(+-1/sqrt(fan_in)), fan_in = 4 * 4 * in
    for value in (conv.kernel[...], conv.bias[...]):
      assert float(jnp.abs(value).max()) <= bound
    assert float(jnp.abs(conv.kernel[...]).max()) > 0.9 * bound
  for a, b, c in zip(jax.tree.leaves(nnx.state(first)), jax.tree.leaves(nnx.state(again)),
                     jax.tree.leaves(nnx.state(other))):
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
