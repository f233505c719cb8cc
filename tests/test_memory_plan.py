"""The ahead-of-time memory planner against what the same tiny config really holds on 8 CPU devices."""

import jax
import numpy as np
import pytest

from piti_jax.models import target
from piti_jax.train import loop, memory_plan, partition
from tests.train_helpers import shapes_config

TOLERANCE = 0.10


@pytest.fixture(scope="module")
def planned_and_real(tmp_path_factory):
  """(plan, real state, real compiled step) of a micro stage-2 config on a data=4 x fsdp=2 mesh."""
  config = shapes_config("stage2", str(tmp_path_factory.mktemp("unused")))
  config.model.overrides.update(image_size=16, channel_mult=(1,), attention_ds=(1,), cond_size=32)
  config.data.image_size = 16
  config.data.condition_size = 32
  config.init = {}
  mesh = partition.make_mesh(data=4, fsdp=2)
  plan = memory_plan.plan_train_step(config, mesh)
  with jax.set_mesh(mesh):
    trainer = loop.Trainer(config, mesh)
    state = trainer.create_state_for(0, config.init)
    shapes = trainer.abstract_batch()
    batch = trainer.global_batch({k: np.zeros(v.shape, v.dtype) for k, v in shapes.items()})
    compiled = trainer.lower_step(state, batch).compile()
  return plan, state, compiled


def _bytes_on_first_device(tree) -> int:
  device = jax.devices()[0]
  return sum(shard.data.nbytes for leaf in jax.tree.leaves(tree) for shard in leaf.addressable_shards
             if shard.device == device)


def test_planned_state_bytes_match_the_allocated_shards(planned_and_real):
  plan, state, _ = planned_and_real
  for planned, real in ((plan.params_bytes, state.params), (plan.optimizer_bytes, state.opt_state),
                        (plan.ema_bytes, state.ema), (plan.state_bytes, state)):
    assert planned == pytest.approx(_bytes_on_first_device(real), rel=TOLERANCE)
  assert plan.params_bytes < plan.optimizer_bytes  # Adam keeps two moments per parameter


def test_planned_temporaries_match_the_compiled_step_the_loop_runs(planned_and_real):
  plan, _, compiled = planned_and_real
  real = compiled.memory_analysis()
  assert plan.temp_bytes == pytest.approx(real.temp_size_in_bytes, rel=TOLERANCE)
  assert plan.temp_bytes > 0
  assert plan.peak_bytes >= plan.state_bytes + plan.temp_bytes


def test_fsdp_shards_parameters_and_optimizer_state():
  config = shapes_config("stage2", "/unused")
  config.init = {}
  data_parallel = loop.Trainer(config, partition.make_mesh(data=8, fsdp=1)).abstract_sharded_state()
  sharded = loop.Trainer(config, partition.make_mesh(data=4, fsdp=2)).abstract_sharded_state()
  replicated_bytes = memory_plan.shard_bytes(data_parallel.opt_state)
  assert memory_plan.shard_bytes(sharded.opt_state) < 0.6 * replicated_bytes


def test_a_plan_for_a_tpu_traces_the_step_with_the_tpu_forms(monkeypatch):
  """`plan_train_step(..., platform)` traces the step inside `target.planned_for(platform)` (stopped before the
  compile; tests/test_models.py checks what the forms are), and leaves the CPU's forms afterwards."""
  class Traced(Exception):
    pass

  traced_for = []

  def lower_step(self, state, batch):
    traced_for.append(target.platform())
    raise Traced

  monkeypatch.setattr(loop.Trainer, "lower_step", lower_step)
  config = shapes_config("stage2", "/unused")
  config.init = {}
  mesh = partition.make_mesh(data=8, fsdp=1)
  for platform in (None, "tpu"):
    with pytest.raises(Traced):
      memory_plan.plan_train_step(config, mesh, platform)
  assert traced_for == ["cpu", "tpu"]
  assert target.platform() == "cpu"
