"""PITI's task encoder: condition image -> (S/16)^2 tokens plus a pooled CLS state.

Mirrors the reference `Encoder`/`CNN` (PITI text2im_model.py): `cnn.conv1..conv6`,
`cnn.norm1..norm5`, `transformer.resblocks[i]`, `final_ln`, `cls_token` (1, 1, W) and
`positional_embedding` (1, (S/16)^2 + 1, W).

CNN: conv7x7 (pad 3) -> 4 x [conv3x3 stride 2 (pad 1)] each followed by affine InstanceNorm
and LeakyReLU(0.2) (also after conv1), then conv3x3 (pad 1) to the token width, no norm.
Tokens: patch states + positional rows 1.., and the CLS token + row 0 appended LAST; after
the transformer and final LayerNorm the last state is the pooled vector.

Reference bug fixed: `cls_token` and `positional_embedding` are `torch.empty` in the
reference and never initialised; here they start as N(0, 0.01^2).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from piti_jax.errors import PitiError
from piti_jax.models.layers import Conv2d, InstanceNorm, LayerNorm, new_param, recomputed_in_backward
from piti_jax.models.text_encoder import EMBEDDING_INIT, Transformer

TASK_CHANNELS = {"mask": 3, "sketch": 1, "depth": 6}
CNN_DOWNSAMPLE = 16


class CNN(nnx.Module):
  """The reference CNN. Input (B, S, S, in_channels); output (B, S/16, S/16, out_channels) in `dtype`.

  `hidden` are the widths of conv1..conv5 (the reference: 32, 64, 128, 256, 512).
  """

  def __init__(self, in_channels: int, out_channels: int, hidden: tuple[int, ...], *, dtype: jnp.dtype,
               rngs: nnx.Rngs | None):
    self.dtype = dtype
    widths = (in_channels, *hidden)
    self.conv1 = Conv2d(widths[0], widths[1], 7, dtype=dtype, rngs=rngs)
    self.norm1 = InstanceNorm(widths[1], activation="leaky_relu", dtype=dtype)
    self.conv2 = Conv2d(widths[1], widths[2], 3, stride=2, dtype=dtype, rngs=rngs)
    self.norm2 = InstanceNorm(widths[2], activation="leaky_relu", dtype=dtype)
    self.conv3 = Conv2d(widths[2], widths[3], 3, stride=2, dtype=dtype, rngs=rngs)
    self.norm3 = InstanceNorm(widths[3], activation="leaky_relu", dtype=dtype)
    self.conv4 = Conv2d(widths[3], widths[4], 3, stride=2, dtype=dtype, rngs=rngs)
    self.norm4 = InstanceNorm(widths[4], activation="leaky_relu", dtype=dtype)
    self.conv5 = Conv2d(widths[4], widths[5], 3, stride=2, dtype=dtype, rngs=rngs)
    self.norm5 = InstanceNorm(widths[5], activation="leaky_relu", dtype=dtype)
    self.conv6 = Conv2d(widths[5], out_channels, 3, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    # The InstanceNorm cancels conv1..conv5's biases. Each norm's output is recomputed in the
    # backward pass (`AffineNorm.into`), so only the convolutions' outputs are kept.
    x = self.conv1.before_norm(x)
    for norm, conv in ((self.norm1, self.conv2), (self.norm2, self.conv3), (self.norm3, self.conv4),
                       (self.norm4, self.conv5)):
      x = norm.into(conv, x, with_bias=False)
    return self.norm5.into(self.conv6, x)


class TaskEncoder(nnx.Module):
  """PITI condition encoder (`encoder.*` in PITI's state dict).

  Args:
    in_channels: condition channels (mask 3, sketch 1, depth+normal 6).
    cond_size: condition side S (256 in PITI); S must be divisible by 16.
    width, layers, heads: transformer size (PITI: 512, 8, 8).
    cnn_hidden: widths of conv1..conv5.
    recompute: the backward pass runs the CNN again from the condition and each transformer block
      from its input (`recomputed_in_backward`) instead of keeping their activations; the CNN's maps
      (the largest at 256x256) would otherwise stay alive through the whole decoder's backward
      pass, which comes first.
  """

  def __init__(self, *, in_channels: int, cond_size: int, width: int, layers: int, heads: int,
               cnn_hidden: tuple[int, ...], recompute: bool = False, dtype: jnp.dtype, rngs: nnx.Rngs | None):
    if cond_size % CNN_DOWNSAMPLE:
      raise PitiError(f"cond_size={cond_size} must be divisible by {CNN_DOWNSAMPLE}.")
    self.in_channels = in_channels
    self.cond_size = cond_size
    num_tokens = (cond_size // CNN_DOWNSAMPLE) ** 2
    self.recompute = recompute
    self.transformer = Transformer(width, layers, heads, recompute=recompute, dtype=dtype, rngs=rngs)
    self.cnn = CNN(in_channels, width, cnn_hidden, dtype=dtype, rngs=rngs)
    self.final_ln = LayerNorm(width)
    self.cls_token = new_param(EMBEDDING_INIT, (1, 1, width), rngs, (2,))
    self.positional_embedding = new_param(EMBEDDING_INIT, (1, num_tokens + 1, width), rngs, (1, 2))

  def __call__(self, cond: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Encodes a condition image.

    Args:
      cond: float (B, S, S, in_channels) in [-1, 1].
    Returns:
      (tokens float32 (B, (S/16)^2, W), pooled float32 (B, W) = final CLS state).
    """
    expected = (self.cond_size, self.cond_size, self.in_channels)
    if cond.ndim != 4 or tuple(cond.shape[1:]) != expected:
      raise PitiError(f"condition must have shape (B, {', '.join(map(str, expected))}) (NHWC); got "
                      f"{tuple(cond.shape)}. Resize the condition to {self.cond_size}x{self.cond_size} "
                      "or pick the preset/task with matching channels.")
    features = recomputed_in_backward(self.cnn, cond) if self.recompute else self.cnn(cond)
    b, h, w, c = features.shape
    positional = self.positional_embedding[...]
    x = features.reshape(b, h * w, c).astype(jnp.float32) + positional[:, 1:]
    cls = jnp.broadcast_to(self.cls_token[...] + positional[:, :1], (b, 1, c))
    x = jnp.concatenate([x, cls], axis=1)
    states = self.final_ln(self.transformer(x))
    return states[:, :-1], states[:, -1]
