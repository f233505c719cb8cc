"""The CPU-specific computations in piti_jax.models.layers give the same values and gradients.

Kernel gradients of `conv2d` on a CPU backend come from `conv_kernel_gradient`'s GEMMs
instead of XLA's transposed convolution; both are checked against float64 NumPy.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from piti_jax.models import layers

CASES = [  # (kernel, stride, padding): UNet 3x3 and 1x1, encoder stem 7x7 and stride-2 3x3, PatchGAN 4x4
    (3, 1, 1), (1, 1, 0), (7, 1, 3), (3, 2, 1), (4, 2, 1), (4, 1, 1)]


def _reference_kernel_gradient(x: np.ndarray, g: np.ndarray, kernel: int, stride: int, padding: int) -> np.ndarray:
  x = np.pad(x.astype(np.float64), ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  out_h, out_w = g.shape[1:3]
  grad = np.zeros((kernel, kernel, x.shape[-1], g.shape[-1]))
  for a in range(kernel):
    for b in range(kernel):
      taps = x[:, a:a + stride * (out_h - 1) + 1:stride, b:b + stride * (out_w - 1) + 1:stride]
      grad[a, b] = np.einsum("nhwc,nhwo->co", taps, g.astype(np.float64))
  return grad


@pytest.mark.parametrize("kernel,stride,padding", CASES)
def test_conv_gradients_match_float64(kernel, stride, padding):
  rng = np.random.default_rng(kernel * 10 + stride)
  x = rng.standard_normal((2, 9, 9, 3)).astype(np.float32)
  w = rng.standard_normal((kernel, kernel, 3, 5)).astype(np.float32)
  bias = np.zeros(5, np.float32)

  def conv(x, w):
    return layers.conv2d(x, w, bias, stride=stride, padding=padding, dtype=jnp.float32)

  y, vjp = jax.vjp(conv, x, w)
  cotangent = jnp.asarray(rng.standard_normal(y.shape).astype(np.float32))
  dx, dw = vjp(cotangent)
  dx_xla, dw_xla = jax.vjp(lambda x, w: layers._conv(x, w, stride, padding), x, w)[1](cotangent)
  np.testing.assert_allclose(dw, _reference_kernel_gradient(x, np.asarray(cotangent), kernel, stride, padding),
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(dw, dw_xla, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(dx, dx_xla, rtol=1e-5, atol=1e-5)


def test_conv_second_order_gradient_matches_xla():
  """WGAN-GP differentiates a gradient of the critic: reverse over reverse through the CPU path."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 8, 8, 3)).astype(np.float32))
  w = jnp.asarray(rng.standard_normal((4, 4, 3, 4)).astype(np.float32))
  bias = jnp.zeros(4)

  def penalty(w, conv):
    grad_x = jax.grad(lambda x: jnp.sum(jnp.tanh(conv(x, w))))(x)
    return jnp.sum(jnp.square(grad_x))

  cpu = jax.grad(penalty)(w, lambda x, w: layers.conv2d(x, w, bias, stride=2, padding=1, dtype=jnp.float32))
  xla = jax.grad(penalty)(w, lambda x, w: layers._conv(x, w, 2, 1))
  np.testing.assert_allclose(cpu, xla, rtol=1e-4, atol=1e-5)
