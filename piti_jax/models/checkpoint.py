"""Model checkpoints: the one on-disk format for converted, trained and exported weights.

Layout of a checkpoint directory DIR:
  DIR/model_config.json  {"format": "piti_jax.model", "version": 1, "preset": NAME, "overrides": {...}}
                         (the architecture = presets.get_config(NAME, **overrides))
  DIR/params/            orbax PyTree checkpoint of the model's nnx.Param state as a pure nested
                         dict (nnx.to_pure_dict) whose keys are strings: attribute names, and list
                         indices written in decimal ("input_blocks" -> "5" -> "1" -> "qkv" ->
                         "kernel"); leaves are float32 arrays in the layouts of
                         `piti_jax.models` (see its docstring).

`save_checkpoint` validates the params against the architecture first (every missing or
unexpected name and every shape mismatch is reported) and writes nothing when they disagree.
It writes into DIR.tmp and renames it to DIR at the end, so DIR is either complete or absent.
"""

import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils

from piti_jax import storage
from piti_jax.errors import PitiError
from piti_jax.models.piti import GlideModel, ModelConfig, PitiModel
from piti_jax.models.presets import abstract_model, config_overrides, get_config
from piti_jax.param_paths import flatten

CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"
FORMAT = "piti_jax.model"
VERSION = 1

Model = PitiModel | GlideModel


def _string_keys(tree: Any) -> Any:
  """Nested dict with every key as a string (nnx.List indices become "0", "1", ...)."""
  if isinstance(tree, dict):
    return {str(k): _string_keys(v) for k, v in tree.items()}
  return tree


def _param_tree(params: Any) -> dict[str, Any]:
  """A string-keyed nested dict of arrays from an nnx.State, a model, or a nested dict."""
  if isinstance(params, nnx.Module):
    params = nnx.state(params, nnx.Param)
  if isinstance(params, nnx.State):
    params = nnx.to_pure_dict(params)
  if not isinstance(params, dict):
    raise PitiError(f"params must be an nnx.State or a nested dict of arrays, got {type(params).__name__}.")
  return _string_keys(params)


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
  """{"decoder.input_blocks.0.0.kernel": shape, ...} of every parameter of `config`'s model."""
  state = nnx.state(abstract_model(config), nnx.Param)
  return {key: tuple(leaf.shape) for key, leaf in flatten(_param_tree(state)).items()}


def check_params(config: ModelConfig, shapes: dict[str, tuple[int, ...]], source: str) -> None:
  """Raises PitiError naming every missing, unexpected and wrongly shaped parameter."""
  expected = expected_shapes(config)
  missing = sorted(set(expected) - set(shapes))
  unexpected = sorted(set(shapes) - set(expected))
  wrong = sorted(f"{k}: got {shapes[k]}, expected {expected[k]}"
                 for k in set(expected) & set(shapes) if tuple(shapes[k]) != expected[k])
  if missing or unexpected or wrong:
    lines = [f"{source} does not match model {config.name!r} (overrides {config_overrides(config)}):"]
    lines += [f"  missing: {k}" for k in missing]
    lines += [f"  unexpected: {k}" for k in unexpected]
    lines += [f"  shape mismatch: {w}" for w in wrong]
    lines.append("Use the preset/overrides the params were made for, or fix the parameter names.")
    raise PitiError("\n".join(lines))


def save_checkpoint(directory: str, params: Any, *, preset: str, overrides: dict[str, Any] | None = None,
                    overwrite: bool = False) -> None:
  """Writes a model checkpoint (format in the module docstring).

  Args:
    directory: the checkpoint directory DIR to create.
    params: the model's params: an nnx.State of nnx.Param, the model itself, or a nested dict
      (int or str keys) of float32 arrays, e.g. nnx.to_pure_dict(nnx.state(model, nnx.Param)).
    preset, overrides: the architecture, as for presets.create_model(preset, **overrides).
    overwrite: replace an existing DIR; otherwise an existing DIR is an error.
  Every process of a multi-process run must call this (orbax writes sharded arrays jointly).
  """
  config = get_config(preset, **(overrides or {}))
  tree = _param_tree(params)
  check_params(config, {k: tuple(np.shape(v)) for k, v in flatten(tree).items()}, "params to save")
  directory = storage.path(directory)
  if directory.exists() and not overwrite:
    raise PitiError(f"checkpoint directory {directory} already exists; choose another one or pass overwrite=True.")
  staging = directory.parent / f"{directory.name}.tmp"
  leader = storage.is_leader()
  if leader:
    storage.remove_tree(staging)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"piti_jax.models.save_checkpoint:{staging}")
  tree = jax.tree.map(lambda x: x.astype(jnp.float32) if isinstance(x, jax.Array) else np.asarray(x, np.float32),
                      tree)
  ocp.PyTreeCheckpointer().save(staging / PARAMS_DIR, tree)
  if leader:
    storage.write_text(staging / CONFIG_FILE, json.dumps(
        {"format": FORMAT, "version": VERSION, "preset": config.name, "overrides": config_overrides(config)},
        indent=1, sort_keys=True))
    storage.remove_tree(directory)
    staging.rename(directory)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"piti_jax.models.save_checkpoint:{directory}")


def save_model(model: Model, directory: str, *, overwrite: bool = False) -> None:
  """Saves a model's params with its own preset and overrides."""
  save_checkpoint(directory, model, preset=model.config.name, overrides=config_overrides(model.config),
                  overwrite=overwrite)


def load_config(directory: str) -> ModelConfig:
  """The ModelConfig stored in a checkpoint directory."""
  path = storage.path(directory) / CONFIG_FILE
  if not storage.path(directory).is_dir():
    raise PitiError(f"checkpoint directory {directory} does not exist; check the path.")
  if not path.is_file():
    raise PitiError(f"{directory} is not a model checkpoint (no {CONFIG_FILE}); point to a directory written "
                    "by piti_jax.convert, the train loop or save_model.")
  meta = json.loads(path.read_text())
  if meta.get("format") != FORMAT or meta.get("version") != VERSION:
    raise PitiError(f"{path} has format {meta.get('format')!r} version {meta.get('version')!r}; this code reads "
                    f"{FORMAT!r} version {VERSION}.")
  return get_config(meta["preset"], **meta.get("overrides", {}))


def load_params(directory: str, config: ModelConfig | None = None) -> dict[str, Any]:
  """The params of a checkpoint as a string-keyed nested dict of NumPy float32 arrays.

  Checks names and shapes against `config` (default: the checkpoint's own config) first.
  """
  config = config or load_config(directory)
  params_dir = storage.path(directory) / PARAMS_DIR
  if not params_dir.is_dir():
    raise PitiError(f"{directory} has no {PARAMS_DIR}/ directory; the checkpoint is incomplete, re-create it.")
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(params_dir).item_metadata.tree
  check_params(config, {k: tuple(m.shape) for k, m in flatten(metadata).items()}, f"checkpoint {directory}")
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
  return checkpointer.restore(params_dir, args=ocp.args.PyTreeRestore(restore_args=restore_args))


def _int_keys(tree: Any) -> Any:
  """Inverse of _string_keys for nnx.replace_by_pure_dict: decimal keys back to list indices."""
  if isinstance(tree, dict):
    return {(int(k) if k.isdigit() else k): _int_keys(v) for k, v in tree.items()}
  return tree


def load_into(model: Model, directory: str) -> None:
  """Replaces `model`'s params with a checkpoint's (names and shapes checked against model.config).

  The checkpoint's own preset may differ in settings that do not change parameters
  (e.g. dropout); anything that does is reported parameter by parameter.
  """
  params = load_params(directory, model.config)
  state = nnx.state(model, nnx.Param)
  nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, _int_keys(params)))
  nnx.update(model, state)


def from_checkpoint(directory: str, *, dtype: jnp.dtype = jnp.float32) -> Model:
  """The ready model (params float32, compute in `dtype`) of a checkpoint directory.

  The model takes NHWC float images and integer or float timesteps, see `piti_jax.models.piti`.
  """
  model = abstract_model(load_config(directory), dtype)
  load_into(model, directory)
  return model
