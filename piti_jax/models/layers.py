"""Shared building blocks of the UNet, the text transformer and the task encoder.

Conventions (all modules in `piti_jax.models`):
- Activations are NHWC (images) or (B, L, W) (token sequences).
- Parameters are float32. Each module computes in its `dtype` (float32 or bfloat16):
  parameters and inputs are cast to it at use. Normalisations (GroupNorm, LayerNorm,
  InstanceNorm) and attention softmax always compute in float32.
- Initialisation follows PyTorch's defaults so a fresh model behaves like the reference:
  Linear/Conv weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with
  a=sqrt(5)), norm scales 1 and biases 0. Layers that the reference zero-initialises take
  `zero_init=True`.
- Every parameter is made by `new_param` and carries the nnx metadata `init` (its `Init`)
  and `fsdp_dims` (a kernel's feature dimensions, never the spatial taps; empty for
  vectors) used by `piti_jax.train.partition`.
- Parameter leaf names: `kernel` (Linear (in, out), Conv (kh, kw, in, out)), `bias`, `scale`
  (norm gains) and `embedding` (token embedding table).
"""

import contextlib
import dataclasses
import functools
import math
import sys
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from piti_jax.errors import PitiError
from piti_jax.models import conv_gradients, target

GROUP_NORM_GROUPS = 32
NORM_EPS = 1e-5
# `sum_over_positions`: positions per partial sum of the first stage (XLA:CPU leaves a reduction
# alone when every axis it sums is shorter than 32), and the fewest positions it stages (at 16x16
# maps one plain sum was faster).
POSITION_SUM_STAGE = 16
STAGED_SUM_MIN_POSITIONS = 1024
# `max_over_last_axis`: partial maxima of the first stage (each over every KEY_MAX_STAGE-th entry, along an axis
# that is not the minor one, which XLA:CPU vectorises), and the fewest entries it stages.
KEY_MAX_STAGE = 8
STAGED_MAX_MIN_LENGTH = 32
LEAKY_RELU_SLOPE = 0.2  # PITI's nn.LeakyReLU(0.2): the task encoder and the pix2pix critic


def identity(x: jax.Array) -> jax.Array:
  """Returns `x`; stands where the reference has a parameter-less `nn.Identity`."""
  return x


@dataclasses.dataclass(frozen=True)
class Init:
  """A parameter's initial distribution, kept as the nnx metadata `init` of every Param.

  kind: "uniform" (U(-scale, scale)), "normal" (N(0, scale^2)), "zeros" or "ones".
  Modules draw with `jax_sample` when constructed directly; `presets.build_model` instead
  fills an abstract model from one NumPy generator with `numpy_sample`, which avoids compiling
  an XLA random-number program per parameter.
  """

  kind: str
  scale: float = 0.0

  def jax_sample(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    if self.kind == "uniform":
      return jax.random.uniform(key, shape, jnp.float32, -self.scale, self.scale)
    if self.kind == "normal":
      return self.scale * jax.random.normal(key, shape, jnp.float32)
    return jnp.full(shape, 1.0 if self.kind == "ones" else 0.0, jnp.float32)

  def numpy_sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    if self.kind == "uniform":
      return rng.uniform(-self.scale, self.scale, shape).astype(np.float32)
    if self.kind == "normal":
      return (self.scale * rng.standard_normal(shape, np.float32)).astype(np.float32)
    return np.full(shape, 1.0 if self.kind == "ones" else 0.0, np.float32)


ZEROS = Init("zeros")
ONES = Init("ones")


def torch_default_init(fan_in: int) -> Init:
  """PyTorch's default Linear/Conv init for weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  return Init("uniform", 1.0 / math.sqrt(fan_in))


def new_param(init: Init, shape: tuple[int, ...], rngs: nnx.Rngs | None, fsdp_dims: tuple[int, ...] = ()) -> nnx.Param:
  """A float32 nnx.Param drawn from `init`, carrying the metadata `init` and `fsdp_dims`.

  rngs: source of the "params" keys. None builds a structural placeholder instead (zeros
    for random kinds): `presets.abstract_model` traces models that way, because drawing
    through nnx.Rngs inside a trace costs seconds per model, and `presets.build_model`
    then draws every parameter from its `init`.
  fsdp_dims: dimensions `piti_jax.train.partition` may shard (feature dims only; empty = replicate).
  """
  if rngs is None and init.kind in ("uniform", "normal"):
    value = jnp.zeros(shape, jnp.float32)
  else:
    value = init.jax_sample(rngs.params() if init.kind in ("uniform", "normal") else None, shape)
  return nnx.Param(value, init=init, fsdp_dims=fsdp_dims)


def draw_initial_values(params: list[nnx.Variable], key: jax.Array) -> None:
  """Sets each parameter, in order, to a draw from its `init` metadata, all from one key.

  A concrete key seeds one NumPy generator, so no XLA random-number program is compiled per
  parameter (minutes on a CPU for the real presets); under a trace (nnx.eval_shape, jit) the
  values come from jax.random instead. Deterministic per key and parameter order.
  """
  try:
    seed = np.asarray(jax.random.key_data(key), np.uint32).ravel()
  except jax.errors.TracerArrayConversionError:
    for sub_key, param in zip(jax.random.split(key, len(params)), params):
      param.set_value(param.get_metadata()["init"].jax_sample(sub_key, tuple(param.shape)))
    return
  generator = np.random.default_rng(np.random.SeedSequence(seed.tolist()))
  for param in params:
    param.set_value(jnp.asarray(param.get_metadata()["init"].numpy_sample(generator, tuple(param.shape))))


def kernel_init(fan_in: int, *, zero: bool = False) -> Init:
  """Kernel initialiser: PyTorch's default, or zeros for the reference's `zero_module` layers."""
  return ZEROS if zero else torch_default_init(fan_in)


class Dense(nnx.Module):
  """Linear layer y = x @ kernel + bias.

  kernel: float32 (in_features, out_features); bias: (out_features,). Input (..., in_features)
  of any float dtype; output (..., out_features) in `dtype`. Also used for the reference's
  kernel-1 Conv1d layers (qkv, encoder_kv, proj_out), which act per token.
  """

  def __init__(self, in_features: int, out_features: int, *, dtype: jnp.dtype, rngs: nnx.Rngs | None,
               zero_init: bool = False):
    self.dtype = dtype
    self.kernel = new_param(kernel_init(in_features, zero=zero_init), (in_features, out_features), rngs, (0, 1))
    self.bias = new_param(kernel_init(in_features, zero=zero_init), (out_features,), rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self._matmul(x, self.kernel[...]) + self.bias[...].astype(self.dtype)

  def recomputing(self, before: Callable[..., jax.Array], *inputs: jax.Array) -> jax.Array:
    """self(before(*inputs)), with before's output (e.g. a norm's or an activation's) recomputed in
    the backward pass instead of kept (`linear_of_recomputed`); (..., out_features) in `dtype`."""
    return linear_of_recomputed(self._matmul, self.kernel[...], before, *inputs) + self.bias[...].astype(self.dtype)

  def _matmul(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))


def linear_of_recomputed(linear: Callable[[jax.Array, jax.Array], jax.Array], kernel: jax.Array,
                         before: Callable[..., jax.Array], *inputs: jax.Array) -> jax.Array:
  """linear(before(*inputs), kernel), whose backward pass recomputes before's output instead of keeping it.

  For a layer (a convolution or a matmul, linear in its input and in its kernel) that reads a
  norm's or an elementwise activation's output: autodiff keeps that output for the kernel
  gradient (on XLA:CPU often as a transposed copy, made in the forward pass) next to what
  before's own backward pass keeps. Here only `inputs` and the kernel are kept. The backward
  pass takes the input gradient first (it needs the kernel only), then runs `before` again for
  the kernel gradient and before's own backward pass; `linear` itself is not run again.
  Args:
    linear: linear(a, kernel) -> output; a has before's output shape.
    kernel: the layer's float32 kernel.
    before: maps `inputs` (float arrays) to linear's input.
  Returns:
    linear(before(*inputs), kernel).
  """
  @jax.custom_vjp
  def apply(kernel, *inputs):
    return linear(before(*inputs), kernel)

  def forward(kernel, *inputs):
    return linear(before(*inputs), kernel), (kernel, inputs)

  def backward(residuals, out_grad):
    kernel, inputs = residuals
    # Tied too: otherwise XLA computes the kernel's transposed copy for the input gradient at the
    # start of the backward pass and keeps it until this layer's turn.
    kernel = _after(out_grad, kernel)
    shape = jax.eval_shape(before, *inputs)
    # The input gradient is linear in out_grad and does not read the input's values.
    (input_grad,) = jax.vjp(lambda a: linear(a, kernel), jnp.zeros(shape.shape, shape.dtype))[1](out_grad)
    # The recomputation waits for it: a convolution's or a matmul's output, which XLA cannot fuse
    # into the reader of its first element (an elementwise out_grad could pull its own producers along).
    recomputed, before_pullback = jax.vjp(before, *(_after(input_grad, x) for x in inputs))
    (kernel_grad,) = jax.vjp(lambda k: linear(recomputed, k), kernel)[1](out_grad)
    return (kernel_grad, *before_pullback(input_grad))

  apply.defvjp(forward, backward)
  return apply(kernel, *inputs)


class Conv2d(nnx.Module):
  """2-D convolution with PyTorch's explicit symmetric zero padding.

  kernel: float32 (kh, kw, in, out) (HWIO); bias (out,). Input (B, H, W, in); output
  (B, H', W', out) in `dtype` with H' = (H + 2*padding - kh) // stride + 1.
  """

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, dtype: jnp.dtype,
               rngs: nnx.Rngs | None, stride: int = 1, padding: int | None = None, zero_init: bool = False):
    self.dtype = dtype
    self.stride = stride
    self.padding = kernel_size // 2 if padding is None else padding
    fan_in = in_channels * kernel_size * kernel_size
    self.kernel = new_param(kernel_init(fan_in, zero=zero_init),
                            (kernel_size, kernel_size, in_channels, out_channels), rngs, (2, 3))
    self.bias = new_param(kernel_init(fan_in, zero=zero_init), (out_channels,), rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return conv2d(x, self.kernel[...], self.bias[...], stride=self.stride, padding=self.padding,
                  dtype=self.dtype)

  def recomputing(self, before: Callable[..., jax.Array], *inputs: jax.Array, with_bias: bool = True) -> jax.Array:
    """self(before(*inputs)), with before's output recomputed in the backward pass instead of kept.

    Autodiff of a norm followed by a convolution keeps the norm's input (for its backward
    pass) and its output (for the kernel gradient; on XLA:CPU as a transposed copy): two maps
    per pair, which at the task encoder's 256x256 level are 64 MiB each at batch 8. Here only
    `inputs` are kept (`linear_of_recomputed`).
    Args:
      before: maps `inputs` (float arrays) to this convolution's (B, H, W, in) input.
      with_bias: False skips the bias, as `before_norm`.
    Returns:
      (B, H', W', out) in `dtype`.
    """
    def conv(a, kernel):
      return conv2d(a, kernel, None, stride=self.stride, padding=self.padding, dtype=self.dtype)

    y = linear_of_recomputed(conv, self.kernel[...], before, *inputs)
    return add_channel_bias(y, self.bias[...]) if with_bias else y

  def before_norm(self, x: jax.Array) -> jax.Array:
    """The convolution without its bias, for a conv whose output goes straight into an InstanceNorm.

    A per-channel normalisation over positions (InstanceNorm; not GroupNorm with several
    channels per group) subtracts every per-channel constant, so the bias cannot change its
    output: skipping it gives the same values (up to float rounding) without a pass over the
    map forward and a reduction backward. The bias stays a parameter (checkpoints keep the
    reference's layout) and gets a zero gradient, where the reference's gets rounding noise.
    """
    return conv2d(x, self.kernel[...], None, stride=self.stride, padding=self.padding, dtype=self.dtype)


def conv2d(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, *, stride: int, padding: int,
           dtype: jnp.dtype) -> jax.Array:
  """NHWC convolution with HWIO `kernel`, symmetric zero `padding`, result in `dtype`.

  x: (B, H, W, C); kernel: (k, k, C, O); bias: (O,) or None (no bias). Returns (B, H', W', O).
  When the traced-for platform is a CPU (`target.platform()`), the gradients take the forms
  XLA:CPU runs fastest (`conv_gradients`: a strided input gradient phase by phase, a
  small-batch kernel gradient by row chunks; the same values up to summation order).
  """
  x, kernel = x.astype(dtype), kernel.astype(dtype)
  if target.platform() == "cpu":
    y = conv_gradients.conv_with_cpu_gradients(x, kernel, stride, padding)
  else:
    y = conv_gradients.conv(x, kernel, stride, padding)
  return y if bias is None else add_channel_bias(y, bias)


def sum_over_positions(x: jax.Array) -> jax.Array:
  """The sum over axis 1 (positions): x (N, P, ...) -> (N, ...), in x's dtype.

  On a CPU, P of STAGED_SUM_MIN_POSITIONS or more (and a multiple of 16) is summed in two stages:
  groups of 16 positions, then the P / 16 partial sums. XLA:CPU rewrites a sum over an axis of 32 or more into a
  windowed reduction (a tree, for accuracy) that cannot compute its input in place, so an
  elementwise map feeding the sum, such as (x - mean)^2 in a norm's statistics or the output
  gradient times the normalised map in its backward pass, is written out whole and read again.
  The first stage sums an axis of 16, which XLA leaves a plain reduction that computes its input
  as it reads it; the barrier keeps XLA from merging the stages back into one sum before that
  rewrite. Same value up to summation order; GPU and TPU backends get `x.sum(axis=1)`.
  """
  positions = x.shape[1]
  if target.platform() != "cpu" or positions < STAGED_SUM_MIN_POSITIONS or positions % POSITION_SUM_STAGE:
    return x.sum(axis=1)
  partial = x.reshape(x.shape[0], positions // POSITION_SUM_STAGE, POSITION_SUM_STAGE, *x.shape[2:]).sum(axis=2)
  return jax.lax.optimization_barrier(partial).sum(axis=1)


@jax.custom_vjp
def add_channel_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
  """y + bias over the last axis; y (..., C) in any float dtype, bias float32 (C,); y's dtype.

  The bias gradient sums the output gradient over all other axes with `sum_over_positions`, in
  float32.
  """
  return y + bias.astype(y.dtype)


def _add_channel_bias_forward(y, bias):
  return add_channel_bias(y, bias), bias


def _add_channel_bias_backward(bias, out_grad):
  bias_grad = sum_over_positions(out_grad.astype(jnp.float32).reshape(1, -1, bias.shape[0]))[0]
  return out_grad, bias_grad.astype(bias.dtype)


add_channel_bias.defvjp(_add_channel_bias_forward, _add_channel_bias_backward)


def recomputed_in_backward(module: nnx.Module, *inputs: jax.Array, function: Callable[..., jax.Array] | None = None,
                           rngs: nnx.Rngs | None = None) -> jax.Array:
  """function(module, *inputs), whose backward pass runs it again from its inputs instead of keeping its intermediates.

  What autodiff keeps between the forward and the backward pass is only `inputs` (and the
  module's parameters); the backward pass recomputes the forward pass once the output gradient
  exists and takes its pullback. The recomputation is tied to the output gradient (`_after`: an
  optimisation barrier, or on a CPU a dependency in the data): XLA:CPU drops the barriers that
  `jax.checkpoint` relies on and would merge the recomputation with the forward pass, so this is
  the one recomputation mechanism on every backend (the UNet's `remat`, the encoders' `recompute`). For modules whose
  intermediates are large next to their inputs: a UNet block, a transformer block, the task
  encoder's CNN.
  Args:
    module: an nnx module whose state is its parameters (no random streams or mutable counters).
    inputs: float arrays, the module's differentiable inputs.
    function: called as function(module, *inputs) (with `rngs=` when rngs is given); default
      module(*inputs).
    rngs: random streams the call draws from: only a "dropout" stream is passed on (without one,
      the call gets no rngs); the recomputation draws the same keys, and `rngs` advances as
      after a plain call.
  Returns:
    function(module, *inputs).
  """
  graphdef, state = nnx.split(module)
  function = function or (lambda module, *inputs: module(*inputs))
  if rngs is not None and "dropout" not in rngs:
    rngs = None
  stream = None if rngs is None else (rngs.dropout.key[...], rngs.dropout.count[...])

  def call(state, stream, inputs):
    inner = None
    if stream is not None:  # a stream of this trace, starting where the caller's stands
      inner = nnx.Rngs(dropout=stream[0])
      inner.dropout.count[...] = stream[1]
      out = function(nnx.merge(graphdef, state), *inputs, rngs=inner)
      return out, inner.dropout.count[...]
    return function(nnx.merge(graphdef, state), *inputs), None

  @jax.custom_vjp
  def apply(state, stream, inputs):
    return call(state, stream, inputs)

  def forward(state, stream, inputs):
    return call(state, stream, inputs), (state, stream, inputs)

  def backward(residuals, out_grads):
    state, stream, inputs = residuals
    out_grad = out_grads[0]
    # The parameters too: otherwise XLA shares their casts (bfloat16 compute) and all-gathers
    # (FSDP) with the forward pass's and keeps those whole-model copies alive in between.
    state, inputs = jax.tree.map(lambda x: _after(out_grad, x), (state, inputs))
    state_grad, input_grads = jax.vjp(lambda s, i: call(s, stream, i)[0], state, inputs)[1](out_grad)
    return state_grad, None, input_grads

  apply.defvjp(forward, backward)
  out, count = apply(state, stream, tuple(inputs))
  if rngs is not None:
    rngs.dropout.count[...] = count
  return out


def _after(signal: jax.Array, x: jax.Array) -> jax.Array:
  """x, made to depend on `signal` so that XLA computes what follows from it only once `signal` exists.

  Without it XLA would merge a recomputation from forward-pass values with the forward pass's
  own computation (or schedule it right after), which keeps its result alive through the whole
  backward pass. XLA:GPU and XLA:TPU keep `jax.lax.optimization_barrier`, which orders without
  touching x. XLA:CPU drops it, so there the dependency is in the data: x + min(|s|, 0), with
  min(|s|, 0) 0 for every finite or infinite s (and NaN for a NaN, which the step flags anyway).
  Args:
    signal: any non-empty array; on a CPU its first element is read.
    x: any float array.
  Returns:
    x's values, shape and dtype.
  """
  if _barriers_kept():
    return jax.lax.optimization_barrier((signal, x))[1]
  first = signal.reshape(-1)[0].astype(x.dtype)
  return x + jnp.minimum(jnp.abs(first), 0)


def _barriers_kept() -> bool:
  """Whether the default backend's compiler keeps optimisation barriers (all but XLA:CPU; checked at trace time).
  The compiling backend decides, not a planned platform (`target`): a CPU compile drops them whatever it plans for."""
  return jax.default_backend() != "cpu"


@jax.custom_vjp
def exact_gelu(x: jax.Array) -> jax.Array:
  """x * Phi(x) with the exact (erf) normal CDF, as `jax.nn.gelu(x, approximate=False)`; x's shape and dtype.

  The forward pass is `jax.nn.gelu`'s. The backward pass is the closed form Phi(x) + x phi(x)
  from x alone, where autodiff keeps several intermediates of XLA's erf expansion per call
  (4 x 8 MiB per text-transformer layer at bench_small, batch 8).
  """
  return jax.nn.gelu(x, approximate=False)


def _exact_gelu_forward(x):
  return exact_gelu(x), x


def _exact_gelu_backward(x, out_grad):
  z = _after(out_grad, x).astype(jnp.float32)
  cdf = 0.5 * jax.lax.erfc(-z / math.sqrt(2.0))
  density = jnp.exp(-0.5 * jnp.square(z)) / math.sqrt(2.0 * math.pi)
  return ((cdf + z * density) * out_grad.astype(jnp.float32)).astype(x.dtype),


exact_gelu.defvjp(_exact_gelu_forward, _exact_gelu_backward)


def _silu_derivative(z: jax.Array) -> jax.Array:
  sigmoid = jax.nn.sigmoid(z)
  return sigmoid * (1 + z * (1 - sigmoid))


# name -> (activation, its derivative); both elementwise on float32.
ACTIVATIONS = {
    "identity": (identity, None),
    "silu": (jax.nn.silu, _silu_derivative),
    "leaky_relu": (lambda z: jax.nn.leaky_relu(z, LEAKY_RELU_SLOPE),
                   lambda z: jnp.where(z >= 0, 1.0, LEAKY_RELU_SLOPE)),
}


def _grouped(x: jax.Array, groups: int) -> jax.Array:
  """(B, ..., C) -> float32 (B, positions, groups, C // groups)."""
  return x.astype(jnp.float32).reshape(x.shape[0], -1, groups, x.shape[-1] // groups)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def normalize_affine(x: jax.Array, scale: jax.Array, bias: jax.Array, groups: int, activation: str) -> jax.Array:
  """Group normalisation (eps 1e-5, float32) with an affine per channel (or per sample and channel), then an activation.

  Statistics are per sample over all positions and the channels of a group: `groups=32` is
  GroupNorm32, `groups=C` InstanceNorm. The backward pass is the closed form: it keeps only
  x and the (B, groups) statistics from the forward pass and reads the output gradient in
  two per-channel sums, where autodiff keeps the centred and normalised maps and runs four.

  Args:
    x: (B, ..., C) of any float dtype, C divisible by `groups`.
    scale, bias: float32 (C,), or (B, C) for an affine that differs per sample (the UNet's
      scale-shift norm folds its timestep modulation into them).
    groups: number of channel groups.
    activation: a key of `ACTIVATIONS`.
  Returns:
    float32, the shape of x.
  """
  return _normalize_affine_forward(x, scale, bias, groups, activation)[0]


def _group_statistics(grouped: jax.Array) -> tuple[jax.Array, jax.Array]:
  """float32 (B, positions, groups, C // groups) -> mean and 1/std, each (B, 1, groups, 1)."""
  count = grouped.shape[1] * grouped.shape[3]
  group_mean = lambda a: sum_over_positions(a).sum(axis=-1)[:, None, :, None] / count
  mean = group_mean(grouped)
  inv_std = jax.lax.rsqrt(group_mean(jnp.square(grouped - mean)) + NORM_EPS)
  return mean, inv_std


def _affine_rows(affine: jax.Array, trailing: tuple[int, ...]) -> jax.Array:
  """Affine (C,) or (B, C) -> (1 or B, *trailing): one row per sample that has its own affine."""
  return affine.reshape((affine.shape[0] if affine.ndim == 2 else 1,) + trailing)


def _per_group(affine: jax.Array, groups: int) -> jax.Array:
  """Affine (C,) or (B, C) -> (1 or B, 1, groups, C // groups), to broadcast against `_grouped` maps."""
  return _affine_rows(affine, (1, groups, affine.shape[-1] // groups))


def _per_position(affine: jax.Array, ndim: int) -> jax.Array:
  """Affine (C,) or (B, C) -> (1 or B, 1, ..., 1, C), to broadcast against an ndim-D (B, ..., C) map."""
  return _affine_rows(affine, (1,) * (ndim - 2) + affine.shape[-1:])


def _repeat_per_channel(statistic: jax.Array, channels: int) -> jax.Array:
  """Group statistic (B, 1, groups, 1) -> (B, channels), each group's value on its channels."""
  batch, groups = statistic.shape[0], statistic.shape[2]
  return jnp.repeat(statistic.reshape(batch, groups), channels // groups, axis=-1)


def _summed_over_batch_unless_per_sample(affine: jax.Array, grad: jax.Array) -> jax.Array:
  """The gradient of a (C,) affine sums the per-sample (B, ...) terms; a (B, C) affine keeps them."""
  return (grad.sum(axis=0) if affine.ndim == 1 else grad).reshape(affine.shape)


def _normalize_affine_forward(x, scale, bias, groups, activation):
  grouped = _grouped(x, groups)
  mean, inv_std = _group_statistics(grouped)
  # The normalisation, affine and activation run in x's layout with the statistics repeated per
  # channel: C on the minor axis keeps them vectorised (the grouped layout's minor axis has
  # C / groups entries, often 1 or 2).
  channels = x.shape[-1]
  channel_scale = _per_position(_repeat_per_channel(inv_std, channels), x.ndim) * _per_position(scale, x.ndim)
  pre_activation = ((x.astype(jnp.float32) - _per_position(_repeat_per_channel(mean, channels), x.ndim))
                    * channel_scale
                    + _per_position(bias, x.ndim))
  return ACTIVATIONS[activation][0](pre_activation), (x, scale, bias, mean, inv_std)


def _normalize_affine_backward(groups, activation, residuals, output_grad):
  x, scale, bias, mean, inv_std = residuals
  normalized = (_grouped(x, groups) - mean) * inv_std
  group_scale = _per_group(scale, groups)  # (1 or B, 1, groups, C // groups)
  grad = output_grad.astype(jnp.float32).reshape(normalized.shape)
  derivative = ACTIVATIONS[activation][1]
  if derivative is not None:
    grad = grad * derivative(normalized * group_scale + _per_group(bias, groups))
  # One channel per group (InstanceNorm): staged sums, 2-3x faster at the task encoder's maps. With
  # several (GroupNorm) XLA:CPU's one-pass sums were faster (docs/performance.md section 20).
  position_sum = sum_over_positions if groups == x.shape[-1] else (lambda a: a.sum(axis=1))
  grad_sum = position_sum(grad)  # (B, groups, C // groups)
  grad_normalized_sum = position_sum(grad * normalized)
  count = normalized.shape[1] * normalized.shape[3]
  mean_term = (grad_sum * group_scale[:, 0]).sum(axis=-1, keepdims=True)[:, None] / count  # (B, 1, groups, 1)
  slope_term = (grad_normalized_sum * group_scale[:, 0]).sum(axis=-1, keepdims=True)[:, None] / count
  x_grad = inv_std * (grad * group_scale - mean_term - normalized * slope_term)
  return (x_grad.reshape(x.shape).astype(x.dtype), _summed_over_batch_unless_per_sample(scale, grad_normalized_sum),
          _summed_over_batch_unless_per_sample(bias, grad_sum))


normalize_affine.defvjp(_normalize_affine_forward, _normalize_affine_backward)


class AffineNorm(nnx.Module):
  """A normalisation with a float32 (channels,) affine: `scale` (ones) and `bias` (zeros).

  A base for the norms below, each of which defines `with_affine(x, scale, bias)`: the norm with
  a given affine. Calling the module applies its own affine; `into` feeds the norm to a linear
  layer without keeping its output.
  """

  def __init__(self, channels: int):
    self.scale = new_param(ONES, (channels,), None)
    self.bias = new_param(ZEROS, (channels,), None)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.with_affine(x, self.scale[...], self.bias[...])

  def into(self, layer: Dense | Conv2d, *parts: jax.Array, then: Callable[[jax.Array], jax.Array] | None = None,
           **layer_options) -> jax.Array:
    """layer(then(self(x))) for x the `parts` concatenated along the last axis (one part: x itself),
    with what goes into the layer recomputed in the backward pass instead of kept (`layer.recomputing`,
    which takes `layer_options`, e.g. with_bias=False for a convolution). `then` maps the norm's
    output to the layer's input shape (a resampling); None feeds it as is."""
    def norm_then(scale: jax.Array, bias: jax.Array, *parts: jax.Array) -> jax.Array:
      normed = self.with_affine(jnp.concatenate(parts, axis=-1), scale, bias)
      return normed if then is None else then(normed)

    return layer.recomputing(norm_then, self.scale[...], self.bias[...], *parts, **layer_options)


class GroupNorm32(AffineNorm):
  """GroupNorm with 32 groups and eps 1e-5 computed in float32, optionally followed by SiLU.

  scale/bias: float32 (channels,). Input (B, ..., channels) of any float dtype; output in `dtype`.
  The reference's `GroupNorm32(swish=1.0)` fuses the SiLU into the norm module.
  """

  def __init__(self, channels: int, *, swish: bool, dtype: jnp.dtype):
    if channels % GROUP_NORM_GROUPS:
      raise PitiError(f"GroupNorm needs a channel count divisible by {GROUP_NORM_GROUPS}, got {channels}; "
                      "use a model_channels (times every channel_mult) that is a multiple of 32.")
    super().__init__(channels)
    self.swish = swish
    self.dtype = dtype

  def with_affine(self, x: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
    """The norm with the given float32 (channels,) affine instead of its parameters' values."""
    activation = "silu" if self.swish else "identity"
    return normalize_affine(x, scale, bias, GROUP_NORM_GROUPS, activation).astype(self.dtype)

  def modulated_silu(self, x: jax.Array, scale: jax.Array, shift: jax.Array) -> jax.Array:
    """SiLU(GroupNorm(x) * (1 + scale) + shift), the ADM scale-shift norm, in one pass.

    scale, shift: (B, channels) per-sample modulation. The modulation is folded into a
    per-sample affine (scale (1 + s) * gamma, bias (1 + s) * beta + shift), which is the
    same function with the product taken in another order. Output in `dtype`.
    """
    gain = 1 + scale.astype(jnp.float32)
    return normalize_affine(x, self.scale[...] * gain, self.bias[...] * gain + shift.astype(jnp.float32),
                            GROUP_NORM_GROUPS, "silu").astype(self.dtype)


class LayerNorm(AffineNorm):
  """LayerNorm over the last axis, eps 1e-5, computed in float32; output float32.

  scale/bias: float32 (width,). Input (..., width).
  """

  def with_affine(self, x: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
    """The norm with the given float32 (width,) affine instead of its parameters' values."""
    x = x.astype(jnp.float32)
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = jnp.square(centred).mean(axis=-1, keepdims=True)
    return centred * jax.lax.rsqrt(var + NORM_EPS) * scale + bias


def instance_norm(x: jax.Array) -> jax.Array:
  """Per-sample, per-channel normalisation over H and W (eps 1e-5), without affine parameters.

  Args:
    x: (B, H, W, C) of any float dtype.
  Returns:
    float32 (B, H, W, C).
  """
  grouped = _grouped(x, x.shape[-1])
  mean, inv_std = _group_statistics(grouped)
  return ((grouped - mean) * inv_std).reshape(x.shape)


class InstanceNorm(AffineNorm):
  """Affine InstanceNorm2d (per sample and channel over H, W), eps 1e-5, in float32, then `activation`.

  scale/bias: float32 (channels,). Input (B, H, W, channels); output in `dtype`.
  As PyTorch's `InstanceNorm2d(affine=True)` (no running statistics), train and eval agree.
  `activation` is one of `ACTIVATIONS` ("leaky_relu" is the task encoder's LeakyReLU(0.2)).
  """

  def __init__(self, channels: int, *, activation: str = "identity", dtype: jnp.dtype):
    super().__init__(channels)
    self.activation = activation
    self.dtype = dtype

  def with_affine(self, x: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
    """The norm with the given float32 (channels,) affine instead of its parameters' values."""
    return normalize_affine(x, scale, bias, x.shape[-1], self.activation).astype(self.dtype)


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """Sinusoidal embedding [cos(t*f), sin(t*f)] with f_i = max_period^(-i/half), as ADM/GLIDE.

  Args:
    t: (B,) timesteps, integer or float (fractional values allowed).
    dim: embedding width; an odd width gets one trailing zero column.
  Returns:
    float32 (B, dim).
  """
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
  embedding = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    embedding = jnp.pad(embedding, ((0, 0), (0, 1)))
  return embedding


def qkv_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """Multi-head attention with the reference's split scaling and a float32 softmax.

  q * d^-1/4 and k * d^-1/4 (together 1/sqrt(d)), softmax over keys in float32, cast back.
  Args:
    q: (B, T, heads, d); k, v: (B, S, heads, d), all in the compute dtype.
  Returns:
    (B, T, heads, d) in q's dtype.

  On a GPU in bfloat16/float16 this is cuDNN's fused (flash) attention through
  `jax.nn.dot_product_attention`: the same softmax(q k^T / sqrt(d)) v with the scale applied
  once and a float32 softmax inside the kernel, without materialising the (T, S) logits.
  Elsewhere it is `_attention`, whose backward pass recomputes the (T, S) weights instead of
  keeping them from the forward pass.
  """
  if _cudnn_attention_applies(q):
    return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
  return _attention(q, k, v)


def _qk_scale(q: jax.Array) -> float:
  """d^-1/4 for head width d: the reference scales q and k by it each (together 1/sqrt(d))."""
  return 1.0 / math.sqrt(math.sqrt(q.shape[-1]))


# Einsum layouts of the token arrays in `_attention`: "bthd" as the layers hold them, (B, T, heads, d);
# "bhtd", (B, heads, T, d), for groups of slices (`_forward_in_slice_groups`). Weights are (B, heads, T, S) in both.
TOKENS_AS_GIVEN, SLICES_MAJOR = "bthd", "bhtd"


def _keys(layout: str) -> str:
  """The einsum subscripts of keys and values (S for T) in the token layout `layout`."""
  return layout.replace("t", "s")


def _scaled_logits(q: jax.Array, k: jax.Array, layout: str) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(q * d^-1/4, k * d^-1/4, float32 logits (B, heads, T, S)) as the reference computes them; q, k in
  the token layout `layout`."""
  scale = _qk_scale(q)
  q_scaled, k_scaled = q * scale, k * scale
  return q_scaled, k_scaled, jnp.einsum(f"{layout},{_keys(layout)}->bhts", q_scaled, k_scaled).astype(jnp.float32)


@jax.custom_vjp
def _attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """softmax(q k^T / sqrt(d)) v with a backward pass that keeps no (T, S) array.

  The forward pass computes what `jax.nn.softmax` computes, bit for bit. Autodiff would keep
  the float32 (B, heads, T, S) weights of every attention layer until its backward pass (80 MiB
  per layer at bench_small's 32x32 level, batch 8); this keeps q, k, v, the output and the
  softmax's row maxima and sums, and the backward pass recomputes the weights from them (one
  more q k^T product), as flash attention does. On a CPU, when the whole (B, heads, T, S) weights
  would take more than ATTENTION_BLOCK_BYTES, the forward pass takes the (batch, head) slices a group
  at a time (`attention_slice_groups`) and the backward pass blocks of query rows across all slices
  (`attention_backward_chunks`).
  """
  return _attention_forward(q, k, v)[0]


def _attention_forward(q, k, v):
  groups = attention_slice_groups(q.shape, k.shape[1])
  if groups == 1:
    out, row_max, row_sum = _attention_slices_forward(q, k, v, layout=TOKENS_AS_GIVEN)
  else:
    out, row_max, row_sum = _forward_in_slice_groups(q, k, v, groups)
  return out, (q, k, v, out, row_max, row_sum)


def _attention_slices_forward(q, k, v, *, layout: str):
  """(out in q's token layout `layout` and dtype, row maxima and row sums (B, heads, T, 1) float32) of some slices."""
  _, _, logits = _scaled_logits(q, k, layout)
  row_max = jax.lax.stop_gradient(max_over_last_axis(logits))
  unnormalized = jnp.exp(logits - row_max)
  row_sum = unnormalized.sum(axis=-1, keepdims=True)
  out = jnp.einsum(f"bhts,{_keys(layout)}->{layout}", (unnormalized / row_sum).astype(q.dtype), v)
  return out, row_max, row_sum


def max_over_last_axis(x: jax.Array) -> jax.Array:
  """The maximum over the last axis, kept as a length-1 axis: x (..., S) -> (..., 1), the value of `x.max(-1, keepdims=True)`.

  On a CPU, S of STAGED_MAX_MIN_LENGTH or more is taken in two stages: its first S' = S - S % KEY_MAX_STAGE
  entries viewed as (..., S' / KEY_MAX_STAGE, KEY_MAX_STAGE) give KEY_MAX_STAGE partial maxima over the
  non-minor axis (the j-th over x[..., j:S':KEY_MAX_STAGE]), then the maximum of those and of the last
  S % KEY_MAX_STAGE entries. XLA:CPU takes a maximum over a long minor axis (the attention softmax's row
  maximum over its keys) at a fraction of its rate over a non-minor one (at bench_small's 32x32 attention,
  a (8, 2, 1024, 1280) float32 array: 24 ms against 4 ms); the barrier keeps XLA from merging the stages
  back into one reduction. A maximum does not depend on the order it is taken in, so the value is the
  same; GPU and TPU backends get `x.max(-1, keepdims=True)`.
  """
  length = x.shape[-1]
  if target.platform() != "cpu" or length < STAGED_MAX_MIN_LENGTH:
    return x.max(axis=-1, keepdims=True)
  staged = length - length % KEY_MAX_STAGE
  partial = x[..., :staged].reshape(*x.shape[:-1], staged // KEY_MAX_STAGE, KEY_MAX_STAGE).max(axis=-2)
  maximum = jax.lax.optimization_barrier(partial).max(axis=-1, keepdims=True)
  if staged < length:
    maximum = jnp.maximum(maximum, x[..., staged:].max(axis=-1, keepdims=True))
  return maximum


# On a CPU the attention's passes hold at most this many bytes of float32 (B, heads, T, S) weights at a time
# (`attention_slice_groups`, `attention_backward_chunks`). At bench_small's 32x32 attention (5 MiB per
# (batch, head) slice) the forward pass ran fastest with 1 or 2 slices at a time, slower with 4 or all 16.
ATTENTION_BLOCK_BYTES = 16 * 2**20


@contextlib.contextmanager
def attention_in_one_block() -> Iterator[None]:
  """Inside, `qkv_attention` traces each pass as one program without loops, on a CPU too
  (ATTENTION_BLOCK_BYTES unbounded): the same arithmetic, which XLA's cost analysis, counting a loop's
  body once, then counts in full. For the benchmarks' FLOP counts only: such a program holds every
  layer's whole (B, heads, T, S) weights at once. JAX's caches are emptied on entry and exit, so that
  no trace made with the other setting is reused (`target.traced_with`)."""
  with target.traced_with(sys.modules[__name__], "ATTENTION_BLOCK_BYTES", float("inf")):
    yield


def attention_slice_groups(q_shape: tuple[int, ...], keys: int) -> int:
  """Groups of (batch, head) slices `_attention` takes one after the other: 1 off a CPU and when the
  whole float32 (B, heads, T, keys) weights fit ATTENTION_BLOCK_BYTES; else the fewest (a divisor of
  B * heads) whose groups' weights fit it, or one slice per group. q_shape: (B, T, heads, d).

  A group's weights then stay in the CPU's caches from the q k^T product through the softmax to the
  product with v, where the whole array went out to memory and back at every pass. (The backward pass
  in the same groups ran no faster in bench_small's step and planned 48 MiB more temporaries there,
  its slices' layout copies, so it keeps its blocks of query rows: docs/performance.md section 32.)"""
  batch, rows, heads, _ = q_shape
  slices, slice_bytes = batch * heads, rows * keys * 4
  if target.platform() != "cpu" or slices * slice_bytes <= ATTENTION_BLOCK_BYTES:
    return 1
  fitting = (groups for groups in range(2, slices + 1)
             if slices % groups == 0 and slices // groups * slice_bytes <= ATTENTION_BLOCK_BYTES)
  return next(fitting, slices)


def _forward_in_slice_groups(q, k, v, groups: int):
  """`_attention_slices_forward` over `groups` groups of (batch, head) slices one after the other.

  Inside a group the slices are the batch axis with one head, token arrays (slices, 1, L, d)
  (SLICES_MAJOR: a slice's rows contiguous, so that XLA:CPU's products need no transposed copies of
  the weights). Returns what `_attention_slices_forward` returns for the whole: out (B, T, heads, d),
  row maxima and sums (B, heads, T, 1)."""
  batch, _, heads, _ = q.shape

  def slices(x):  # (B, L, heads, d) -> (groups, B * heads / groups, 1, L, d)
    return jnp.moveaxis(x, 2, 1).reshape(groups, -1, 1, *x.shape[1:2], x.shape[3])

  def whole(x):  # (groups, B * heads / groups, 1, ...) -> (B, heads, ...)
    return x.reshape(batch, heads, *x.shape[3:])

  out, row_max, row_sum = jax.lax.map(lambda qkv: _attention_slices_forward(*qkv, layout=SLICES_MAJOR),
                                      (slices(q), slices(k), slices(v)))
  return jnp.moveaxis(whole(out), 1, 2), whole(row_max), whole(row_sum)


def _attention_backward(residuals, out_grad):
  q, k, v, out, row_max, row_sum = residuals
  # Tied to out_grad: otherwise XLA shares k's scaling and v's layout copies with the forward
  # pass's (and makes the zero sums below at the start of the step) and keeps them until here.
  k, v = _after(out_grad, k), _after(out_grad, v)
  chunks = attention_backward_chunks(q.shape, k.shape[1])
  rows = (q, out, out_grad, row_max, row_sum)
  if chunks == 1:
    q_grad, k_grad, v_grad = _attention_rows_backward(k, v, *rows)
  else:
    # Query rows in `chunks` blocks, one after the other: each block's (B, heads, T / chunks, S)
    # weights are recomputed, used and dropped before the next's, as flash attention does.
    def blocks(x, axis):  # (..., T, ...) -> (chunks, ..., T / chunks, ...)
      shape = x.shape[:axis] + (chunks, x.shape[axis] // chunks) + x.shape[axis + 1:]
      return jnp.moveaxis(x.reshape(shape), axis, 0)

    def block_backward(sums, block_rows):
      q_grad, k_grad, v_grad = _attention_rows_backward(k, v, *block_rows)
      return (sums[0] + k_grad, sums[1] + v_grad), q_grad

    zeros = (_after(out_grad, jnp.zeros(k.shape, jnp.float32)), _after(out_grad, jnp.zeros(v.shape, jnp.float32)))
    (k_grad, v_grad), q_grads = jax.lax.scan(
        block_backward, zeros, [blocks(x, axis) for x, axis in zip(rows, (1, 1, 1, 2, 2))])
    q_grad = jnp.moveaxis(q_grads, 0, 1).reshape(q.shape)
  return q_grad.astype(q.dtype), k_grad.astype(k.dtype), v_grad.astype(v.dtype)


def attention_backward_chunks(q_shape: tuple[int, ...], keys: int) -> int:
  """Blocks of query rows the backward pass of `_attention` takes one at a time: 1 off a CPU;
  on a CPU the fewest (a power of two dividing T) whose float32 (B, heads, T / blocks, keys)
  weights fit ATTENTION_BLOCK_BYTES. q_shape: (B, T, heads, d)."""
  batch, rows, heads, _ = q_shape
  chunks = 1
  if target.platform() == "cpu":
    while batch * heads * (rows // chunks) * keys * 4 > ATTENTION_BLOCK_BYTES and rows % (2 * chunks) == 0:
      chunks *= 2
  return chunks


def _attention_rows_backward(k, v, q, out, out_grad, row_max, row_sum):
  """Gradients of `_attention` for some of its query rows: (q's rows' gradient, these rows' parts
  of k's and v's gradients). q, out, out_grad: (B, T', heads, d); row_max, row_sum: (B, heads,
  T', 1) float32; k, v: (B, S, heads, d). The weights are recomputed from q and k after out_grad
  exists."""
  q_scaled, k_scaled, logits = _scaled_logits(_after(out_grad, q), k, TOKENS_AS_GIVEN)
  weights = jnp.exp(logits - row_max) / row_sum  # float32 (B, heads, T', S), as in the forward pass
  v_grad = jnp.einsum("bhts,bthd->bshd", weights.astype(v.dtype), out_grad)
  weights_grad = jnp.einsum("bthd,bshd->bhts", out_grad, v).astype(jnp.float32)
  # The softmax's backward: sum_s w_s g_s equals the row's (out_grad . out), a (B, T', heads) sum.
  row_dot = jnp.einsum("bthd,bthd->bht", out_grad.astype(jnp.float32), out.astype(jnp.float32))[..., None]
  logits_grad = (weights * (weights_grad - row_dot)).astype(q.dtype)
  scale = _qk_scale(q)
  q_grad = jnp.einsum("bhts,bshd->bthd", logits_grad, k_scaled) * scale
  k_grad = jnp.einsum("bhts,bthd->bshd", logits_grad, q_scaled) * scale
  return q_grad, k_grad, v_grad


_attention.defvjp(_attention_forward, _attention_backward)


def _cudnn_attention_applies(q: jax.Array) -> bool:
  """cuDNN's fused attention: GPU backend, half-precision inputs, head width a multiple of 8 up to 128.
  The compiling backend decides, not a planned platform (`target`): only XLA:GPU lowers it."""
  head = q.shape[-1]
  return (jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
          and head <= 128 and head % 8 == 0)


def split_heads(x: jax.Array, heads: int, parts: int) -> list[jax.Array]:
  """Splits fused projections laid out head-major as the reference: channel = (head, part, d).

  Args:
    x: (B, L, heads * parts * d).
  Returns:
    `parts` arrays of shape (B, L, heads, d) (e.g. q, k, v for parts=3).
  """
  b, length, width = x.shape
  x = x.reshape(b, length, heads, parts, width // (heads * parts))
  return [x[:, :, :, i] for i in range(parts)]


def avg_pool_2x(x: jax.Array) -> jax.Array:
  """2x2 average pooling with stride 2 (PyTorch AvgPool2d(2)); (B, H, W, C) -> (B, H/2, W/2, C)."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def upsample_nearest_2x(x: jax.Array) -> jax.Array:
  """Nearest-neighbour x2 upsampling; (B, H, W, C) -> (B, 2H, 2W, C)."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


@functools.cache
def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out_size, in_size) float32 weights of PyTorch's bilinear resize with align_corners=False.

  Source coordinate of output i: max((i + 0.5) * in/out - 0.5, 0); it blends pixels
  floor(src) and min(floor(src) + 1, in - 1) linearly (no antialiasing).
  """
  scale = in_size / out_size
  src = np.maximum((np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
  lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = src - lo
  weights = np.zeros((out_size, in_size), np.float64)
  rows = np.arange(out_size)
  np.add.at(weights, (rows, lo), 1.0 - frac)
  np.add.at(weights, (rows, hi), frac)
  return weights.astype(np.float32)


def resize_bilinear(x: jax.Array, height: int, width: int) -> jax.Array:
  """Bilinear resize matching torch F.interpolate(mode="bilinear", align_corners=False).

  Args:
    x: (B, h, w, C) float.
  Returns:
    (B, height, width, C) float32.
  """
  x = x.astype(jnp.float32)
  rows = jnp.asarray(bilinear_matrix(x.shape[1], height))
  cols = jnp.asarray(bilinear_matrix(x.shape[2], width))
  x = jnp.einsum("oh,bhwc->bowc", rows, x, precision=jax.lax.Precision.HIGHEST)
  return jnp.einsum("pw,bowc->bopc", cols, x, precision=jax.lax.Precision.HIGHEST)
