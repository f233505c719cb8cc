"""GLIDE/ADM UNet decoder conditioned on encoder tokens and a pooled vector.

The module tree mirrors the reference (`UNetModel` + `Text2ImUNet` in GLIDE/PITI) index for
index, so a PyTorch key `input_blocks.5.1.qkv.weight` is the nnx path
`('input_blocks', 5, 1, 'qkv', 'kernel')`. Parameter-less reference layers (SiLU, Identity,
Dropout) occupy their `nn.Sequential` index here too. Always as in every GLIDE/PITI model:
scale-shift norm in the ResBlocks and ResBlocks that resample (avg-pool down, nearest up).

Conditioning:
- emb = time_embed(timestep_embedding(t)) + transformer_proj(pooled), all float32;
- every AttentionBlock projects the condition tokens through `encoder_kv` (the reference's
  kernel-1 Conv1d) and prepends them, per head, to the image's own keys and values.
"""

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from piti_jax.errors import PitiError
from piti_jax.models.dropout import Dropout
from piti_jax.models.layers import (Conv2d, Dense, GroupNorm32, avg_pool_2x, identity, qkv_attention,
                                    recomputed_in_backward, resize_bilinear, split_heads, timestep_embedding,
                                    upsample_nearest_2x)


class ResBlock(nnx.Module):
  """ADM residual block with scale-shift norm, dropout and optional resampling.

  Layers (reference indices): in_layers = [GroupNorm+SiLU, Identity, conv3x3];
  emb_layers = [SiLU, Linear(emb -> 2*out)]; out_layers = [GroupNorm, SiLU, Dropout,
  conv3x3 (zero init)], where the out-norm, the timestep's scale-shift and the SiLU run as
  one pass (`GroupNorm32.modulated_silu`; index 1 holds no layer of its own);
  skip_connection = conv1x1 when the width changes, else identity.
  With `resample` "down"/"up", h (after the in-norm) and the skip input x are both
  avg-pooled / nearest-upsampled x2 before the in-conv, as in the reference.
  Input (B, H, W, channels), emb float32 (B, emb_channels); output (B, H', W', out) in `dtype`.
  """

  def __init__(self, channels: int, emb_channels: int, out_channels: int, dropout: float, *,
               dtype: jnp.dtype, rngs: nnx.Rngs | None, resample: str | None = None):
    self.resample = {None: identity, "down": avg_pool_2x, "up": upsample_nearest_2x}[resample]
    self.in_layers = nnx.List([
        GroupNorm32(channels, swish=True, dtype=dtype),
        identity,
        Conv2d(channels, out_channels, 3, dtype=dtype, rngs=rngs),
    ])
    self.emb_layers = nnx.List([jax.nn.silu, Dense(emb_channels, 2 * out_channels, dtype=dtype, rngs=rngs)])
    self.out_layers = nnx.List([
        GroupNorm32(out_channels, swish=False, dtype=dtype),
        identity,  # the SiLU is applied with the scale-shift inside `GroupNorm32.modulated_silu`
        Dropout(dropout),
        Conv2d(out_channels, out_channels, 3, dtype=dtype, rngs=rngs, zero_init=True),
    ])
    if out_channels == channels:
      self.skip_connection = identity
    else:
      self.skip_connection = Conv2d(channels, out_channels, 1, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, emb: jax.Array, *, train: bool, rngs: nnx.Rngs | None,
               joined: jax.Array | None = None) -> jax.Array:
    """x (B, H, W, C1); with `joined` (B, H, W, C2) the block's input is their concatenation
    (the reference's torch.cat of an output block's input with its skip), C1 + C2 = channels."""
    # The in-norm's output (the in-convolution's input) is recomputed in the backward pass
    # (`AffineNorm.into`); in_layers[1] is the identity. The out-norm's is not: with the dropout
    # between, it cost more time than it saved memory (docs/performance.md, section 19). The
    # concatenation with `joined` is recomputed as well, for the in-norm and the skip convolution:
    # x and joined are kept anyway (joined for the backward pass of the input block after it),
    # their copy need not be (section 26).
    parts = (x,) if joined is None else (x, joined)
    h = self.in_layers[0].into(self.in_layers[2], *parts, then=self.resample)
    emb_out = self.emb_layers[1](self.emb_layers[0](emb))
    scale, shift = jnp.split(emb_out, 2, axis=-1)
    h = self.out_layers[0].modulated_silu(h, scale, shift)
    h = self.out_layers[2](h, deterministic=not train, rngs=rngs)
    h = self.out_layers[3](h)
    if isinstance(self.skip_connection, Conv2d):  # the 1x1 convolution's input recomputed as well
      skip = self.skip_connection.recomputing(self._resampled_input, *parts)
    else:
      skip = self._resampled_input(*parts)
    return skip + h

  def _resampled_input(self, *parts: jax.Array) -> jax.Array:
    """The block's input (the parts concatenated along channels), resampled: (B, H', W', channels)."""
    return self.resample(jnp.concatenate(parts, axis=-1))


class AttentionBlock(nnx.Module):
  """Self-attention over the image positions with the condition tokens as extra keys/values.

  norm = GroupNorm; qkv = Linear(C -> 3C) laid out (head, [q,k,v], d); encoder_kv =
  Linear(encoder_channels -> 2C) laid out (head, [k,v], d); proj_out = Linear(C -> C), zero init.
  Keys/values per head are [encoder tokens ; image positions]; heads = C // head_channels.
  Input x (B, H, W, C), tokens (B, N, encoder_channels); output (B, H, W, C) in `dtype`.
  """

  def __init__(self, channels: int, head_channels: int, encoder_channels: int, *, dtype: jnp.dtype,
               rngs: nnx.Rngs | None):
    if channels % head_channels:
      raise PitiError(f"attention width {channels} is not divisible by num_head_channels={head_channels}; "
                      "choose num_head_channels dividing every attention level's width.")
    self.num_heads = channels // head_channels
    self.norm = GroupNorm32(channels, swish=False, dtype=dtype)
    self.qkv = Dense(channels, 3 * channels, dtype=dtype, rngs=rngs)
    self.encoder_kv = Dense(encoder_channels, 2 * channels, dtype=dtype, rngs=rngs)
    self.proj_out = Dense(channels, channels, dtype=dtype, rngs=rngs, zero_init=True)

  def __call__(self, x: jax.Array, tokens: jax.Array) -> jax.Array:
    b, height, width, c = x.shape
    # The norm's output is recomputed in the backward pass (`AffineNorm.into`), not kept.
    qkv = self.norm.into(self.qkv, x.reshape(b, height * width, c))
    q, k, v = split_heads(qkv, self.num_heads, 3)
    ek, ev = split_heads(self.encoder_kv(tokens), self.num_heads, 2)
    k = jnp.concatenate([ek, k], axis=1)
    v = jnp.concatenate([ev, v], axis=1)
    h = qkv_attention(q, k, v).reshape(b, height * width, c)
    return x + self.proj_out(h).reshape(b, height, width, c)


def _apply_block(block: nnx.List, h: jax.Array, emb: jax.Array, tokens: jax.Array, joined: jax.Array | None = None, *,
                 rngs: nnx.Rngs | None = None, train: bool) -> jax.Array:
  """Runs one reference `TimestepEmbedSequential`: ResBlocks get emb, attention gets tokens.

  `joined` (an output block's skip input) goes to the first layer, a ResBlock, which reads
  h and joined concatenated along channels."""
  for layer in block:
    if isinstance(layer, ResBlock):
      h = layer(h, emb, train=train, rngs=rngs, joined=joined)
      joined = None
    elif isinstance(layer, AttentionBlock):
      h = layer(h, tokens)
    else:
      h = layer(h)
  return h


class UNet(nnx.Module):
  """The GLIDE/PITI diffusion decoder (`decoder.*` in PITI's state dict).

  Args:
    in_channels: image channels (3); a super-resolution UNet takes 2*in_channels internally.
    model_channels: base width; the time embedding is 4*model_channels wide.
    out_channels: 6 for learned-range variance ([eps, v]), 3 otherwise.
    num_res_blocks: ResBlocks per level on the way down (one more per level on the way up).
    channel_mult: width multiplier per level.
    attention_ds: downsample factors (1, 2, 4, ...) at which attention blocks are added.
    num_head_channels: channels per attention head.
    encoder_channels: width of the condition tokens and of the pooled vector.
    dropout: ResBlock dropout rate (active only with train=True).
    super_res: concatenate the bilinearly resized `low_res` image to the input.
    remat: run each block again in the backward pass from its inputs (`recomputed_in_backward`)
      instead of keeping its activations: one more forward pass of the body for only the blocks'
      inputs kept between the passes (the same values and dropout masks; gradients up to rounding).
    dtype: compute dtype of the body; the embedding path and the output head are float32.
  """

  def __init__(self, *, in_channels: int, model_channels: int, out_channels: int, num_res_blocks: int,
               channel_mult: tuple[int, ...], attention_ds: tuple[int, ...], num_head_channels: int,
               encoder_channels: int, dropout: float, super_res: bool, remat: bool, dtype: jnp.dtype,
               rngs: nnx.Rngs | None):
    self.model_channels = model_channels
    self.super_res = super_res
    self.remat = remat
    self.dtype = dtype
    emb_dim = 4 * model_channels
    self.time_embed = nnx.List([
        Dense(model_channels, emb_dim, dtype=jnp.float32, rngs=rngs),
        jax.nn.silu,
        Dense(emb_dim, emb_dim, dtype=jnp.float32, rngs=rngs),
    ])

    def res_block(ch_in: int, ch_out: int, resample: str | None = None) -> ResBlock:
      return ResBlock(ch_in, emb_dim, ch_out, dropout, dtype=dtype, rngs=rngs, resample=resample)

    def attention(ch: int) -> AttentionBlock:
      return AttentionBlock(ch, num_head_channels, encoder_channels, dtype=dtype, rngs=rngs)

    ch = input_ch = channel_mult[0] * model_channels
    first_in = 2 * in_channels if super_res else in_channels
    input_blocks = [nnx.List([Conv2d(first_in, ch, 3, dtype=dtype, rngs=rngs)])]
    skip_channels = [ch]
    ds = 1
    for level, mult in enumerate(channel_mult):
      for _ in range(num_res_blocks):
        layers = [res_block(ch, mult * model_channels)]
        ch = mult * model_channels
        if ds in attention_ds:
          layers.append(attention(ch))
        input_blocks.append(nnx.List(layers))
        skip_channels.append(ch)
      if level != len(channel_mult) - 1:
        input_blocks.append(nnx.List([res_block(ch, ch, "down")]))
        skip_channels.append(ch)
        ds *= 2
    self.input_blocks = nnx.List(input_blocks)
    self.middle_block = nnx.List([res_block(ch, ch), attention(ch), res_block(ch, ch)])

    output_blocks = []
    for level, mult in reversed(list(enumerate(channel_mult))):
      for i in range(num_res_blocks + 1):
        layers = [res_block(ch + skip_channels.pop(), mult * model_channels)]
        ch = mult * model_channels
        if ds in attention_ds:
          layers.append(attention(ch))
        if level and i == num_res_blocks:
          layers.append(res_block(ch, ch, "up"))
          ds //= 2
        output_blocks.append(nnx.List(layers))
    self.output_blocks = nnx.List(output_blocks)
    self.out = nnx.List([
        GroupNorm32(ch, swish=True, dtype=jnp.float32),
        identity,
        Conv2d(input_ch, out_channels, 3, dtype=jnp.float32, rngs=rngs, zero_init=True),
    ])
    self.transformer_proj = Dense(encoder_channels, emb_dim, dtype=jnp.float32, rngs=rngs)

  def __call__(self, x: jax.Array, t: jax.Array, tokens: jax.Array, pooled: jax.Array, *,
               low_res: jax.Array | None = None, train: bool = False,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    """Predicts the model output for noisy images.

    Args:
      x: (B, H, W, in_channels) noisy images.
      t: (B,) integer or float timesteps (the reference's 0..1000 scale).
      tokens: (B, N, encoder_channels) condition tokens.
      pooled: (B, encoder_channels) pooled condition vector.
      low_res: (B, h, w, in_channels) low-resolution image, required iff super_res.
      train: enable dropout (then `rngs` needs a "dropout" stream).
    Returns:
      float32 (B, H, W, out_channels).
    """
    if self.super_res:
      if low_res is None:
        raise PitiError("this is a super-resolution model: pass low_res=(B, h, w, 3) images in [-1, 1].")
      x = jnp.concatenate([x.astype(jnp.float32), resize_bilinear(low_res, x.shape[1], x.shape[2])], axis=-1)
    elif low_res is not None:
      raise PitiError("low_res was given to a base (non super-resolution) model; drop it or use an upsampler preset.")
    emb = self.time_embed[2](self.time_embed[1](self.time_embed[0](timestep_embedding(t, self.model_channels))))
    emb = emb + self.transformer_proj(pooled)

    def run_block(block: nnx.List, h: jax.Array, joined: jax.Array | None = None) -> jax.Array:
      inputs = (h, emb, tokens) if joined is None else (h, emb, tokens, joined)
      if not self.remat:
        return _apply_block(block, *inputs, rngs=rngs, train=train)
      return recomputed_in_backward(block, *inputs, rngs=rngs if train else None,
                                    function=functools.partial(_apply_block, train=train))

    h = x.astype(self.dtype)
    skips = []
    for block in self.input_blocks:
      h = run_block(block, h)
      skips.append(h)
    h = run_block(self.middle_block, h)
    for block in self.output_blocks:
      h = run_block(block, h, skips.pop())
    h = h.astype(jnp.float32)
    return self.out[2](self.out[1](self.out[0](h)))
