"""The project's XLA:CPU flags: set on import, the user's own value kept, convolutions still exact.

`piti_jax.cpu_flags` moves convolutions and reductions off YNNPACK onto XLA's own CPU
kernels, and on CPU a strided convolution's input gradient comes phase by phase and a
small-batch stride-1 kernel gradient by row chunks (`piti_jax.models.conv_gradients`); the
gradients `layers.conv2d` gives are checked against float64 NumPy here.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from piti_jax import cpu_flags
from piti_jax.models import layers

CASES = [  # (kernel, stride, padding): UNet 3x3 and 1x1, encoder stem 7x7 and stride-2 3x3, PatchGAN 4x4;
    # the strided ones (the phase input gradient on CPU) also with more padding, a kernel smaller than the
    # stride (phases no tap reaches) and stride 3; at the tests' batch of 2 the stride-1 ones over 1x1 take
    # the row-chunked kernel gradient, with an odd number of output rows for 3x3 and 7x7
    (3, 1, 1), (1, 1, 0), (7, 1, 3), (3, 2, 1), (4, 2, 1), (4, 1, 1), (4, 2, 2), (1, 2, 0), (3, 3, 0)]


def test_this_process_runs_with_the_flags():
  assert f"{cpu_flags.YNN_FUSION_FLAG}={cpu_flags.YNN_FUSION_VALUE}" in os.environ["XLA_FLAGS"]


def test_flags_are_appended_once_and_a_users_own_value_is_kept():
  environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  cpu_flags.add_to(environ)
  cpu_flags.add_to(environ)
  assert environ["XLA_FLAGS"] == (f"--xla_force_host_platform_device_count=2 "
                                  f"{cpu_flags.YNN_FUSION_FLAG}={cpu_flags.YNN_FUSION_VALUE}")
  users = {"XLA_FLAGS": f"{cpu_flags.YNN_FUSION_FLAG}="}
  cpu_flags.add_to(users)
  assert users == {"XLA_FLAGS": f"{cpu_flags.YNN_FUSION_FLAG}="}
  empty: dict[str, str] = {}
  cpu_flags.add_to(empty)
  assert empty == {"XLA_FLAGS": f"{cpu_flags.YNN_FUSION_FLAG}={cpu_flags.YNN_FUSION_VALUE}"}


def test_a_late_import_warns_that_the_flags_do_not_apply(monkeypatch):
  jax.devices()  # the backend has started
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  with pytest.warns(UserWarning, match="import piti_jax before the first JAX computation"):
    cpu_flags.add_to(os.environ)


def _reference_kernel_gradient(x: np.ndarray, g: np.ndarray, kernel: int, stride: int, padding: int) -> np.ndarray:
  x = np.pad(x.astype(np.float64), ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  out_h, out_w = g.shape[1:3]
  grad = np.zeros((kernel, kernel, x.shape[-1], g.shape[-1]))
  for a in range(kernel):
    for b in range(kernel):
      taps = x[:, a:a + stride * (out_h - 1) + 1:stride, b:b + stride * (out_w - 1) + 1:stride]
      grad[a, b] = np.einsum("nhwc,nhwo->co", taps, g.astype(np.float64))
  return grad


def _reference_input_gradient(x_shape: tuple[int, ...], w: np.ndarray, g: np.ndarray, stride: int,
                              padding: int) -> np.ndarray:
  kernel = w.shape[0]
  out_h, out_w = g.shape[1:3]
  padded = np.zeros((x_shape[0], x_shape[1] + 2 * padding, x_shape[2] + 2 * padding, x_shape[3]))
  for a in range(kernel):
    for b in range(kernel):
      padded[:, a:a + stride * (out_h - 1) + 1:stride, b:b + stride * (out_w - 1) + 1:stride] += np.einsum(
          "nhwo,co->nhwc", g.astype(np.float64), w[a, b].astype(np.float64))
  return padded[:, padding:padding + x_shape[1], padding:padding + x_shape[2]]


@pytest.mark.parametrize("kernel,stride,padding", CASES)
def test_conv_gradients_match_float64(kernel, stride, padding):
  rng = np.random.default_rng(kernel * 10 + stride)
  x = rng.standard_normal((2, 9, 10, 3)).astype(np.float32)  # odd and even sides: every phase layout
  w = rng.standard_normal((kernel, kernel, 3, 5)).astype(np.float32)
  bias = np.zeros(5, np.float32)

  y, vjp = jax.vjp(lambda x, w: layers.conv2d(x, w, bias, stride=stride, padding=padding, dtype=jnp.float32), x, w)
  cotangent = rng.standard_normal(y.shape).astype(np.float32)
  dx, dw = vjp(jnp.asarray(cotangent))
  np.testing.assert_allclose(dw, _reference_kernel_gradient(x, cotangent, kernel, stride, padding),
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(dx, _reference_input_gradient(x.shape, w, cotangent, stride, padding),
                             rtol=1e-4, atol=1e-4)
