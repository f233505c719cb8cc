"""Convolution gradients in the forms XLA:CPU runs fastest (used on CPU).

Two of the gradients XLA derives for a convolution run far below the forward pass's rate on
XLA:CPU at the model's shapes (docs/performance.md, sections 11 and 14;
`benchmarks/conv_gradients.py`). `conv_with_cpu_gradients` keeps XLA's forward pass and
computes those two another way, with the same products summed in another order:

**Input gradient of a strided convolution, phase by phase.** XLA expresses it as one
convolution of the output cotangent dilated by s with the flipped kernel, which runs up to 6x
slower than the forward pass at the task encoder's largest maps (90 ms against 14 ms for the
4x256x256x32 -> 64, 3x3 stride-2 layer), because most of the dilated input is zeros. The same
gradient splits into s^2 output phases: input pixel (s*k + a, s*l + b) only receives the
kernel taps i = a + padding (mod s), j = b + padding (mod s), each at a fixed offset of the
cotangent. So each phase is a stride-1, undilated convolution of the cotangent with a
sub-kernel of those taps, and the phases interleave into the gradient. Every product of the
dilated convolution that does not involve an inserted zero is computed once.

**Kernel gradient of a stride-1 convolution at a small batch, by row chunks.** XLA expresses
it as one convolution whose window is the whole cotangent map and whose contracted feature
depth is the batch; below a batch of 8 XLA:CPU runs it at a fraction of its rate at batch 8
(e.g. 17-18 GFLOP/s at batch 1 on 64x64x32 -> 32 maps, 85-90 at batch 8). Cutting the output rows into two
chunks, each with its k - 1 halo rows of the padded input, and stacking the chunks along the
batch gives the same sum with twice the depth and half the window. Strided convolutions, 1x1
kernels and batches of 8 or more keep XLA's kernel gradient (chunks were slower there).
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
  """XLA's convolution: x (B, H, W, C), kernel (k, k, C, O) -> (B, H', W', O), x's dtype."""
  return lax.conv_general_dilated(x, kernel, window_strides=(stride, stride),
                                  padding=((padding, padding), (padding, padding)),
                                  dimension_numbers=DIMENSION_NUMBERS)


# Below this batch, a stride-1 convolution's kernel gradient (kernels over 1x1) comes in ROW_CHUNKS row chunks.
ROW_CHUNK_BATCH = 8
ROW_CHUNKS = 2


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_with_cpu_gradients(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
  """`conv(x, kernel, stride, padding)` whose gradients take the forms above (XLA's where none applies)."""
  return conv(x, kernel, stride, padding)


def _forward(x, kernel, stride, padding):
  return conv(x, kernel, stride, padding), (x, kernel)


def _backward(stride, padding, residuals, output_grad):
  x, kernel = residuals
  if stride > 1:
    input_grad = phase_input_gradient(output_grad, kernel, x.shape, stride, padding)
  else:
    input_grad = xla_input_gradient(x, kernel, output_grad, stride, padding)
  if stride == 1 and kernel.shape[0] > 1 and x.shape[0] < ROW_CHUNK_BATCH and output_grad.shape[1] >= ROW_CHUNKS:
    kernel_grad = row_chunked_kernel_gradient(x, kernel, output_grad, padding, ROW_CHUNKS)
  else:
    kernel_grad = xla_kernel_gradient(x, kernel, output_grad, stride, padding)
  return input_grad, kernel_grad


conv_with_cpu_gradients.defvjp(_forward, _backward)


def xla_input_gradient(x: jax.Array, kernel: jax.Array, output_grad: jax.Array, stride: int,
                       padding: int) -> jax.Array:
  """XLA's own input gradient of `conv(x, kernel, stride, padding)`: (B, H, W, C) in x's dtype."""
  return jax.vjp(lambda x: conv(x, kernel, stride, padding), x)[1](output_grad)[0]


def xla_kernel_gradient(x: jax.Array, kernel: jax.Array, output_grad: jax.Array, stride: int,
                        padding: int) -> jax.Array:
  """XLA's own kernel gradient of `conv(x, kernel, stride, padding)`: (k, k, C, O) in kernel's dtype."""
  return jax.vjp(lambda kernel: conv(x, kernel, stride, padding), kernel)[1](output_grad)[0]


def row_chunked_kernel_gradient(x: jax.Array, kernel: jax.Array, output_grad: jax.Array, padding: int,
                                chunks: int) -> jax.Array:
  """Kernel gradient of the stride-1 `conv(x, kernel, 1, padding)`, with the output rows in `chunks` chunks.

  x: (B, H, W, C); kernel: (k, k, C, O) (its shape is what is used); output_grad: (B, H', W', O).
  Chunk i holds output rows [i R, (i + 1) R), R = ceil(H' / chunks), and the padded input rows
  [i R, i R + R + k - 1) they read; rows past the end are zeros on both sides, so they add
  nothing. Returns (k, k, C, O) in kernel's dtype.
  """
  batch, _, width, channels = x.shape
  out_rows = output_grad.shape[1]
  rows = -(-out_rows // chunks)
  spare = rows * chunks - out_rows
  padded = jnp.pad(x, ((0, 0), (padding, padding + spare), (padding, padding), (0, 0)))
  span = rows + kernel.shape[0] - 1
  pieces = jnp.stack([padded[:, i * rows:i * rows + span] for i in range(chunks)], axis=1)
  pieces = pieces.reshape(batch * chunks, span, width + 2 * padding, channels)
  grads = jnp.pad(output_grad, ((0, 0), (0, spare), (0, 0), (0, 0)))
  grads = grads.reshape(batch * chunks, rows, *output_grad.shape[2:])
  return xla_kernel_gradient(pieces, kernel, grads, 1, 0)


def _phase_taps(phase: int, size: int, kernel_size: int, stride: int, padding: int, out_size: int):
  """Along one axis: the kernel taps that reach input positions phase, phase + s, ... and their padding.

  Input position m = s*k + phase receives tap i from output position r = k + (phase + padding - i) / s
  whenever that is an integer. Returns (taps in correlation order, (low, high) padding of the
  cotangent, number of positions in this phase); low/high may be negative (a crop).
  """
  taps = [i for i in range(kernel_size) if (i - phase - padding) % stride == 0][::-1]
  count = len(range(phase, size, stride))
  if not taps:
    return taps, (0, 0), count
  first_offset = (phase + padding - taps[0]) // stride
  low = -first_offset
  high = first_offset + count + len(taps) - 2 - (out_size - 1)
  return taps, (low, high), count


def phase_input_gradient(output_grad: jax.Array, kernel: jax.Array, input_shape: tuple[int, ...],
                         stride: int, padding: int) -> jax.Array:
  """Input gradient of `conv(x, kernel, stride, padding)`, one stride-1 convolution per phase.

  output_grad: (B, H', W', O); kernel: (k, k, C, O); input_shape: x's (B, H, W, C).
  Returns (B, H, W, C) in output_grad's dtype.
  """
  batch, height, width, channels = input_shape
  kernel_size = kernel.shape[0]
  out_h, out_w = output_grad.shape[1:3]
  transposed = jnp.swapaxes(kernel, 2, 3)  # (k, k, O, C): contracts the cotangent's channels
  rows_per_phase = -(-height // stride)
  cols_per_phase = -(-width // stride)
  phases = []
  for a in range(stride):
    row_taps, row_pad, rows = _phase_taps(a, height, kernel_size, stride, padding, out_h)
    row = []
    for b in range(stride):
      col_taps, col_pad, cols = _phase_taps(b, width, kernel_size, stride, padding, out_w)
      if row_taps and col_taps:
        cropped = lax.pad(output_grad, jnp.zeros((), output_grad.dtype),
                          ((0, 0, 0), (min(row_pad[0], 0), min(row_pad[1], 0), 0),
                           (min(col_pad[0], 0), min(col_pad[1], 0), 0), (0, 0, 0)))
        sub_kernel = transposed[jnp.array(row_taps)][:, jnp.array(col_taps)]
        phase = lax.conv_general_dilated(
            cropped, sub_kernel, window_strides=(1, 1),
            padding=((max(row_pad[0], 0), max(row_pad[1], 0)), (max(col_pad[0], 0), max(col_pad[1], 0))),
            dimension_numbers=DIMENSION_NUMBERS)
      else:
        phase = jnp.zeros((batch, rows, cols, channels), output_grad.dtype)
      row.append(jnp.pad(phase, ((0, 0), (0, rows_per_phase - rows), (0, cols_per_phase - cols), (0, 0))))
    phases.append(jnp.stack(row, axis=3))  # (B, H/s, W/s, s, C)
  interleaved = jnp.stack(phases, axis=2)  # (B, H/s, s, W/s, s, C)
  interleaved = interleaved.reshape(batch, rows_per_phase * stride, cols_per_phase * stride, channels)
  return interleaved[:, :height, :width]
