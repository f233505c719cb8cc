"""The train state: one pytree holding everything a step reads and writes.

Every leaf is a jax.Array sharded on the ("data", "fsdp") mesh: parameters (and the
optimizer moments and averages that mirror them) by partition.py's fsdp rule, all
small arrays replicated.
"""

from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding

from piti_jax.train import ema as ema_lib, partition
from piti_jax.param_paths import SEPARATOR, flatten
from piti_jax.train.params import ParamTree


@flax.struct.dataclass
class TrainState:
  """State of a run.

  Attributes:
    step: int32 () number of steps taken.
    rng: uint32 (2,) raw threefry key data; the key of step s is fold_in(key, s).
    params: trainable parameters (float32), e.g. only `encoder/...` in stage 1.
    frozen: parameters that are used but never updated (no optimizer state, no EMA).
    ema: {"0.9999": tree like `params`, ...}, averages of the trainable parameters.
    opt_state: optax state of the trainable parameters.
    sampler: timestep-sampler state (diffusion.timestep_sampler).
    disc_params: discriminator parameters ({} when the mode has no discriminator).
    disc_opt_state: the discriminator's optax state (() when unused).
  """
  step: jax.Array
  rng: jax.Array
  params: ParamTree
  frozen: ParamTree
  ema: dict[str, ParamTree]
  opt_state: optax.OptState
  sampler: Any
  disc_params: ParamTree
  disc_opt_state: optax.OptState


def new_train_state(*, rng: jax.Array, params: ParamTree, frozen: ParamTree, ema_rates: Sequence[float],
                    tx: optax.GradientTransformation, sampler: Any, disc_params: ParamTree,
                    disc_tx: optax.GradientTransformation | None) -> TrainState:
  """A state at step 0 (jittable): averages copy the params, optimizers start fresh."""
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      rng=rng,
      params=params,
      frozen=frozen,
      ema=ema_lib.init_ema(params, ema_rates),
      opt_state=tx.init(params),
      sampler=sampler,
      disc_params=disc_params,
      disc_opt_state=disc_tx.init(disc_params) if disc_tx is not None else (),
  )


def _optimizer_shardings(abstract_opt_state: Any, param_shardings: ParamTree, abstract_params: ParamTree,
                         replicated: NamedSharding) -> Any:
  """Moments take their parameter's sharding; counters and other leaves are replicated.

  An optimizer leaf belongs to a parameter when the dict keys of its path end with that
  parameter's path and the shapes agree (optax nests moments under labels or chain
  indices, but always as a copy of the parameter tree).
  """
  shardings = {tuple(p.split(SEPARATOR)): s for p, s in flatten(param_shardings).items()}
  shapes = {tuple(p.split(SEPARATOR)): a.shape for p, a in flatten(abstract_params).items()}

  def sharding_of(path, leaf):
    keys = tuple(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))
    for start in range(len(keys)):
      suffix = keys[start:]
      if suffix in shardings and shapes[suffix] == getattr(leaf, "shape", None):
        return shardings[suffix]
    return replicated

  return jax.tree_util.tree_map_with_path(sharding_of, abstract_opt_state)


def state_shardings(abstract: TrainState, mesh: Mesh, *, param_shardings: ParamTree, frozen_shardings: ParamTree,
                    disc_shardings: ParamTree) -> TrainState:
  """NamedShardings for every leaf of a TrainState (given its abstract value)."""
  replicated = partition.replicated(mesh)
  return TrainState(
      step=replicated,
      rng=replicated,
      params=param_shardings,
      frozen=frozen_shardings,
      ema={name: param_shardings for name in abstract.ema},
      opt_state=_optimizer_shardings(abstract.opt_state, param_shardings, abstract.params, replicated),
      sampler=jax.tree.map(lambda _: replicated, abstract.sampler),
      disc_params=disc_shardings,
      disc_opt_state=_optimizer_shardings(abstract.disc_opt_state, disc_shardings, abstract.disc_params,
                                          replicated),
  )
