"""PyTorch GLIDE/PITI state dict -> the NNX parameter tree of a preset (pure NumPy, no torch).

The NNX modules mirror the reference module for module (see `piti_jax.models.unet`), so a
PyTorch key maps to a parameter path by a table of renames plus a layout change:

  PyTorch key (PITI layout)                      parameter path                             array
  decoder.input_blocks.1.0.in_layers.2.weight -> decoder.input_blocks.1.0.in_layers.2.kernel  OIHW -> HWIO
  decoder.input_blocks.4.1.qkv.weight         -> ....qkv.kernel     Conv1d k=1 (out, in, 1) -> (in, out)
  decoder.time_embed.0.weight                 -> ....time_embed.0.kernel   Linear (out, in) -> (in, out)
  *.norm*.weight, ln_*.weight, final_ln.weight -> ....scale                        unchanged
  token_embedding.weight                      -> encoder.token_embedding.embedding  unchanged
  *.bias, cls_token, positional_embedding, padding_embedding -> same name         unchanged

Parameter paths are the "."-joined nnx paths of `piti_jax.models.checkpoint.expected_shapes`
(list indices in decimal); `piti_jax.models` documents the same table from the model side.

Two source layouts exist. A PITI checkpoint (`base_mask.pt`, ...) prefixes every key with
`encoder.` or `decoder.`. A GLIDE checkpoint (`base.pt`, `upsample.pt`) has the UNet and
`transformer_proj` at the top level and its text side under `transformer.`, `token_embedding`,
`positional_embedding`, `padding_embedding` and `final_ln.`. For a GLIDE preset the text side
becomes `encoder.*`; for a PITI preset it is dropped (as the reference does) and the task
encoder is left to fresh initialisation.
"""

import dataclasses
from collections.abc import Mapping

import numpy as np

from piti_jax.errors import PitiError

TEXT_SIDE_ROOTS = ("transformer", "token_embedding", "positional_embedding", "padding_embedding", "final_ln")
WEIGHT_LEAVES = ("kernel", "scale", "embedding")  # what a PyTorch `.weight` can become
SOURCE_PITI = "piti"
SOURCE_GLIDE = "glide"

Shapes = dict[str, tuple[int, ...]]  # "decoder.out.2.kernel" -> shape


@dataclasses.dataclass
class ConversionPlan:
  """Which checkpoint key feeds which parameter path (names and shapes checked, no values).

  sources: {parameter path: PyTorch key}. fresh, dropped, source_layout: as in `Conversion`.
  """

  sources: dict[str, str]
  fresh: list[str]
  dropped: list[str]
  source_layout: str


@dataclasses.dataclass
class Conversion:
  """Result of mapping a state dict onto a model's parameter tree.

  params: {"decoder.out.2.kernel": float32 array in NNX layout, ...} for every converted parameter.
  fresh: NNX paths that the checkpoint does not provide and that keep their fresh initialisation
    (the task encoder when a GLIDE checkpoint initialises a PITI model); empty otherwise.
  dropped: source keys deliberately not used (GLIDE's text side for a PITI model).
  source_layout: "piti" or "glide".
  """

  params: dict[str, np.ndarray]
  fresh: list[str]
  dropped: list[str]
  source_layout: str


def detect_source_layout(keys: list[str]) -> str:
  """"piti" when every key starts with `encoder.`/`decoder.`, "glide" when none does."""
  prefixed = [k.split(".", 1)[0] in ("encoder", "decoder") for k in keys]
  if keys and all(prefixed):
    return SOURCE_PITI
  if not any(prefixed):
    return SOURCE_GLIDE
  mixed = [k for k, p in zip(keys, prefixed) if p][:3]
  raise PitiError(f"the checkpoint mixes PITI-style keys ({', '.join(mixed)}, ...) with top-level GLIDE keys; "
                  "pass an unmodified GLIDE (base.pt/upsample.pt) or PITI (base_*.pt/upsample_*.pt) state dict.")


def is_text_side_key(key: str) -> bool:
  """True for GLIDE's text-encoder keys (not `transformer_proj`, which belongs to the UNet)."""
  return key.split(".", 1)[0] in TEXT_SIDE_ROOTS


def _model_key(source_key: str, layout: str) -> str:
  """Source key in PITI's `encoder.`/`decoder.` naming (GLIDE text side -> `encoder.`)."""
  if layout == SOURCE_PITI:
    return source_key
  return ("encoder." if is_text_side_key(source_key) else "decoder.") + source_key


def torch_key_for_path(path: str) -> str:
  """Expected PyTorch key (PITI naming) of a parameter path: "a.0.kernel" -> "a.0.weight"."""
  parent, _, leaf = path.rpartition(".")
  name = "weight" if leaf in WEIGHT_LEAVES else leaf
  return f"{parent}.{name}" if parent else name


def to_nnx_layout(value: np.ndarray, leaf: str, target_shape: tuple[int, ...]) -> np.ndarray:
  """Moves one PyTorch array into the NNX layout of a parameter leaf.

  kernel: Linear (out, in) -> (in, out); Conv1d kernel 1 (out, in, 1) -> (in, out);
  Conv2d (out, in, kh, kw) -> (kh, kw, in, out). Other leaves are unchanged. A singleton
  mismatch such as GLIDE-style (L, W) vs (1, L, W) tables is not reshaped: it is a mismatch.
  """
  if leaf == "kernel":
    if value.ndim == 2:
      return value.T
    if value.ndim == 3 and value.shape[-1] == 1 and len(target_shape) == 2:
      return value[:, :, 0].T
    if value.ndim == 4:
      return value.transpose(2, 3, 1, 0)
  return value


def _format_problems(title: str, items: list[str], limit: int = 40) -> str:
  shown = items[:limit]
  more = f"\n  ... and {len(items) - limit} more" if len(items) > limit else ""
  return f"{title} ({len(items)}):\n  " + "\n  ".join(shown) + more


def plan_conversion(source_shapes: Mapping[str, tuple[int, ...]], target_shapes: Shapes, *,
                    preset: str, family: str) -> ConversionPlan:
  """Matches checkpoint keys to a model's parameter paths by names and shapes alone.

  Args:
    source_shapes: {PyTorch key: shape in PyTorch layout} of the checkpoint.
    target_shapes: {parameter path "a.b.kernel": shape} of every parameter of the target model.
    preset: the target preset's name (for messages).
    family: "piti" or "glide" (the target model's family).
  Returns:
    A `ConversionPlan` whose `sources` cover every target path except `fresh`.
  Raises:
    PitiError naming every missing key, unexpected key and shape mismatch.
  """
  keys = list(source_shapes)
  layout = detect_source_layout(keys)
  if layout == SOURCE_PITI and family == "glide":
    raise PitiError(f"this is a PITI checkpoint (encoder./decoder. keys) but preset {preset!r} is a GLIDE "
                    "text-to-image model; convert it with a piti_* preset.")
  glide_into_piti = layout == SOURCE_GLIDE and family == "piti"

  expected = {torch_key_for_path(path): path for path in target_shapes}
  if len(expected) != len(target_shapes):
    raise PitiError(f"preset {preset!r} has parameters whose PyTorch names collide; this model cannot be converted.")
  dropped = [k for k in keys if glide_into_piti and is_text_side_key(k)]
  used = {_model_key(k, layout): k for k in keys if not (glide_into_piti and is_text_side_key(k))}

  fresh_roots = ("encoder",) if glide_into_piti else ()
  missing = [key for key, path in expected.items() if key not in used and path.split(".")[0] not in fresh_roots]
  unexpected = [source for model_key, source in used.items() if model_key not in expected]

  sources: dict[str, str] = {}
  mismatched = []
  for model_key, source_key in used.items():
    if model_key not in expected:
      continue
    path = expected[model_key]
    shape = tuple(source_shapes[source_key])
    layout_view = np.broadcast_to(np.zeros((), np.float32), shape)  # shape only, no memory
    converted = to_nnx_layout(layout_view, path.rsplit(".", 1)[-1], target_shapes[path]).shape
    if converted != tuple(target_shapes[path]):
      mismatched.append(f"{source_key}: checkpoint shape {shape} (-> {converted}), "
                        f"model parameter {path} has shape {tuple(target_shapes[path])}")
      continue
    sources[path] = source_key

  problems = []
  if missing:
    problems.append(_format_problems("missing keys (the model needs them, the checkpoint lacks them)", missing))
  if unexpected:
    problems.append(_format_problems("unexpected keys (in the checkpoint, not in the model)", unexpected))
  if mismatched:
    problems.append(_format_problems("shape mismatches", mismatched))
  if problems:
    raise PitiError(f"the checkpoint does not fit preset {preset!r} (layout: {layout}):\n" + "\n".join(problems)
                    + "\nPick the preset (and --task) the checkpoint was trained with; nothing was written.")
  fresh = sorted(path for path in target_shapes if path not in sources)
  return ConversionPlan(sources=sources, fresh=fresh, dropped=dropped, source_layout=layout)


def convert_state_dict(state_dict: Mapping[str, np.ndarray], target_shapes: Shapes, *,
                       preset: str, family: str) -> Conversion:
  """Maps every tensor of a GLIDE or PITI state dict onto a model's parameter paths.

  Args:
    state_dict: {PyTorch key: array in PyTorch layout}, e.g. from `piti_jax.pretrained.load_torch_state_dict`.
    target_shapes, preset, family: as for `plan_conversion`.
  Returns:
    A `Conversion` with float32 C-contiguous arrays in NNX layout for every planned path.
  Raises:
    PitiError naming every missing key, unexpected key and shape mismatch (see `plan_conversion`).
  """
  plan = plan_conversion({key: np.shape(value) for key, value in state_dict.items()}, target_shapes,
                         preset=preset, family=family)
  params = {path: np.ascontiguousarray(to_nnx_layout(np.asarray(state_dict[key]), path.rsplit(".", 1)[-1],
                                                     target_shapes[path]), dtype=np.float32)
            for path, key in plan.sources.items()}
  return Conversion(params=params, fresh=plan.fresh, dropped=plan.dropped, source_layout=plan.source_layout)
