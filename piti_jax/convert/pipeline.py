"""Converting a state dict into a model checkpoint (`piti_jax.models.checkpoint` format).

`convert_to_checkpoint` is the whole import: map every tensor (`mapping.convert_state_dict`),
give any parameter the source lacks by design (the task encoder when a GLIDE checkpoint
initialises a PITI model) its fresh initialisation, and save. Validation happens before
anything is written, and the checkpoint writer stages into DIR.tmp and renames, so a failed
conversion leaves no output directory behind.
"""

import dataclasses
from collections.abc import Mapping

import numpy as np
from flax import nnx

from piti_jax.convert.mapping import SOURCE_PITI, Conversion, convert_state_dict, detect_source_layout
from piti_jax.errors import PitiError
from piti_jax.param_paths import flatten, unflatten
from piti_jax.models import checkpoint as model_checkpoint
from piti_jax.models.piti import ModelConfig
from piti_jax.models.presets import build_model, config_overrides, get_config
from piti_jax.models.task_encoder import TASK_CHANNELS

PITI_FIRST_CONV = "encoder.cnn.conv1.weight"


@dataclasses.dataclass
class ImportReport:
  """What a conversion did: counts for the user and the paths left freshly initialised."""

  preset: str
  overrides: dict
  task: str | None
  source_layout: str
  converted_tensors: int
  converted_parameters: int
  dropped_keys: list[str]
  fresh_paths: list[str]
  fresh_parameters: int

  def summary(self) -> str:
    task = f", task {self.task}" if self.task else ""
    lines = [f"preset {self.preset}{task}, overrides {self.overrides}",
             f"source layout: {self.source_layout}; converted {self.converted_tensors} tensors "
             f"({self.converted_parameters:,} parameters)"]
    if self.dropped_keys:
      lines.append(f"dropped {len(self.dropped_keys)} GLIDE text-side tensors (transformer.*, token/positional/"
                   "padding embeddings, final_ln)")
    if self.fresh_paths:
      lines.append(f"freshly initialised {len(self.fresh_paths)} tensors ({self.fresh_parameters:,} parameters), "
                   "not in the checkpoint:")
      lines += [f"  {path}" for path in self.fresh_paths]
    return "\n".join(lines)


def infer_task(state_dict: Mapping[str, np.ndarray]) -> str | None:
  """The PITI task of a PITI-layout state dict from its first conv's input channels, else None."""
  if detect_source_layout(list(state_dict)) != SOURCE_PITI or PITI_FIRST_CONV not in state_dict:
    return None
  channels = np.shape(state_dict[PITI_FIRST_CONV])[1]
  by_channels = {c: task for task, c in TASK_CHANNELS.items()}
  if channels not in by_channels:
    raise PitiError(f"{PITI_FIRST_CONV} has {channels} input channels; PITI tasks take "
                    f"{', '.join(f'{t} {c}' for t, c in TASK_CHANNELS.items())}.")
  return by_channels[channels]


def resolve_config(preset: str, state_dict: Mapping[str, np.ndarray], task: str | None,
                   overrides: Mapping | None = None) -> ModelConfig:
  """The target architecture: the preset, `overrides`, and the task (given or inferred)."""
  overrides = dict(overrides or {})
  config = get_config(preset, **overrides)
  if config.family == "piti":
    task = task or infer_task(state_dict)
    if task is not None:
      config = get_config(preset, **dict(overrides, task=task))
  elif task is not None:
    raise PitiError(f"--task applies to PITI presets only; {preset!r} is a GLIDE text-to-image model.")
  return config


def fresh_values(config: ModelConfig, paths: list[str], seed: int) -> dict[str, np.ndarray]:
  """Freshly initialised values of `paths` (the model's own initialisers, nnx.Rngs(seed))."""
  model = build_model(config, rngs=nnx.Rngs(seed))
  flat = flatten(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  return {path: np.asarray(flat[path], np.float32) for path in paths}


def import_state_dict(state_dict: Mapping[str, np.ndarray], config: ModelConfig,
                      *, seed: int = 0) -> tuple[dict, Conversion]:
  """(complete nested param tree for `config`, the Conversion) from a PyTorch state dict.

  The tree has string keys ("input_blocks" -> "5" -> ...) and float32 NumPy leaves.
  """
  conversion = convert_state_dict(state_dict, model_checkpoint.expected_shapes(config),
                                  preset=config.name, family=config.family)
  params = dict(conversion.params)
  if conversion.fresh:
    params.update(fresh_values(config, conversion.fresh, seed))
  return unflatten(params), conversion


def convert_to_checkpoint(state_dict: Mapping[str, np.ndarray], preset: str, out_dir: str, *,
                          task: str | None = None, overrides: Mapping | None = None, seed: int = 0,
                          overwrite: bool = False) -> ImportReport:
  """Converts a state dict for `preset` and writes the checkpoint directory `out_dir`.

  Raises PitiError (and writes nothing) when the checkpoint does not fit the preset.
  """
  config = resolve_config(preset, state_dict, task, overrides)
  params, conversion = import_state_dict(state_dict, config, seed=seed)
  chosen = config_overrides(config)
  model_checkpoint.save_checkpoint(out_dir, params, preset=config.name, overrides=chosen, overwrite=overwrite)
  fresh_leaves = flatten(params)
  return ImportReport(
      preset=config.name, overrides=chosen, task=config.task if config.family == "piti" else None,
      source_layout=conversion.source_layout,
      converted_tensors=len(conversion.params),
      converted_parameters=int(sum(v.size for v in conversion.params.values())),
      dropped_keys=conversion.dropped, fresh_paths=conversion.fresh,
      fresh_parameters=int(sum(fresh_leaves[path].size for path in conversion.fresh)))
