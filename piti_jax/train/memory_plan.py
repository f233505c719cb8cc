"""Ahead-of-time memory plan of a train step on a device mesh, without allocating the model.

`plan_train_step(config, mesh)` lowers and compiles the jitted train step of `config`
(exactly the one the train loop runs: same shardings, same donation) on abstract inputs:
ShapeDtypeStructs carrying their NamedShardings. Nothing model-sized is allocated, so a
3.5B-parameter layout plans on a laptop's fake CPU devices
(`--xla_force_host_platform_device_count=N`).

Per-device bytes come from two places:
- parameters, optimizer state and EMA: the shard shape of every state leaf under its
  sharding (exact);
- temporaries (activations kept for the backward pass, gradients, gathered FSDP shards,
  scratch) and the non-donated outputs: the compiled program's memory analysis. This is
  XLA's buffer assignment for the platform it compiled for (the CPU here): a GPU or TPU
  compiler fuses differently, so read it as an estimate of their HBM use.

`platform` says whose forms the step is traced with (`piti_jax.models.target`): a plan for a TPU
or GPU pod traces the forms that pod runs (no CPU convolution gradients, staged sums, hashed
dropout masks or attention backward in row blocks), compiled by XLA:CPU. Left out, the forms are
those of the devices compiling, the CPU, as a run here uses.
"""

import dataclasses
import math
from typing import Any

import jax
import ml_collections
from jax.sharding import Mesh

from piti_jax import accounting
from piti_jax.models import target
from piti_jax.train import loop

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
  """Per-device bytes of one train step (see the module docstring for where each comes from).

  state_bytes: every state leaf (params + frozen + optimizer + EMA + sampler/step/rng + critic).
  peak_bytes: arguments + non-aliased outputs + temporaries, what a device holds at the
    busiest point of the step.
  """
  devices: int
  mesh: dict[str, int]
  global_batch: int
  per_device_batch: int
  params_bytes: int
  frozen_bytes: int
  optimizer_bytes: int
  ema_bytes: int
  state_bytes: int
  batch_bytes: int
  temp_bytes: int
  output_bytes: int
  peak_bytes: int

  def fits(self, hbm_bytes: float) -> bool:
    return self.peak_bytes <= hbm_bytes

  def as_dict(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    for name in list(out):
      if name.endswith("_bytes"):
        out[name.replace("_bytes", "_gib")] = round(out[name] / GIB, 3)
    return out


def shard_bytes(tree: Any) -> int:
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs (its largest shard per leaf)."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.sharding.shard_shape(leaf.shape) if getattr(leaf, "sharding", None) is not None else leaf.shape
    total += math.prod(shape) * leaf.dtype.itemsize
  return total


def plan_train_step(config: ml_collections.ConfigDict, mesh: Mesh, platform: str | None = None) -> MemoryPlan:
  """Compiles the train step of `config` on `mesh` for abstract inputs and reports its memory.
  platform: 'cpu', 'gpu' or 'tpu', whose forms the step is traced with; None: the compiling backend's."""
  trainer = loop.Trainer(config, mesh)
  state = trainer.abstract_sharded_state()
  batch = trainer.abstract_batch()
  with jax.set_mesh(mesh), target.planned_for(platform):
    compiled = trainer.lower_step(state, batch).compile(accounting.ANALYSIS_ONLY_COMPILER_OPTIONS)
  memory = accounting.memory_breakdown(compiled)
  return _plan(config, mesh, state, batch, temp_bytes=memory["temp_bytes"],
               output_bytes=memory["output_bytes"] - memory["alias_bytes"], peak_bytes=memory["peak_estimate_bytes"])


def rescale_plan(config: ml_collections.ConfigDict, mesh: Mesh, compiled_plan: MemoryPlan) -> MemoryPlan:
  """The plan on another `mesh` with the same per-device batch, without compiling again.

  State and batch bytes are exact for `mesh` (from its shardings); temporaries and outputs are
  taken from `compiled_plan`. With the per-device batch fixed, a device's activations,
  gradients and gathered FSDP weights do not depend on how many devices there are, so this
  is an estimate whose error is the difference in sharded state that XLA keeps as scratch.
  """
  trainer = loop.Trainer(config, mesh)
  state = trainer.abstract_sharded_state()
  batch = trainer.abstract_batch()
  peak = shard_bytes(state) + shard_bytes(batch) + compiled_plan.output_bytes + compiled_plan.temp_bytes
  return _plan(config, mesh, state, batch, temp_bytes=compiled_plan.temp_bytes,
               output_bytes=compiled_plan.output_bytes, peak_bytes=peak)


def _plan(config, mesh, state, batch, *, temp_bytes: int, output_bytes: int, peak_bytes: int) -> MemoryPlan:
  global_batch = config.train.global_batch_size
  return MemoryPlan(
      devices=mesh.size, mesh=dict(mesh.shape), global_batch=global_batch,
      per_device_batch=global_batch // mesh.size,
      params_bytes=shard_bytes(state.params), frozen_bytes=shard_bytes(state.frozen),
      optimizer_bytes=shard_bytes(state.opt_state), ema_bytes=shard_bytes(state.ema),
      state_bytes=shard_bytes(state), batch_bytes=shard_bytes(batch), temp_bytes=temp_bytes,
      output_bytes=output_bytes, peak_bytes=peak_bytes)
