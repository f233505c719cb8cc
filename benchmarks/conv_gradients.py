"""XLA's convolution gradients against the forms `conv_gradients` computes on CPU, layer by layer.

  python benchmarks/conv_gradients.py [--gradients=input,kernel] [--batch 4] [--repeats 9] [--pytorch]

`input`: the task encoder's stride-2 3x3 layers at a 256x256 condition (conv2..conv5: 32 -> 64
channels at 256x256 down to 256 -> 512 at 32x32, batch --batch): the forward convolution, its
input gradient as XLA derives it (a convolution of the cotangent dilated by 2), the same
gradient from `conv_gradients.phase_input_gradient` and the kernel gradient.

`kernel`: stride-1 layers of the models (the encoder stem, UNet 3x3 and 1x1 layers at the
bench_tiny and bench_small widths) at batches 1, 2, 4 and 8: the kernel gradient as XLA
derives it and from `conv_gradients.row_chunked_kernel_gradient` (what `layers.conv2d`
uses on CPU below a batch of `ROW_CHUNK_BATCH`), and their achieved GFLOP/s.

Each program is jitted on its own; one JSON line per layer with median ms of --repeats runs
and the max relative difference between the two forms. Runs on the default JAX device.

With --pytorch (needs the `convert` extra's PyTorch), each line also times PyTorch's own
forward pass and gradients of the same layer on the same values (`torch.nn.functional.conv2d`,
`torch.nn.grad.conv2d_input` and `conv2d_weight`; NCHW tensors, as many threads as CPUs this
process may use), in this process once the layer's JAX programs are done, and gives the max
relative difference of PyTorch's kernel gradient from XLA's.
"""

import functools
import json
import os

import piti_jax  # noqa: F401  (sets the project's XLA:CPU flags before JAX starts)
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from piti_jax.models import conv_gradients

import common
import timing

_GRADIENTS = flags.DEFINE_list("gradients", ["input", "kernel"], "Tables: input (strided), kernel (stride 1).")
_BATCH = flags.DEFINE_integer("batch", 4, "Images per batch of the strided (input) table.")
_REPEATS = flags.DEFINE_integer("repeats", 9, "Timed runs per program (after one warm-up run).")
_PYTORCH = flags.DEFINE_bool("pytorch", False, "Also time PyTorch's forward pass and gradients of each layer.")

STRIDED_LAYERS = [(256, 32, 64), (128, 64, 128), (64, 128, 256), (32, 256, 512)]  # (input side, in, out), 3x3/2
STRIDE, PADDING = 2, 1
# (input side, in, out, kernel): the encoder stem; UNet 3x3 at bench_tiny / bench_small widths; a 1x1 skip.
STRIDE1_LAYERS = [(256, 3, 32, 7), (64, 32, 32, 3), (32, 64, 64, 3), (16, 64, 64, 3), (8, 64, 64, 3),
                  (64, 64, 64, 3), (32, 128, 128, 3), (64, 96, 32, 1)]
STRIDE1_BATCHES = (1, 2, 4, 8)


def median_ms(function, *args) -> float:
  """Median wall ms of --repeats calls of the function (jitted, or PyTorch's), after one warm-up call."""
  call = functools.partial(function, *args)
  jax.block_until_ready(call())
  return common.median_ms(timing.timed(call, _REPEATS.value))


def max_relative_difference(a, b) -> float:
  a, b = np.asarray(a), np.asarray(b)
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def pytorch_rows(x: jax.Array, kernel: jax.Array, cotangent: jax.Array, stride: int, padding: int,
                 xla_kernel_grad: jax.Array, *, forward_and_input: bool) -> dict:
  """PyTorch's kernel gradient (and with forward_and_input its forward pass and input gradient) of the
  layer x (B, H, W, C) * kernel (k, k, C, O) -> cotangent's shape (B, H', W', O): median ms of --repeats
  calls, and the kernel gradient's max relative difference from `xla_kernel_grad` (k, k, C, O), XLA's."""
  import torch  # the `convert` extra; only with --pytorch (its threads set in `main`)

  nchw = lambda a: torch.from_numpy(np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2)))
  t_x, t_g = nchw(x), nchw(cotangent)
  t_kernel = torch.from_numpy(np.ascontiguousarray(np.asarray(kernel).transpose(3, 2, 0, 1)))
  options = dict(stride=stride, padding=padding)
  calls = {"kernel_grad": lambda: torch.nn.grad.conv2d_weight(t_x, t_kernel.shape, t_g, **options)}
  if forward_and_input:
    calls["forward"] = lambda: torch.nn.functional.conv2d(t_x, t_kernel, **options)
    calls["input_grad"] = lambda: torch.nn.grad.conv2d_input(t_x.shape, t_kernel, t_g, **options)
  with torch.no_grad():
    row = {f"pytorch_{name}_ms": median_ms(call) for name, call in calls.items()}
    row["pytorch_kernel_grad_max_rel_difference"] = max_relative_difference(
        calls["kernel_grad"]().numpy().transpose(2, 3, 1, 0), xla_kernel_grad)
  return row


def strided_rows(rng: np.random.Generator):
  for side, channels, out_channels in STRIDED_LAYERS:
    x = jnp.asarray(rng.standard_normal((_BATCH.value, side, side, channels), np.float32))
    kernel = jnp.asarray(rng.standard_normal((3, 3, channels, out_channels), np.float32) / np.sqrt(9 * channels))
    cotangent = jnp.asarray(rng.standard_normal((_BATCH.value, side // 2, side // 2, out_channels), np.float32))
    forward = jax.jit(functools.partial(conv_gradients.conv, stride=STRIDE, padding=PADDING))
    xla_input_grad = jax.jit(lambda x, k, g: conv_gradients.xla_input_gradient(x, k, g, STRIDE, PADDING))
    phase_input_grad = jax.jit(
        lambda x, k, g: conv_gradients.phase_input_gradient(g, k, x.shape, STRIDE, PADDING))
    kernel_grad = jax.jit(lambda x, k, g: conv_gradients.xla_kernel_gradient(x, k, g, STRIDE, PADDING))
    row = {"layer": f"{_BATCH.value}x{side}x{side}x{channels} -> {out_channels}, 3x3 stride 2",
           "forward_ms": median_ms(forward, x, kernel),
           "input_grad_xla_ms": median_ms(xla_input_grad, x, kernel, cotangent),
           "input_grad_phases_ms": median_ms(phase_input_grad, x, kernel, cotangent),
           "kernel_grad_ms": median_ms(kernel_grad, x, kernel, cotangent),
           "max_rel_difference": max_relative_difference(phase_input_grad(x, kernel, cotangent),
                                                         xla_input_grad(x, kernel, cotangent))}
    if _PYTORCH.value:
      row.update(pytorch_rows(x, kernel, cotangent, STRIDE, PADDING, kernel_grad(x, kernel, cotangent),
                              forward_and_input=True))
    yield row


def stride1_rows(rng: np.random.Generator):
  for side, channels, out_channels, size in STRIDE1_LAYERS:
    padding = size // 2
    for batch in STRIDE1_BATCHES:
      x = jnp.asarray(rng.standard_normal((batch, side, side, channels), np.float32))
      kernel = jnp.asarray(rng.standard_normal((size, size, channels, out_channels), np.float32))
      cotangent = jnp.asarray(rng.standard_normal((batch, side, side, out_channels), np.float32))
      xla = jax.jit(lambda x, k, g: conv_gradients.xla_kernel_gradient(x, k, g, 1, padding))
      chunked = jax.jit(lambda x, k, g: conv_gradients.row_chunked_kernel_gradient(
          x, k, g, padding, conv_gradients.ROW_CHUNKS))
      gflop = 2 * batch * side * side * size * size * channels * out_channels / 1e9
      xla_ms, chunked_ms = median_ms(xla, x, kernel, cotangent), median_ms(chunked, x, kernel, cotangent)
      row = {"layer": f"{batch}x{side}x{side}x{channels} -> {out_channels}, {size}x{size} stride 1",
             "kernel_grad_xla_ms": xla_ms, "kernel_grad_row_chunks_ms": chunked_ms,
             "xla_gflops_per_s": round(gflop / xla_ms * 1e3, 1),
             "row_chunks_gflops_per_s": round(gflop / chunked_ms * 1e3, 1),
             "max_rel_difference": max_relative_difference(chunked(x, kernel, cotangent),
                                                           xla(x, kernel, cotangent))}
      if _PYTORCH.value:
        row.update(pytorch_rows(x, kernel, cotangent, 1, padding, xla(x, kernel, cotangent), forward_and_input=False))
        row["pytorch_gflops_per_s"] = round(gflop / row["pytorch_kernel_grad_ms"] * 1e3, 1)
      yield row


def main(argv) -> None:
  del argv
  if _PYTORCH.value:
    import torch  # pylint: disable=import-outside-toplevel

    torch.set_num_threads(len(os.sched_getaffinity(0)))
  rng = np.random.default_rng(0)
  tables = {"input": strided_rows, "kernel": stride1_rows}
  for name in _GRADIENTS.value:
    for row in tables[name](rng):
      print(json.dumps({"table": name, "device": jax.devices()[0].device_kind, **row}), flush=True)


if __name__ == "__main__":
  app.run(main)
