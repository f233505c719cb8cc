"""Train-step throughput per mode: one JSON line each with images/s, step ms and FLOPs.

  python benchmarks/train_step.py --config=configs/bench.py:tiny --modes=stage1,stage2

Modes set the trainable parameter set of the config: `stage1` trains the encoder only
(no decoder gradients, optimizer state or EMA), `stage2` and `pretrain` train everything.
Batches are random arrays with the data config's shapes, so no dataset is needed. FLOPs
come from XLA's cost analysis of the compiled step (for the whole global batch).
"""

import json
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from piti_jax.data.pipeline import batch_shapes
from piti_jax.train import loop, partition

_CONFIG = config_flags.DEFINE_config_file("config", "configs/bench.py:tiny", "Job config to benchmark.")
_MODES = flags.DEFINE_list("modes", ["stage1", "stage2"], "Modes: stage1 (encoder only), stage2/pretrain (all).")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per mode (after one warm-up step).")

TRAINABLE = {"stage1": "encoder", "stage2": "", "pretrain": ""}


def random_batch(config, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """This process's part of a batch of random inputs with the data config's shapes."""
  local = config.train.global_batch_size // jax.process_count()
  batch = {}
  for name, (shape, dtype) in batch_shapes(config.data, local).items():
    if np.dtype(dtype) == np.bool_:
      batch[name] = rng.random(shape) < 0.5
    elif np.issubdtype(dtype, np.integer):
      batch[name] = rng.integers(0, 256, shape).astype(dtype)
    else:
      batch[name] = rng.uniform(-1, 1, shape).astype(dtype)
  return batch


def flops_of(compiled) -> float:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return float(analysis.get("flops", float("nan")))


def benchmark(config, mode: str, steps: int) -> dict:
  config = config.copy_and_resolve_references()
  config.train.trainable = TRAINABLE[mode]
  config.init = {}
  mesh = partition.make_mesh(config.mesh.data, config.mesh.fsdp)
  with jax.set_mesh(mesh):
    trainer = loop.Trainer(config, mesh)
    state = trainer.create_state_for(config.seed, config.init)
    batch = trainer.global_batch(random_batch(config, np.random.default_rng(0)))
    start = time.perf_counter()
    extras = trainer.functions.extras
    compiled = trainer.functions.train_step.lower(state, batch, extras).compile()
    compile_s = time.perf_counter() - start
    state, metrics = compiled(state, batch, extras)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = compiled(state, batch, extras)
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - start) / steps
  count = lambda tree: int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
  return {
      "mode": mode, "preset": config.model.preset, "dtype": config.model.dtype,
      "global_batch": config.train.global_batch_size, "devices": jax.device_count(),
      "mesh": dict(mesh.shape), "step_ms": round(step_s * 1e3, 2),
      "images_per_s": round(config.train.global_batch_size / step_s, 2), "flops_per_step": flops_of(compiled),
      "compile_s": round(compile_s, 1), "trained_params": count(state.params), "frozen_params": count(state.frozen),
      "optimizer_state_floats": count(state.opt_state),
  }


def main(argv) -> None:
  del argv
  for mode in _MODES.value:
    if mode not in TRAINABLE:
      raise app.UsageError(f"unknown mode {mode!r}; use {', '.join(TRAINABLE)}")
    print(json.dumps(benchmark(_CONFIG.value, mode, _STEPS.value)), flush=True)


if __name__ == "__main__":
  app.run(main)
