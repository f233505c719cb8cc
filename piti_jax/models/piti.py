"""Top-level diffusion models: PITI (task encoder + UNet) and GLIDE text-to-image (text encoder + UNet).

Both share one interface:
  model.encode(cond) -> (tokens float32 (B, N, W), pooled float32 (B, W))
  model(x_t, t, cond=None, *, encoded=None, low_res=None, train=False, rngs=None) -> float32 (B, H, W, 6)
Pass either `cond` or `encoded = model.encode(cond)`; the latter lets a sampler run the encoder
once per sample instead of once per step. Submodules are `encoder` and `decoder`, mirroring the
reference state-dict prefixes. Models hold no RNG state: dropout keys come through `rngs`
(a "dropout" stream) and dropout is active iff `train`.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from piti_jax.errors import PitiError
from piti_jax.models.task_encoder import TASK_CHANNELS, TaskEncoder
from piti_jax.models.text_encoder import TextEncoder
from piti_jax.models.unet import UNet

FAMILIES = ("piti", "glide")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything that determines a model's architecture (see `presets.PRESETS`).

  Decoder: image_size, super_res (adds the low-res input), model_channels, num_res_blocks,
  channel_mult, attention_ds (downsample factors with attention), num_head_channels, dropout,
  learn_sigma (6 output channels instead of 3), remat (run each UNet block again in the
  backward pass from its inputs, `layers.recomputed_in_backward`, instead of keeping its
  activations: fewer temporaries on every backend for one more forward pass of the UNet, same
  results; on a CPU its larger program can outweigh them at small sizes; docs/performance.md
  section 24).
  Condition encoder: xf_width, xf_layers, xf_heads; for family "glide" also text_ctx, n_vocab;
  for family "piti" task ("mask" | "sketch" | "depth"), cond_size, cnn_hidden;
  recompute_encoder (run the encoder's CNN and each transformer block again in the backward
  pass instead of keeping their activations, the same mechanism: fewer temporaries for one more
  forward pass of the encoder; docs/performance.md section 23 measures it).
  `name` is the preset the config came from (used by checkpoints to store only overrides).
  """

  name: str
  family: str
  image_size: int = 64
  super_res: bool = False
  model_channels: int = 192
  num_res_blocks: int = 3
  channel_mult: tuple[int, ...] = (1, 2, 3, 4)
  attention_ds: tuple[int, ...] = (2, 4, 8)
  num_head_channels: int = 64
  dropout: float = 0.1
  learn_sigma: bool = True
  remat: bool = False
  recompute_encoder: bool = False
  xf_width: int = 512
  xf_layers: int = 16
  xf_heads: int = 8
  text_ctx: int = 128
  n_vocab: int = 50257
  task: str = "mask"
  cond_size: int = 256
  cnn_hidden: tuple[int, ...] = (32, 64, 128, 256, 512)

  def __post_init__(self):
    if self.family not in FAMILIES:
      raise PitiError(f"model family {self.family!r} is unknown; use one of {FAMILIES}.")
    if self.family == "piti" and self.task not in TASK_CHANNELS:
      raise PitiError(f"task {self.task!r} is unknown; use one of {sorted(TASK_CHANNELS)}.")
    if self.image_size % 2 ** (len(self.channel_mult) - 1):
      raise PitiError(f"image_size={self.image_size} is not divisible by 2^(levels-1) for channel_mult="
                      f"{self.channel_mult}; change image_size or channel_mult.")
    if len(self.cnn_hidden) != 5:
      raise PitiError(f"cnn_hidden must list the 5 widths of conv1..conv5, got {self.cnn_hidden}.")

  @property
  def out_channels(self) -> int:
    return 6 if self.learn_sigma else 3

  @property
  def cond_channels(self) -> int:
    """Channels of a PITI condition image for this task."""
    return TASK_CHANNELS[self.task]


def build_decoder(config: ModelConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs | None) -> UNet:
  """The UNet of a config."""
  return UNet(in_channels=3, model_channels=config.model_channels, out_channels=config.out_channels,
              num_res_blocks=config.num_res_blocks, channel_mult=tuple(config.channel_mult),
              attention_ds=tuple(config.attention_ds), num_head_channels=config.num_head_channels,
              encoder_channels=config.xf_width, dropout=config.dropout, super_res=config.super_res,
              remat=config.remat, dtype=dtype, rngs=rngs)


class _EncoderDecoderModel(nnx.Module):
  """Shared call logic: encode the condition (or take it precomputed), then run the decoder.

  Subclasses build `config`, `encoder` and `decoder` and define `encode(cond)`.
  """

  config: ModelConfig
  encoder: Any
  decoder: UNet

  def __call__(self, x_t: jax.Array, t: jax.Array, cond: Any = None, *,
               encoded: tuple[jax.Array, jax.Array] | None = None, low_res: jax.Array | None = None,
               train: bool = False, rngs: nnx.Rngs | None = None) -> jax.Array:
    """Model output for noisy images.

    Args:
      x_t: (B, H, W, 3) noisy images.
      t: (B,) (or scalar) integer or float timesteps on the reference's 0..1000 scale.
      cond: the raw condition (see `encode`); give exactly one of cond / encoded.
      encoded: `encode(cond)`, computed once and reused.
      low_res: (B, h, w, 3) low-resolution images for super-resolution models, else None.
      train: enables dropout; then `rngs` must provide a "dropout" stream.
    Returns:
      float32 (B, H, W, 6): [eps, v] for learned-range variance (3 channels without learn_sigma).
    """
    if (cond is None) == (encoded is None):
      raise PitiError("pass exactly one of `cond` (the raw condition) or `encoded` (= model.encode(cond)).")
    if train and self.config.dropout > 0 and rngs is None:
      raise PitiError("train=True applies dropout: pass rngs=nnx.Rngs(dropout=key).")
    size = self.config.image_size
    if x_t.ndim != 4 or x_t.shape[1:] != (size, size, 3):
      raise PitiError(f"x_t must have shape (B, {size}, {size}, 3) for preset {self.config.name!r}; "
                      f"got {tuple(x_t.shape)}.")
    t = jnp.asarray(t)
    if t.ndim == 0:
      t = jnp.broadcast_to(t, x_t.shape[:1])
    tokens, pooled = self.encode(cond) if encoded is None else encoded
    return self.decoder(x_t, t, tokens, pooled, low_res=low_res, train=train, rngs=rngs)


class PitiModel(_EncoderDecoderModel):
  """PITI: `encoder` (TaskEncoder) + `decoder` (UNet), base or super-resolution."""

  def __init__(self, config: ModelConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs | None):
    if config.family != "piti":
      raise PitiError(f"PitiModel needs a 'piti' family config, got {config.family!r}.")
    self.config = config
    self.encoder = TaskEncoder(in_channels=config.cond_channels, cond_size=config.cond_size,
                               width=config.xf_width, layers=config.xf_layers, heads=config.xf_heads,
                               cnn_hidden=tuple(config.cnn_hidden), recompute=config.recompute_encoder,
                               dtype=dtype, rngs=rngs)
    self.decoder = build_decoder(config, dtype=dtype, rngs=rngs)

  def encode(self, cond: jax.Array) -> tuple[jax.Array, jax.Array]:
    """cond: float (B, cond_size, cond_size, C_task) in [-1, 1] -> (tokens (B, N, W), pooled (B, W))."""
    return self.encoder(cond)


class GlideModel(_EncoderDecoderModel):
  """GLIDE text-to-image: `encoder` (TextEncoder) + `decoder` (UNet), base or super-resolution."""

  def __init__(self, config: ModelConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs | None):
    if config.family != "glide":
      raise PitiError(f"GlideModel needs a 'glide' family config, got {config.family!r}.")
    self.config = config
    self.encoder = TextEncoder(vocab=config.n_vocab, text_ctx=config.text_ctx, width=config.xf_width,
                               layers=config.xf_layers, heads=config.xf_heads, recompute=config.recompute_encoder,
                               dtype=dtype, rngs=rngs)
    self.decoder = build_decoder(config, dtype=dtype, rngs=rngs)

  def encode(self, cond: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """cond: {"tokens": int32 (B, L), "mask": bool (B, L)} -> (states (B, L, W), pooled (B, W))."""
    if not isinstance(cond, dict) or not {"tokens", "mask"} <= set(cond):
      raise PitiError("a GLIDE text condition is a dict {'tokens': int32 (B, L), 'mask': bool (B, L)}.")
    return self.encoder(cond["tokens"], cond["mask"])
