"""Input gradient of the task encoder's stride-2 convolutions: XLA's transposed convolution vs phases.

  python benchmarks/strided_conv_gradients.py [--batch 4] [--repeats 9]

For each of the encoder's stride-2 3x3 layers at a 256x256 condition (conv2..conv5: 32 -> 64
channels at 256x256 down to 256 -> 512 at 32x32, float32, batch --batch), times in one jitted
program each: the forward convolution, its input gradient as XLA derives it (a convolution of
the cotangent dilated by 2), the same gradient from `strided_conv.phase_input_gradient` (one
stride-1 convolution per output phase, what `layers.conv2d` uses on CPU) and the kernel
gradient. Prints one JSON line per layer: median ms of --repeats runs and the max relative
difference between the two input gradients. Run on the default JAX device (a CPU here).
"""

import functools
import json

import piti_jax  # noqa: F401  (sets the project's XLA:CPU flags before JAX starts)
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from piti_jax.models import strided_conv

import common

_BATCH = flags.DEFINE_integer("batch", 4, "Images per batch.")
_REPEATS = flags.DEFINE_integer("repeats", 9, "Timed runs per program (after one warm-up run).")

LAYERS = [(256, 32, 64), (128, 64, 128), (64, 128, 256), (32, 256, 512)]  # (input side, in, out)
STRIDE, PADDING = 2, 1


def median_ms(function, *args) -> float:
  """Median wall ms of --repeats calls of the jitted function, after one warm-up call."""
  call = functools.partial(function, *args)
  jax.block_until_ready(call())
  return common.median_ms(common.timed(call, _REPEATS.value))


def main(argv) -> None:
  del argv
  rng = np.random.default_rng(0)
  for side, channels, out_channels in LAYERS:
    x = jnp.asarray(rng.standard_normal((_BATCH.value, side, side, channels), np.float32))
    kernel = jnp.asarray(rng.standard_normal((3, 3, channels, out_channels), np.float32) / np.sqrt(9 * channels))
    cotangent = jnp.asarray(rng.standard_normal((_BATCH.value, side // 2, side // 2, out_channels), np.float32))
    forward = jax.jit(lambda x, k: strided_conv.conv(x, k, STRIDE, PADDING))
    xla_input_grad = jax.jit(lambda x, k, g: jax.vjp(lambda x: strided_conv.conv(x, k, STRIDE, PADDING), x)[1](g)[0])
    phase_input_grad = jax.jit(
        lambda x, k, g: strided_conv.phase_input_gradient(g, k, x.shape, STRIDE, PADDING))
    kernel_grad = jax.jit(lambda x, k, g: jax.vjp(lambda k: strided_conv.conv(x, k, STRIDE, PADDING), k)[1](g)[0])
    reference = xla_input_grad(x, kernel, cotangent)
    difference = jnp.max(jnp.abs(phase_input_grad(x, kernel, cotangent) - reference)) / jnp.max(jnp.abs(reference))
    print(json.dumps({
        "layer": f"{_BATCH.value}x{side}x{side}x{channels} -> {out_channels}, 3x3 stride 2",
        "device": jax.devices()[0].device_kind, "forward_ms": median_ms(forward, x, kernel),
        "input_grad_xla_ms": median_ms(xla_input_grad, x, kernel, cotangent),
        "input_grad_phases_ms": median_ms(phase_input_grad, x, kernel, cotangent),
        "kernel_grad_ms": median_ms(kernel_grad, x, kernel, cotangent),
        "max_rel_difference": float(difference)}), flush=True)


if __name__ == "__main__":
  app.run(main)
