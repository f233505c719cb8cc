"""Named model presets and the factory `create_model(preset, rngs=..., dtype=..., **overrides)`.

| preset               | family | what                                                              | parameters    |
|----------------------|--------|-------------------------------------------------------------------|---------------|
| glide_base64         | glide  | public GLIDE (filtered) 64px base: UNet 192, text 512 x 16 layers | 385,030,726   |
| glide_upsample256    | glide  | public GLIDE (filtered) 64->256 upsampler                         | 398,361,286   |
| glide_full_base64    | glide  | 3.5B GLIDE layout: UNet 512, text 2048 wide, 24 layers, 32 heads  | 3,554,414,086 |
| piti_base64          | piti   | GLIDE base UNet + task encoder (512 wide, 8 layers, 8 heads)      | 308,728,902 + 29,286,400 (mask) |
| piti_upsample256     | piti   | GLIDE upsampler UNet + task encoder                               | 322,059,462 + 29,286,400 (mask) |
| bench_tiny           | piti   | benchmark: UNet 32 x (1,2,2,2), token width 128, 2 layers, 4 heads | 4,692,166    |
| bench_small          | piti   | benchmark: UNet 64 x (1,2,3,4), token width 256, 4 layers, 4 heads | 33,108,550   |
| tiny_text64          | glide  | CPU tests/demo: 64px, UNet 32 x (1,2), text 64 wide, 1 layer      | 4,152,902     |
| tiny_piti64          | piti   | CPU tests/demo: 64px, UNet 32 x (1,2), CNN 8..64, tokens 64 wide  | 1,036,294     |
| tiny_text_upsample64 | glide  | CPU tests: 32->64 upsampler at tiny_text64's size                 | 4,153,766     |
| tiny_piti_upsample64 | piti   | CPU tests: 32->64 upsampler at tiny_piti64's size                 | 1,037,158     |

PITI presets take `task="mask" | "sketch" | "depth"` (condition channels 3 / 1 / 6); every
condition is 256x256 (cond_size) as in PITI, giving 256 tokens. Any `ModelConfig` field can
be overridden by keyword, e.g. `create_model("piti_base64", task="sketch", dropout=0.0, rngs=...)`.
The tiny presets keep PITI's 256x256 condition and GLIDE's 128-token text context and
50257-token vocabulary, so they take the same batches as the real models; train runs set
`n_vocab` to their tokenizer's vocabulary (257 for the byte tokenizer, see
`piti_jax.train.loop.resolve_text_vocabulary`). A tiny train step compiles in about 10-40 s
on a busy 2-core CPU.
"""

import dataclasses
import typing
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from piti_jax.errors import PitiError
from piti_jax.models.layers import draw_initial_values
from piti_jax.models.piti import GlideModel, ModelConfig, PitiModel

_GLIDE_BASE = dict(family="glide", image_size=64, model_channels=192, num_res_blocks=3, channel_mult=(1, 2, 3, 4),
                   attention_ds=(2, 4, 8), num_head_channels=64, xf_width=512, xf_layers=16, xf_heads=8)
_GLIDE_UPSAMPLE = dict(_GLIDE_BASE, image_size=256, super_res=True, num_res_blocks=2,
                       channel_mult=(1, 1, 2, 2, 4, 4), attention_ds=(8, 16, 32))
_PITI_ENCODER = dict(family="piti", xf_width=512, xf_layers=8, xf_heads=8, task="mask", cond_size=256)
_TINY_UNET = dict(image_size=64, model_channels=32, num_res_blocks=1, channel_mult=(1, 2), attention_ds=(2,),
                  num_head_channels=32)

_PRESET_FIELDS: dict[str, dict[str, Any]] = {
    "glide_base64": _GLIDE_BASE,
    "glide_upsample256": _GLIDE_UPSAMPLE,
    "glide_full_base64": dict(_GLIDE_BASE, model_channels=512, xf_width=2048, xf_layers=24, xf_heads=32),
    "piti_base64": dict(_GLIDE_BASE, **_PITI_ENCODER),
    "piti_upsample256": dict(_GLIDE_UPSAMPLE, **_PITI_ENCODER),
    "bench_tiny": dict(_PITI_ENCODER, image_size=64, model_channels=32, num_res_blocks=1, channel_mult=(1, 2, 2, 2),
                       attention_ds=(4, 8), num_head_channels=32, xf_width=128, xf_layers=2, xf_heads=4),
    "bench_small": dict(_PITI_ENCODER, image_size=64, model_channels=64, num_res_blocks=2,
                        channel_mult=(1, 2, 3, 4), attention_ds=(2, 4, 8), num_head_channels=64, xf_width=256,
                        xf_layers=4, xf_heads=4),
    "tiny_text64": dict(_TINY_UNET, family="glide", xf_width=64, xf_layers=1, xf_heads=2),
    "tiny_piti64": dict(_TINY_UNET, **dict(_PITI_ENCODER, xf_width=64, xf_layers=1, xf_heads=2,
                                           cnn_hidden=(8, 16, 32, 64, 64))),
}
_PRESET_FIELDS["tiny_text_upsample64"] = dict(_PRESET_FIELDS["tiny_text64"], super_res=True)
_PRESET_FIELDS["tiny_piti_upsample64"] = dict(_PRESET_FIELDS["tiny_piti64"], super_res=True)

PRESETS: dict[str, ModelConfig] = {name: ModelConfig(name=name, **fields) for name, fields in _PRESET_FIELDS.items()}

# Every ModelConfig field but `name`, with its type (tuple for tuple[int, ...]).
_HINTS = typing.get_type_hints(ModelConfig)
FIELD_TYPES: dict[str, type] = {f.name: typing.get_origin(_HINTS[f.name]) or _HINTS[f.name]
                                for f in dataclasses.fields(ModelConfig) if f.name != "name"}


def get_config(preset: str, **overrides: Any) -> ModelConfig:
  """The ModelConfig of a preset with field overrides (lists become tuples; None keeps the preset's
  value, as a job's unset `model.overrides` entries do)."""
  if preset not in PRESETS:
    raise PitiError(f"unknown model preset {preset!r}; choose one of: {', '.join(sorted(PRESETS))}.")
  unknown = sorted(set(overrides) - set(FIELD_TYPES))
  if unknown:
    raise PitiError(f"unknown model override(s) {unknown}; valid fields: {', '.join(FIELD_TYPES)}.")
  fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items() if v is not None}
  return dataclasses.replace(PRESETS[preset], **fixed)


def config_overrides(config: ModelConfig) -> dict[str, Any]:
  """The fields in which `config` differs from its preset `config.name` (JSON-friendly)."""
  base = get_config(config.name)
  return {name: (list(value) if isinstance(value, tuple) else value)
          for name in FIELD_TYPES if (value := getattr(config, name)) != getattr(base, name)}


def _construct(config: ModelConfig, dtype: jnp.dtype, rngs: nnx.Rngs | None) -> PitiModel | GlideModel:
  model_class = PitiModel if config.family == "piti" else GlideModel
  return model_class(config, dtype=dtype, rngs=rngs)


def build_model(config: ModelConfig, *, rngs: nnx.Rngs, dtype: jnp.dtype = jnp.float32) -> PitiModel | GlideModel:
  """A freshly initialised model for `config` (params float32, compute in `dtype`).

  The model is traced abstractly, then every parameter is drawn from its `init` metadata
  (layers.Init) by one NumPy generator seeded from `rngs.params()`, in path order. Drawing
  with jax.random per parameter would compile one XLA program per parameter (minutes on a
  CPU for the real presets). Call it outside jit; the result is deterministic per key.
  """
  graphdef, state = nnx.split(abstract_model(config, dtype))
  draw_initial_values(jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, nnx.Variable)), rngs.params())
  return nnx.merge(graphdef, state)


def create_model(preset: str, *, rngs: nnx.Rngs, dtype: jnp.dtype = jnp.float32,
                 **overrides: Any) -> PitiModel | GlideModel:
  """A freshly initialised model of a named preset, e.g. create_model("piti_base64", task="sketch", rngs=nnx.Rngs(0))."""
  return build_model(get_config(preset, **overrides), rngs=rngs, dtype=dtype)


def abstract_model(config: ModelConfig, dtype: jnp.dtype = jnp.float32) -> PitiModel | GlideModel:
  """The model with ShapeDtypeStruct params (nothing allocated), e.g. to count or restore params."""
  return nnx.eval_shape(lambda: _construct(config, dtype, None))


def param_count(state: Any) -> int:
  """Total number of scalars in a (possibly abstract) params state or pytree."""
  return int(sum(np.prod(leaf.shape, dtype=np.int64) for leaf in jax.tree.leaves(state)))
