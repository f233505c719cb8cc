"""Initialisation of a new run from other checkpoints (partial restore by path prefix).

`config.init` holds named entries, each a ConfigDict with
  path:     a run's workdir (or its checkpoints/<step>) written by this loop, or a model
            checkpoint in the models' format (e.g. converted GLIDE/PITI weights);
  tree:     for run checkpoints, "params" or "ema_<rate>" (ignored for model checkpoints);
  prefixes: comma-separated parameter path prefixes to take ("" = everything).
Example (stage 2): decoder from the pretrained prior, encoder from stage 1-cont's EMA:
  init.prior  = {path: <prior workdir>,  tree: "ema_0.9999", prefixes: "decoder"}
  init.stage1 = {path: <stage1 workdir>, tree: "ema_0.9999", prefixes: "encoder"}
Entries are applied in name order; later entries overwrite earlier ones where they overlap.
"""

import jax
import ml_collections
import numpy as np
from absl import logging

from piti_jax import storage
from piti_jax.errors import PitiError
from piti_jax.train import checkpoint
from piti_jax.param_paths import flatten, unflatten
from piti_jax.train.params import ModelTemplate, ParamTree, matches_prefix


def _load_source_tree(path: str, tree: str) -> ParamTree:
  """Complete parameter tree (numpy) of a run checkpoint or a model checkpoint."""
  if not storage.path(path).exists():
    raise PitiError(f"init checkpoint {path} does not exist; fix the path in config.init (or train that stage first).")
  if checkpoint.is_train_checkpoint(path):
    return checkpoint.load_trained_tree(path, tree)
  from piti_jax.models import checkpoint as model_checkpoint  # pylint: disable=import-outside-toplevel

  return model_checkpoint.load_params(path)


def _prefixes(spec: str) -> tuple[str, ...]:
  return tuple(p.strip() for p in spec.split(",")) if spec.strip() else ("",)


def apply_init_sources(params: ParamTree, init: ml_collections.ConfigDict, template: ModelTemplate,
                       shardings: ParamTree) -> ParamTree:
  """Returns `params` with the parts named by `init` replaced by checkpoint values.

  Raises PitiError when an entry has no path, or when the source does not fit the model
  under the entry's prefixes (naming every mismatching parameter).
  """
  flat_params = flatten(params)
  flat_shardings = flatten(shardings)
  for name in sorted(init.keys()):
    entry = init[name]
    if not entry.path:
      raise PitiError(f"config.init.{name}.path is empty; set --config.init.{name}.path=<workdir or checkpoint> "
                      f"(it provides parameters under '{entry.prefixes or 'everything'}').")
    prefixes = _prefixes(entry.prefixes)
    source = _load_source_tree(entry.path, entry.tree)
    wanted = unflatten({p: v for p, v in flatten(source).items() if matches_prefix(p, prefixes)})
    template.check_fits(wanted, f"{entry.path} ({entry.tree}, prefixes {','.join(prefixes) or 'all'})", prefixes)
    for path, value in flatten(wanted).items():
      flat_params[path] = jax.device_put(np.asarray(value, np.float32), flat_shardings[path])
    logging.info("init: %d parameters under %s from %s (%s)", len(flatten(wanted)), prefixes, entry.path, entry.tree)
  return unflatten(flat_params)
