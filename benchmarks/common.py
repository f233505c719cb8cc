"""Shared helpers of the benchmark scripts (imported as a sibling module by `benchmarks/*.py`).

A benchmarked train step is built exactly as the train loop builds it (`loop.Trainer`),
with random batches of the data config's shapes, so no dataset is needed.
"""

import dataclasses
import importlib.util
import json
import os
import resource
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app

from piti_jax import accounting
from piti_jax.data.pipeline import batch_shapes
from piti_jax.models import layers
from piti_jax.train import loop, objectives, partition

import timing

# Benchmark modes -> config.train.trainable (stage1: encoder only; stage2/pretrain: everything).
TRAINABLE = {"stage1": "encoder", "stage2": "", "pretrain": ""}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_job_config(name: str, job: str) -> ml_collections.ConfigDict:
  """`configs/<name>.py:<job>` of this repository, as `--config=` would load it."""
  spec = importlib.util.spec_from_file_location(f"configs_{name}", os.path.join(REPO, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(job)


def random_batch(config: ml_collections.ConfigDict, rng: np.random.Generator) -> dict[str, np.ndarray]:
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


def with_mode(config: ml_collections.ConfigDict, mode: str | None) -> ml_collections.ConfigDict:
  """A resolved copy of `config` without init sources; `mode` (if given) sets the trainable set."""
  config = config.copy_and_resolve_references()
  if mode is not None:
    if mode not in TRAINABLE:
      raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(TRAINABLE)}")
    config.train.trainable = TRAINABLE[mode]
  config.init = {}
  return config


@dataclasses.dataclass(frozen=True)
class StepCost:
  """One timed train step.

  wall_s: wall seconds. dispatch_s: the part of them until the step call returned, before the
  step ran (JAX's handling of the state's arrays). cpu_s: the process's CPU seconds over all
  threads (on a machine shared with other jobs they show the work done, which wall time does
  not). system_s: the kernel's part of cpu_s. page_faults: minor page faults (first touches of
  memory the process got from the OS).
  """
  wall_s: float
  dispatch_s: float
  cpu_s: float
  system_s: float
  page_faults: int


@dataclasses.dataclass
class StepBench:
  """A compiled train step with its state and batch, ready to time."""
  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  trainer: Any
  state: Any
  batch: dict[str, jax.Array]
  compiled: Any
  compile_s: float
  while_loops: int  # `stablehlo.while` ops in the lowered step (see `step_xla_flops`)
  last_metrics: dict[str, jax.Array] | None = None  # the metrics of the last step `run` ran

  def run(self, steps: int) -> list[StepCost]:
    """Runs `steps` steps (state donated and carried); what each one took."""
    costs = []
    with jax.set_mesh(self.mesh):
      for _ in range(steps):
        usage, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        self.state, self.last_metrics = self.compiled(self.state, self.batch, self.trainer.functions.extras)
        dispatch = time.perf_counter() - start
        jax.block_until_ready(self.last_metrics)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        costs.append(StepCost(wall_s=wall, dispatch_s=dispatch,
                              cpu_s=after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime,
                              system_s=after.ru_stime - usage.ru_stime,
                              page_faults=after.ru_minflt - usage.ru_minflt))
    return costs


def build_step(config: ml_collections.ConfigDict, mode: str | None = None, seed: int = 0, *, warm_up: bool = True,
               clear_caches: bool = False, on_stage: Callable[[str], None] = lambda stage: None) -> StepBench:
  """Compiles the train step of `config` (in `mode`) and, with `warm_up`, runs one step.

  The step is compiled for the state's shapes before the state is made, as `python -m
  piti_jax.main` does (`loop._Run.compile_step_first`). `clear_caches` also empties JAX's caches of
  traced, lowered and compiled functions (`jax.clear_caches()`; the compiled step is kept) after
  the compile and again after the state, as such a run does. `on_stage` is called after each
  stage of the build: "backend" (the mesh made), "trainer", "lowered", "compiled",
  "caches_cleared" (with `clear_caches`) and "state" (the initial state).
  """
  config = with_mode(config, mode)
  mesh = partition.make_mesh(config.mesh.data, config.mesh.fsdp)
  on_stage("backend")
  with jax.set_mesh(mesh):
    trainer = loop.Trainer(config, mesh)
    on_stage("trainer")
    batch = trainer.global_batch(random_batch(config, np.random.default_rng(seed)))
    start = time.perf_counter()
    lowered = trainer.lower_step(trainer.abstract_sharded_state(), batch)
    on_stage("lowered")
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    while_loops = lowered.as_text().count("stablehlo.while")
    del lowered
    on_stage("compiled")
    if clear_caches:
      jax.clear_caches()
      on_stage("caches_cleared")
    state = trainer.create_state_for(config.seed, config.init)
    if clear_caches:
      jax.clear_caches()
    on_stage("state")
    bench = StepBench(config, mesh, trainer, state, batch, compiled, compile_s, while_loops)
  if warm_up:
    bench.run(1)
  return bench


def steps_in_turns(config: ml_collections.ConfigDict, mode: str | None, builds: dict[str, StepBench], rounds: int,
                   steps: int) -> dict[str, Any]:
  """Times several builds of one job's train step (`mode` as given to `build_step`) in `rounds` rounds of
  `steps` steps of each, the builds taking turns (`timing.in_turns`), so they see the same host load,
  which alternating processes do not. Returns one JSON-ready line: the job, and per
  build f"{name}_step_ms", f"{name}_step_spread" and f"{name}_step_cpu_s" (median wall ms, its spread,
  median CPU seconds of its steps)."""
  costs = {name: [] for name in builds}
  for name in timing.in_turns(builds, rounds):
    costs[name] += builds[name].run(steps)
  summary = {"preset": config.model.preset, "mode": mode or config.train.trainable or "all",
             "global_batch": config.train.global_batch_size, "device": jax.devices()[0].platform,
             "rounds": rounds, "steps_per_round": steps}
  for name, runs in costs.items():
    summary[f"{name}_step_ms"] = median_ms([cost.wall_s for cost in runs])
    summary[f"{name}_step_spread"] = spread([cost.wall_s for cost in runs])
    summary[f"{name}_step_cpu_s"] = round(statistics.median(cost.cpu_s for cost in runs), 3)
  return summary


def variants_in_turns(calls: dict[tuple[str, str, str], Callable[[], Any]], repeats: int) -> dict[str, dict[str, Any]]:
  """Times variants of programs: calls keyed (case, program, variant), all compiled by a first call and
  then run `repeats` times taking turns (`timing.timed_in_turns`). Returns per case {f"{program}_bitwise_equal":
  whether every variant's outputs equal the first variant's, leaf by leaf, bit for bit; f"{program}_{variant}_ms"
  and f"{program}_{variant}_spread": the median ms of its runs and their spread}."""
  outputs = {key: jax.tree.leaves(jax.block_until_ready(call())) for key, call in calls.items()}
  times = timing.timed_in_turns(calls, repeats)
  first = {}
  lines = {}
  for (case, program, variant), leaves in outputs.items():
    line = lines.setdefault(case, {})
    reference = first.setdefault((case, program), leaves)
    equal = all(bool(jnp.array_equal(a, b)) for a, b in zip(reference, leaves))
    line[f"{program}_bitwise_equal"] = line.get(f"{program}_bitwise_equal", True) and equal
    line[f"{program}_{variant}_ms"] = median_ms(times[case, program, variant])
    line[f"{program}_{variant}_spread"] = spread(times[case, program, variant])
  return lines


def forward_flops(trainer: Any, batch: dict[str, jax.Array]) -> float:
  """FLOPs of one forward pass of the diffusion model (encoder + decoder) on `batch`, from XLA."""
  template = trainer.template
  cond = objectives.condition_of(batch)

  def forward(params, x, t, cond, low_res):
    return template.merge(params)(x, t, cond, low_res=low_res)

  images = batch["image"]
  t = jnp.zeros(images.shape[:1], jnp.float32)
  with layers.attention_in_one_block():
    lowered = jax.jit(forward).lower(template.abstract_params(), images, t, cond, batch.get("low_res"))
  analysis = lowered.cost_analysis()
  return float(analysis.get("flops", float("nan")))


def step_xla_flops(bench: StepBench) -> float:
  """FLOPs XLA counts in one train step of `bench`, on all its devices.

  XLA's cost analysis counts a loop's body once. A step's loops are the rounds of JAX's Threefry
  hash (random bits: a few integer operations per element, left as counted) and, on a CPU, a large
  attention layer's passes over groups of (batch, head) slices and blocks of query rows
  (`layers.attention_slice_groups`, `layers.attention_backward_chunks`), whose bodies are most of that
  layer's FLOPs. When the step has those, the count is that of the same step traced with the attention
  in one block (the same arithmetic, no loop), compiled for the count only; whether it has them is
  told by the loops of that tracing against `bench.while_loops`, counted when the step was lowered.
  JAX's caches are emptied around that tracing (the compiled step is kept).
  """
  with jax.set_mesh(bench.mesh), layers.attention_in_one_block():
    in_one_block = bench.trainer.lower_step(bench.trainer.abstract_sharded_state(), bench.batch)
  if in_one_block.as_text().count("stablehlo.while") == bench.while_loops:
    return accounting.compiled_flops(bench.compiled)
  return accounting.compiled_flops(in_one_block.compile(accounting.ANALYSIS_ONLY_COMPILER_OPTIONS))


def median_ms(seconds: list[float]) -> float:
  return round(statistics.median(seconds) * 1e3, 2)


def spread(seconds: list[float]) -> float:
  """(max - min) / median of repeated timings: how noisy they were."""
  return round((max(seconds) - min(seconds)) / statistics.median(seconds), 3)


def matmul_peak() -> float:
  return accounting.measured_matmul_peak()


def array_differences(before: dict[str, np.ndarray], after: dict[str, np.ndarray],
                      skip: str) -> dict[str, tuple[float, float, bool]]:
  """Per array name (all but `skip`): (largest |after - before| over before's largest magnitude, that
  magnitude, bitwise equal?). The two files must hold the same names."""
  names = sorted(set(before) - {skip})
  if names != sorted(set(after) - {skip}):
    raise app.UsageError("the two files hold different arrays; were they written with the same settings?")
  differences = {}
  for name in names:
    magnitude = float(np.max(np.abs(before[name]), initial=0.0))
    difference = float(np.max(np.abs(after[name] - before[name]), initial=0.0))
    differences[name] = (difference / max(magnitude, np.finfo(np.float32).tiny), magnitude,
                         bool(np.array_equal(before[name], after[name])))
  return differences


def save_or_compare(compare_files: list[str], out: str | None, compare: Callable[[dict, dict], dict],
                    produce: Callable[[], dict[str, np.ndarray]]) -> None:
  """The command of the value-comparison scripts: `--compare=BEFORE,AFTER` prints `compare`'s JSON line
  for two .npz files; otherwise the arrays `produce` returns are written to `--out`."""
  if compare_files:
    if len(compare_files) != 2:
      raise app.UsageError("--compare takes two files: BEFORE,AFTER")
    with np.load(compare_files[0]) as before, np.load(compare_files[1]) as after:
      print(json.dumps(compare(dict(before), dict(after))))
    return
  if not out:
    raise app.UsageError("give --out=FILE.npz (or --compare=BEFORE,AFTER)")
  np.savez(out, **produce())
