"""The one train loop behind the `pretrain` and `finetune` modes.

What a run does (config fields in parentheses):
1. builds the mesh (mesh.data, mesh.fsdp), the model template (model.*), the diffusion
   (diffusion.*), the optimizer (optim.*) and, for adversarial upsampler finetuning, the
   PatchGAN critic and the VGG feature extractor (adversarial.*);
2. resumes from the newest checkpoint in `<workdir>/checkpoints` if there is one (state
   and data-iterator position), else initialises the state and applies `init.*` entries;
3. runs the jitted step (in `python -m piti_jax.main` runs, compiled ahead of time before 2. makes
   or restores the state, with JAX's caches released after the compile and again after 2.:
   `train(release_caches=True)`) until
   train.num_steps, writing metrics every train.log_every steps, validation loss every
   train.eval_every, sample grids every train.sample_every and checkpoints every
   train.save_every (and at the end, and on SIGTERM/preemption).
"""

import dataclasses
import functools
import io
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from piti_jax.diffusion import timestep_sampler
from piti_jax.diffusion.gaussian import make_diffusion
from piti_jax import grids, sampling, storage
from piti_jax.errors import PitiError, Preempted
from piti_jax.train import checkpoint as checkpoint_lib
from piti_jax.train import ema as ema_lib
from piti_jax.train import init_sources, metrics as metrics_lib, objectives, optimizer as optimizer_lib, partition
from piti_jax.train import state as state_lib
from piti_jax.train import step as step_lib
from piti_jax.models.piti import ModelConfig
from piti_jax.param_paths import flatten, unflatten
from piti_jax.train.params import ModelTemplate, merge_trees, split_by_prefixes
from piti_jax.train.preemption import PreemptionWatch
from piti_jax.workdir_lock import WorkdirLock

BATCH_KEYS = ("image", "condition", "low_res", "tokens", "token_mask")
DTYPES = ("float32", "bfloat16")


Frozen = tuple[tuple[str, Any], ...]


def freeze(group: ml_collections.ConfigDict) -> Frozen:
  """A config group as sorted (dotted name, value) pairs, lists as tuples: hashable."""
  tuples = lambda v: tuple(tuples(x) for x in v) if isinstance(v, (list, tuple)) else v
  return tuple(sorted((name, tuples(value)) for name, value in flatten(group.to_dict()).items()))


def thaw(frozen: Frozen) -> ml_collections.ConfigDict:
  """The ConfigDict of a frozen group."""
  return ml_collections.ConfigDict(unflatten(dict(frozen)))


@dataclasses.dataclass(frozen=True)
class TrainSpec:
  """Everything the compiled functions of a run depend on (hashable; see `RunFunctions`).

  model: the architecture (preset + overrides); dtype: compute dtype name.
  trainable: parameter path prefixes that are trained ("" = all); ema_rates: config.train.ema_rates.
  diffusion, optim, adversarial: the config groups of those names, frozen.
  batch_keys: the arrays of a batch, from the data config's batch contract.
  mesh: the device mesh.
  """
  model: ModelConfig
  dtype: str
  trainable: tuple[str, ...]
  ema_rates: tuple[float, ...]
  diffusion: Frozen
  optim: Frozen
  adversarial: Frozen
  batch_keys: tuple[str, ...]
  mesh: jax.sharding.Mesh

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> "TrainSpec":
    from piti_jax.data.pipeline import batch_shapes  # pylint: disable=import-outside-toplevel
    from piti_jax.models import presets  # pylint: disable=import-outside-toplevel

    if config.model.dtype not in DTYPES:
      raise PitiError(f"config.model.dtype={config.model.dtype!r} is not supported; use one of {', '.join(DTYPES)}.")
    spec = config.train.trainable.strip()
    trainable = ("",) if spec in ("", "all") else tuple(p.strip() for p in spec.split(","))
    return cls(model=presets.get_config(config.model.preset, **dict(config.model.overrides)),
               dtype=config.model.dtype, trainable=trainable,
               ema_rates=tuple(float(r) for r in config.train.ema_rates), diffusion=freeze(config.diffusion),
               optim=freeze(config.optim), adversarial=freeze(config.adversarial),
               batch_keys=tuple(k for k in BATCH_KEYS if k in batch_shapes(config.data, 1)), mesh=mesh)


def resolve_text_vocabulary(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` with model.overrides.n_vocab = the vocabulary of data.tokenizer for text-to-image runs.

  The token embedding then has one row per id the tokenizer emits (257 for the byte tokenizer,
  50,257 for GPT-2 BPE) instead of the preset's. An explicit model.overrides.n_vocab is kept, and
  is an error when the tokenizer emits ids beyond it.
  """
  if config.data.task != "text":
    return config
  from piti_jax.data.tokenizer import make_tokenizer  # pylint: disable=import-outside-toplevel

  vocab = make_tokenizer(config.data.tokenizer).vocab_size
  given = config.model.overrides.get("n_vocab")
  if given is not None:
    if given < vocab:
      raise PitiError(f"config.model.overrides.n_vocab={given} is smaller than the {vocab} token ids of "
                      f"data.tokenizer={config.data.tokenizer!r}; remove the override or raise it.")
    return config
  config = config.copy_and_resolve_references()
  config.model.overrides.n_vocab = vocab
  return config


class RunFunctions:
  """The static side of a run, built from a TrainSpec alone, and its jitted functions.

  Every run whose TrainSpec is equal shares one RunFunctions (`run_functions`), so several
  runs in a process (tests, a resumed run, benchmarks) reuse the compiled step. Nothing
  else reaches these functions, so the sharing cannot go stale when config fields are added.
  """

  def __init__(self, spec: TrainSpec):
    from piti_jax.models import presets  # pylint: disable=import-outside-toplevel

    mesh, dtype = spec.mesh, jnp.dtype(spec.dtype)
    self.spec = spec
    self.replicated = partition.replicated(mesh)
    self.template = ModelTemplate(lambda rngs: presets.build_model(spec.model, rngs=rngs, dtype=dtype),
                                  lambda: presets.abstract_model(spec.model, dtype))
    abstract = self.template.abstract_params()
    trainable, _ = split_by_prefixes(abstract, spec.trainable)
    if not trainable:
      raise PitiError(f"config.train.trainable={','.join(spec.trainable)!r} selects no parameter; top-level parts "
                      f"are {sorted(abstract)}.")
    self.param_shardings = self.template.shardings(mesh)
    trainable_shardings, frozen_shardings = split_by_prefixes(self.param_shardings, spec.trainable)
    self.tx = optimizer_lib.make_optimizer(thaw(spec.optim), trainable)
    diffusion_config = thaw(spec.diffusion)
    self.diffusion = make_diffusion(diffusion_config.schedule, diffusion_config.num_timesteps)
    adversarial = thaw(spec.adversarial)
    self.disc_template = self.disc_tx = vgg_graphdef = None
    self.extras, extras_shardings = {}, {}
    if adversarial.enabled:
      from piti_jax.models.discriminator import PatchDiscriminator  # pylint: disable=import-outside-toplevel
      from piti_jax.models.vgg import load_vgg_features  # pylint: disable=import-outside-toplevel

      self.disc_template = ModelTemplate(
          lambda rngs: PatchDiscriminator(3, adversarial.disc_channels, adversarial.disc_layers, rngs=rngs))
      self.disc_tx = optimizer_lib.make_discriminator_optimizer(adversarial.disc_lr)
      vgg_graphdef, vgg_state = nnx.split(load_vgg_features(adversarial.vgg_path or None))
      extras_shardings["vgg"] = jax.tree.map(lambda _: self.replicated, vgg_state)
      self.extras["vgg"] = jax.device_put(vgg_state, extras_shardings["vgg"])
    objective = objectives.ObjectiveConfig(
        adversarial=adversarial.enabled, adversarial_start=adversarial.start_step,
        perceptual_weight=adversarial.perceptual_weight, adversarial_weight=adversarial.adversarial_weight,
        gradient_penalty_weight=adversarial.gradient_penalty_weight, critic_first=adversarial.critic_first)
    step_config = step_lib.StepConfig(ema_rates=spec.ema_rates, objective=objective)
    models = step_lib.StepModels(self.template, self.disc_template, vgg_graphdef)
    sampler = functools.partial(timestep_sampler.init_sampler_state, diffusion_config.timestep_sampler,
                                diffusion_config.num_timesteps)

    def new_state(rng: jax.Array, params: dict, disc_params: dict) -> state_lib.TrainState:
      trainable, frozen = split_by_prefixes(params, spec.trainable)
      return state_lib.new_train_state(rng=rng, params=trainable, frozen=frozen, ema_rates=spec.ema_rates,
                                       tx=self.tx, sampler=sampler(), disc_params=disc_params, disc_tx=self.disc_tx)

    abstract_disc = self.disc_template.abstract_params() if adversarial.enabled else {}
    self.abstract_state = jax.eval_shape(new_state, jax.random.key_data(jax.random.key(0)), abstract, abstract_disc)
    self.state_shardings = state_lib.state_shardings(
        self.abstract_state, mesh, param_shardings=trainable_shardings, frozen_shardings=frozen_shardings,
        disc_shardings=self.disc_template.shardings(mesh) if adversarial.enabled else {})
    self.build_state = jax.jit(new_state, out_shardings=self.state_shardings, donate_argnums=(1, 2))
    self.train_step = step_lib.jit_train_step(
        step_lib.make_train_step(models, self.diffusion, self.tx, self.disc_tx, step_config), mesh,
        self.state_shardings, spec.batch_keys, extras_shardings)
    self.validation_step = jax.jit(step_lib.make_validation_step(models, self.diffusion, step_config),
                                   out_shardings=self.replicated)


@functools.cache
def run_functions(spec: TrainSpec) -> RunFunctions:
  """The RunFunctions of a spec, built once per process."""
  return RunFunctions(spec)


class Trainer:
  """A run's config and mesh with its (shared) RunFunctions: `create_state_for` / `global_batch` / `step`."""

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
    if config.train.global_batch_size % mesh.size:
      raise PitiError(f"train.global_batch_size={config.train.global_batch_size} must be divisible by the "
                      f"{mesh.size} devices; change the batch size or the mesh.")
    self.config = config
    self.mesh = mesh
    self.functions = run_functions(TrainSpec.from_config(config, mesh))
    self.template = self.functions.template
    self.ema_rates = self.functions.spec.ema_rates
    self._sampler = None

  def create_state_for(self, seed: int, init: ml_collections.ConfigDict) -> state_lib.TrainState:
    """A fresh state: random init from `seed`, then the `init` entries, sharded on the mesh."""
    functions = self.functions
    model_key, state_key, disc_key = jax.random.split(jax.random.key(seed), 3)
    params = jax.device_put(functions.template.init_params(model_key), functions.param_shardings)
    params = init_sources.apply_init_sources(params, init, functions.template, functions.param_shardings)
    disc_params = {}
    if functions.disc_template is not None:
      disc_params = jax.device_put(functions.disc_template.init_params(disc_key),
                                   functions.state_shardings.disc_params)
    return functions.build_state(jax.random.key_data(state_key), params, disc_params)

  def abstract_sharded_state(self) -> state_lib.TrainState:
    """ShapeDtypeStructs with shardings, the restore target of checkpoints."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        self.functions.abstract_state, self.functions.state_shardings)

  def abstract_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
    """The global batch as ShapeDtypeStructs split over the mesh like `global_batch`'s arrays
    (the data pipeline's batch contract, `pipeline.batch_shapes`)."""
    from piti_jax.data.pipeline import batch_shapes  # pylint: disable=import-outside-toplevel

    sharding = partition.batch_sharding(self.mesh)
    shapes = batch_shapes(self.config.data, self.config.train.global_batch_size)
    return {k: jax.ShapeDtypeStruct(*shapes[k], sharding=sharding) for k in self.functions.spec.batch_keys}

  def global_batch(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Per-process numpy batch -> global arrays split over ("data", "fsdp"): the spec's batch keys."""
    keys = self.functions.spec.batch_keys
    missing = [k for k in keys if k not in local]
    if missing:
      raise PitiError(f"a batch lacks {missing} (it has {sorted(local)}); the data config and the batch disagree.")
    return partition.to_global({k: np.asarray(local[k]) for k in keys}, partition.batch_sharding(self.mesh))

  @property
  def validation_step(self):
    return self.functions.validation_step

  @property
  def sampler(self) -> sampling.Sampler:
    """The sampler of the periodic sample grids (config.sample)."""
    if self._sampler is None:
      self._sampler = sampling.model_sampler(self.functions.spec.model, self.config.model.dtype,
                                             self.config.diffusion.schedule, self.config.diffusion.num_timesteps,
                                             sampling.sampling_config(self.config.sample), self.mesh)
    return self._sampler

  def step(self, state: state_lib.TrainState, batch: dict[str, jax.Array]):
    """One train step: (new state, metrics)."""
    return self.functions.train_step(state, batch, self.functions.extras)

  def lower_step(self, state: state_lib.TrainState, batch: dict[str, jax.Array]) -> jax.stages.Lowered:
    """The jitted step lowered for arguments like (state, batch); its compiled form is called as
    `compiled(state, batch, extras)` with this run's `functions.extras`."""
    return self.functions.train_step.lower(state, batch, self.functions.extras)

  def compiled_step(self, state: state_lib.TrainState,
                    batch: dict[str, jax.Array]) -> Callable[[state_lib.TrainState, dict[str, jax.Array]], Any]:
    """`step` compiled ahead of time for arguments like (state, batch): it holds its executable
    itself, so it keeps working after `jax.clear_caches()` (which `step` would answer by tracing
    and compiling again). Called with other shapes, dtypes or shardings it raises."""
    compiled, extras = self.lower_step(state, batch).compile(), self.functions.extras
    return lambda state, batch: compiled(state, batch, extras)

  def sample_params(self, state: state_lib.TrainState) -> dict:
    """Complete parameters used for samples: the first EMA average plus the frozen part."""
    averaged = state.ema[ema_lib.ema_name(self.ema_rates[0])] if self.ema_rates else state.params
    return merge_trees(averaged, state.frozen)


@dataclasses.dataclass
class TrainResult:
  """What a finished (or stopped) run leaves in memory: final state, step, logged means per log step."""
  state: state_lib.TrainState
  step: int
  history: list[tuple[int, dict[str, float]]]
  preempted: bool = False


def _data_iterators(config: ml_collections.ConfigDict) -> tuple[Iterator, Any]:
  """(train iterator, function making a fresh validation iterator) for this process."""
  from piti_jax.data import pipeline  # pylint: disable=import-outside-toplevel

  common = dict(global_batch_size=config.train.global_batch_size, seed=config.seed,
                process_index=jax.process_index(), process_count=jax.process_count())
  train_iterator = pipeline.make_train_iterator(config.data, **common)
  return train_iterator, functools.partial(pipeline.make_eval_iterator, config.data, **common)


class _Run:
  """One run of the loop in a workdir: owns the writer, checkpointer and iterators."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, trainer: Trainer,
               on_metrics: Callable[[int, dict[str, float]], None] | None = None, release_caches: bool = False):
    self.config = config
    self.on_metrics = on_metrics
    self.release_caches = release_caches
    self.workdir = workdir
    self.trainer = trainer
    self.train_cfg = config.train
    self.writer = metrics_lib.make_writer(workdir, config.train.tensorboard)
    self.checkpointer = checkpoint_lib.Checkpointer(workdir, keep=self.train_cfg.keep_checkpoints)
    self.buffer = metrics_lib.MetricBuffer()
    self.history: list[tuple[int, dict[str, float]]] = []
    self.data, self.make_eval_data = _data_iterators(config)

  def initial_state(self) -> state_lib.TrainState:
    restored = self.checkpointer.restore_latest(self.trainer.abstract_sharded_state(), self.data,
                                                global_batch_size=self.train_cfg.global_batch_size)
    if restored is None:
      logging.info("starting a new run in %s", self.workdir)
      return self.trainer.create_state_for(self.config.seed, self.config.init)
    logging.info("resuming %s from step %d", self.workdir, restored[1])
    return restored[0]

  def flush_metrics(self, speed: dict[str, float] | None = None) -> None:
    """Fetches pending metrics, stops on a non-finite step, writes the means; on_metrics also
    gets `speed` (the progress report of this step, if it made one)."""
    step = self.buffer.last_step
    if step is None:
      return
    means, first_bad = self.buffer.fetch()
    if first_bad is not None:
      self.checkpointer.wait()
      raise metrics_lib.NonFiniteLoss(first_bad, self.checkpointer.latest_step())
    self.history.append((step, means))
    self.writer.write_scalars(step, means)
    if self.on_metrics is not None:
      self.on_metrics(step, {**means, **(speed or {})})

  def save(self, step: int, state: state_lib.TrainState) -> None:
    self.flush_metrics()  # never save a state after a non-finite step
    if self.checkpointer.latest_step() != step:
      self.checkpointer.save(step, state, self.data, global_batch_size=self.train_cfg.global_batch_size)

  def validate(self, step: int, state: state_lib.TrainState) -> None:
    values = []
    for index, local in zip(range(self.train_cfg.eval_batches), self.make_eval_data()):
      values.append(self.trainer.validation_step(state, self.trainer.global_batch(local), jnp.int32(index)))
    if not values:
      raise PitiError(f"the eval split has less than one batch of {self.train_cfg.global_batch_size} examples; "
                      "use a larger eval split or set train.eval_every=0.")
    means = {k: float(np.mean([v[k] for v in jax.device_get(values)])) for k in values[0]}
    self.history.append((step, means))
    self.writer.write_scalars(step, means)

  def write_samples(self, step: int, state: state_lib.TrainState) -> None:
    """Samples for the first validation examples; grid PNG + TensorBoard image from process 0.

    Sample i uses the key fold_in(fold_in(key(seed), step), i), the same on any mesh.
    """
    sampler = self.trainer.sampler
    local = next(self.make_eval_data(), None)
    if local is None:
      raise PitiError(f"the eval split has less than one batch of {self.train_cfg.global_batch_size} examples for "
                      "the sample grid; use a larger eval split or set train.sample_every=0.")
    count = min(self.config.train.sample_batch_size, self.config.train.global_batch_size)
    rows = sampler.pad_to(count) // jax.process_count()  # a batch the mesh splits evenly
    batch = self.trainer.global_batch({k: v[:rows] for k, v in local.items()})
    key = jax.random.fold_in(jax.random.key(self.config.seed), step)
    images = sampler(self.trainer.sample_params(state), objectives.condition_of(batch), batch.get("low_res"), key,
                     np.arange(batch["image"].shape[0]), tuple(batch["image"].shape))
    host = multihost_utils.process_allgather({**batch, "sample": images}, tiled=True)
    host = {k: v[:count] for k, v in host.items()}
    columns, names = grids.sample_grid_columns(host, host["sample"])
    grid = grids.make_grid(columns, tuple(host["image"].shape[1:3]))
    if storage.is_leader():
      path = storage.path(self.workdir) / "samples" / f"step_{step:07d}.png"
      png = io.BytesIO()
      Image.fromarray(grid).save(png, format="PNG")
      storage.write_bytes(path, png.getvalue())
      self.writer.write_image(step, "samples", grid)
      logging.info("step %d: sample grid %s (columns: %s)", step, path, ", ".join(names))

  def export(self, state: state_lib.TrainState) -> None:
    """Writes the averaged model as a model checkpoint: `<workdir>/export/ema_<rate>` (or `params`).

    That directory is what inference and `config.init.*.path` take (piti_jax.models.checkpoint).
    """
    from piti_jax.models import checkpoint as model_checkpoint  # pylint: disable=import-outside-toplevel

    name = f"ema_{ema_lib.ema_name(self.trainer.ema_rates[0])}" if self.trainer.ema_rates else "params"
    directory = storage.path(self.workdir) / "export" / name
    model_checkpoint.save_checkpoint(directory, self.trainer.sample_params(state), preset=self.config.model.preset,
                                     overrides=dict(self.config.model.overrides), overwrite=True)
    logging.info("exported the %s model to %s", name, directory)

  def compile_step_first(self) -> Callable:
    """The step compiled ahead of time for this run's state and batch shapes, before the state
    exists, after which every JAX cache of the process is emptied: the traced and lowered step are
    not needed again, and keeping them costs 140-160 MiB of a bench_tiny stage-2 run's 1.4 GiB on a
    CPU (docs/performance.md, section 17). Compiled first, the state's arrays then reuse the heap
    the compiler freed (section 23)."""
    step = self.trainer.compiled_step(self.trainer.abstract_sharded_state(), self.trainer.abstract_batch())
    jax.clear_caches()
    return step

  def train(self) -> TrainResult:
    cfg = self.train_cfg
    # With `release_caches` the step is compiled first (unless the run has no step left) and the
    # programs that built or restored the state are dropped once it exists; otherwise the Trainer's
    # shared jitted step compiles on first use.
    steps_left = (self.checkpointer.latest_step() or 0) < cfg.num_steps
    run_step = self.compile_step_first() if self.release_caches and steps_left else self.trainer.step
    state = self.initial_state()
    if self.release_caches:
      jax.clear_caches()
    step = int(jax.device_get(state.step))
    progress = metrics_lib.make_progress(cfg.num_steps, self.writer, cfg.log_every)
    watch = PreemptionWatch(self.checkpointer.reached_preemption)
    preempted = False
    try:
      while step < cfg.num_steps:
        batch = self.trainer.global_batch(next(self.data))
        state, step_metrics = run_step(state, batch)
        step += 1
        self.buffer.add(step, step_metrics)
        speed = progress(step)
        if watch.should_stop(step):
          logging.warning("preemption notice: saving step %d and stopping", step)
          self.save(step, state)
          preempted = True
          break
        if step % cfg.log_every == 0:
          self.flush_metrics(speed)
        if cfg.eval_every and step % cfg.eval_every == 0:
          self.validate(step, state)
        if cfg.sample_every and step % cfg.sample_every == 0:
          self.write_samples(step, state)
        if step % cfg.save_every == 0 or step == cfg.num_steps:
          self.save(step, state)
      self.flush_metrics()
      self.checkpointer.wait()
      if cfg.export and not preempted and step == cfg.num_steps:
        self.export(state)
    finally:
      watch.close()
      self.writer.flush()
    return TrainResult(state=state, step=step, history=self.history, preempted=preempted)

  def close(self) -> None:
    self.checkpointer.close()
    self.writer.close()


def train(config: ml_collections.ConfigDict, workdir: str,
          on_metrics: Callable[[int, dict[str, float]], None] | None = None, *,
          release_caches: bool = False) -> TrainResult:
  """Runs (or resumes) the loop of `config` in `workdir` until train.num_steps or preemption.

  `on_metrics(step, values)` is called every train.log_every steps with the logged means and,
  on process 0 once the clock runs, `steps_per_sec` and `eta_seconds` of metrics.ProgressReport.
  `release_caches` compiles the step first and empties JAX's caches after it (see `_Run.compile_step_first`): less
  resident memory while the run trains, for a process that runs one job (`run`, behind
  `python -m piti_jax.main`). Off, the compiled step stays shared with later runs of the same
  spec in the process (tests, notebooks, the demo's stages).
  """
  config = resolve_text_vocabulary(config)
  mesh = partition.make_mesh(config.mesh.data, config.mesh.fsdp)
  with jax.set_mesh(mesh):
    trainer = Trainer(config, mesh)
    run = _Run(config, workdir, trainer, on_metrics, release_caches)
    try:
      return run.train()
    finally:
      run.close()


def check_train_config(config: ml_collections.ConfigDict) -> None:
  """Raises PitiError for train settings that cannot work, before anything is written."""
  train_cfg = config.train
  for name in ("global_batch_size", "num_steps", "save_every", "log_every"):
    if train_cfg[name] <= 0:
      raise PitiError(f"config.train.{name}={train_cfg[name]} must be positive; pass a positive "
                      f"--config.train.{name}.")
  if train_cfg.global_batch_size % jax.process_count():
    raise PitiError(f"config.train.global_batch_size={train_cfg.global_batch_size} is not divisible by the "
                    f"{jax.process_count()} processes; pick a multiple of {jax.device_count()}.")


def lock_workdir(workdir: str) -> WorkdirLock | None:
  """Process 0 takes the workdir lock; every process raises PitiError when a live run holds it."""
  lock, error = None, None
  if storage.is_leader():
    try:
      lock = WorkdirLock(workdir)
    except PitiError as caught:
      error = caught
  if jax.process_count() > 1:
    refused = bool(multihost_utils.broadcast_one_to_all(np.int32(error is not None)))
    if refused and error is None:
      error = PitiError(f"workdir {workdir} is in use by another run (process 0 could not take its lock); "
                        "wait for it to finish or use another --workdir.")
  if error is not None:
    raise error
  return lock


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Runner of the `pretrain` and `finetune` modes (see piti_jax/main.py).

  Checks the config and the workdir before writing anything, holds the workdir lock while it
  runs, and raises `Preempted` (exit status 75) when a preemption notice stopped the run.
  """
  check_train_config(config)
  config = resolve_text_vocabulary(config)
  storage.prepare_workdir(workdir, create=storage.is_leader())
  lock = lock_workdir(workdir)
  try:
    if storage.is_leader():
      storage.write_text(storage.path(workdir) / "config.json", config.to_json_best_effort(indent=2))
    result = train(config, workdir, release_caches=True)
  finally:
    if lock is not None:
      lock.release()
  if result.preempted:
    raise Preempted(f"stopped by preemption at step {result.step} (checkpoint saved); run the same command "
                    "again to resume.")
