"""Parameter trees of NNX models as pure nested dicts, and their static template.

The train state never holds nnx modules: a model is split once into a static
`graphdef` plus its parameters, kept as nested dicts with string keys (for example
`params["decoder"]["input_blocks"]["0"]["kernel"]`). Keys are strings even where NNX
uses list indices, so trees round-trip through checkpoints unchanged. Selecting a
stage's trainable set is a prefix match on the dotted path of `piti_jax.param_paths`
("encoder" selects every parameter under `encoder.`).
"""

from typing import Any, Callable, Iterable

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from piti_jax.errors import PitiError
from piti_jax.param_paths import SEPARATOR, flatten, join, unflatten
from piti_jax.train import partition

ParamTree = dict[str, Any]
FlatParams = dict[str, Any]  # "a.b.kernel" -> array


def matches_prefix(path: str, prefixes: Iterable[str]) -> bool:
  """True when `path` lies under one of `prefixes` ("" matches every path)."""
  return any(p == "" or path == p or path.startswith(p + SEPARATOR) for p in prefixes)


def split_by_prefixes(tree: ParamTree, prefixes: Iterable[str]) -> tuple[ParamTree, ParamTree]:
  """Splits a tree into (paths under `prefixes`, every other path)."""
  prefixes = tuple(prefixes)
  selected, rest = {}, {}
  for path, value in flatten(tree).items():
    (selected if matches_prefix(path, prefixes) else rest)[path] = value
  return unflatten(selected), unflatten(rest)


def merge_trees(*trees: ParamTree) -> ParamTree:
  """Union of trees with disjoint paths."""
  flat: FlatParams = {}
  for tree in trees:
    for path, value in flatten(tree).items():
      if path in flat:
        raise PitiError(f"parameter {path} is given twice (in two of the trees being merged); each parameter "
                        "belongs to exactly one of the trainable and frozen parts.")
      flat[path] = value
  return unflatten(flat)


class ModelTemplate:
  """The static side of an NNX model: graph definition plus abstract parameters.

  Built once without allocating weights. `merge(params)` rebuilds a live module from a
  parameter tree inside or outside jit; `init_params(key)` draws fresh weights on the host
  (outside jit: the models draw their initial weights with NumPy).

  Args:
    constructor: rngs -> a freshly initialised module.
    abstract_constructor: () -> the same module with ShapeDtypeStruct parameters; default
      `nnx.eval_shape` of `constructor`.
  """

  def __init__(self, constructor: Callable[[nnx.Rngs], nnx.Module],
               abstract_constructor: Callable[[], nnx.Module] | None = None):
    self._constructor = constructor
    if abstract_constructor is None:
      abstract = nnx.eval_shape(lambda: constructor(nnx.Rngs(0)))
    else:
      abstract = abstract_constructor()
    self.graphdef, params_state, other_state = nnx.split(abstract, nnx.Param, ...)
    other = [join(k) for k, _ in nnx.to_flat_state(other_state)]
    if other:
      raise PitiError(f"the model holds non-parameter state ({', '.join(other[:5])}); models must hold only "
                      "nnx.Param so the train state stays a pure parameter tree.")
    self._variables = {join(key): (key, variable) for key, variable in nnx.to_flat_state(params_state)}

  @property
  def paths(self) -> list[str]:
    return list(self._variables)

  def init_params(self, key: jax.Array) -> ParamTree:
    """Fresh parameters from the model's own initialisers (host call, not jittable)."""
    return self.params_of(self._constructor(nnx.Rngs(key)))

  def params_of(self, model: nnx.Module) -> ParamTree:
    """Parameter tree of a live module."""
    state = nnx.state(model, nnx.Param)
    return unflatten({join(k): v.get_value() for k, v in nnx.to_flat_state(state)})

  def abstract_params(self) -> ParamTree:
    """Tree of jax.ShapeDtypeStruct for every parameter."""
    return unflatten({p: jax.ShapeDtypeStruct(v.shape, v.dtype) for p, (_, v) in self._variables.items()})

  def shardings(self, mesh: Mesh) -> ParamTree:
    """Tree of NamedSharding per parameter (partition.py's fsdp rule)."""
    return unflatten({path: partition.variable_sharding(variable, mesh)
                      for path, (_, variable) in self._variables.items()})

  def merge(self, *trees: ParamTree) -> nnx.Module:
    """A live module holding the parameters of `trees` (disjoint, together complete)."""
    flat = flatten(merge_trees(*trees))
    missing = sorted(set(self._variables) - set(flat))
    if missing:
      raise PitiError(f"{len(missing)} parameters are missing to rebuild the model, e.g. {missing[:5]}; the "
                      "parameter trees must together cover the model (check config.model and the checkpoint).")
    entries = [(self._variables[p][0], self._variables[p][1].replace(v)) for p, v in flat.items()]
    return nnx.merge(self.graphdef, nnx.from_flat_state(entries))

  def check_fits(self, tree: ParamTree, source: str, prefixes: Iterable[str] = ("",)) -> None:
    """Raises PitiError naming the parameters of `tree` that do not fit this model.

    Only the paths under `prefixes` are compared; `tree` must cover all of them.
    """
    prefixes = tuple(prefixes)
    expected = {p: v.shape for p, (_, v) in self._variables.items() if matches_prefix(p, prefixes)}
    given = {p: tuple(np.shape(v)) for p, v in flatten(tree).items() if matches_prefix(p, prefixes)}
    problems = [f"{p}: missing" for p in sorted(set(expected) - set(given))]
    problems += [f"{p}: not in the model" for p in sorted(set(given) - set(expected))]
    problems += [f"{p}: shape {given[p]} but the model has {expected[p]}"
                 for p in sorted(set(given) & set(expected)) if given[p] != tuple(expected[p])]
    if problems:
      shown = "; ".join(problems[:12]) + (f"; and {len(problems) - 12} more" if len(problems) > 12 else "")
      raise PitiError(f"checkpoint {source} does not fit the model ({len(problems)} mismatching parameters: {shown}). "
                      "Check that config.model (preset, task, sizes) matches the run that wrote the checkpoint.")
