"""Orbax checkpoints of the train state together with the data position, and safe resumption.

Layout of `<workdir>/checkpoints/<step>/` (local or any epath scheme such as gs://):
  state/                      the TrainState pytree (written asynchronously, every process its shards)
  data/process_<i>-of-<n>.json  each process's grain iterator state
  run/metadata                {"global_batch_size", "process_count"} of the run that wrote it
  files.json                  {relative path: size in bytes} of every file above, written by process 0
                              once orbax reports the step complete
Orbax writes a step under `<step>.orbax-checkpoint-tmp-*` and renames it when complete, so an
interrupted save never becomes a step; leftover temporary folders are removed on the next start.

Resumption (`Checkpointer.restore_latest`) tries the newest step first. A step whose files do not
match its `files.json` (a truncated or missing file), that lacks `state/_METADATA` or its data
file, or that is empty is reported in a warning naming the step and the file, and the next older
step is tried; the damaged folders are then renamed `<step>.damaged` so the run can save those
steps again. When no step is usable the run stops with a PitiError naming each step and file.

Elastic restore: the state is restored into the shardings of the current mesh, whatever mesh wrote
it. The data position is the iterator state when the process count is unchanged; otherwise every
process starts its new shard after `step` batches (each process reads one batch per step whatever
the process count), so the run continues at the same place in the epoch. A changed
train.global_batch_size is refused: the step count would no longer measure the data consumed.
"""

import json
import os
from typing import Any

import grain.python as grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from piti_jax import storage
from piti_jax.errors import PitiError
from piti_jax.train.params import ParamTree, merge_trees

CHECKPOINT_DIR = "checkpoints"
FILES = "files.json"
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's name for a step folder being written
DAMAGED_SUFFIX = ".damaged"  # a damaged step folder, renamed when the run resumed from an older step
SAFETY_FACTOR = 1.1  # free space asked for beyond the state's own bytes (metadata, index files)


class _IteratorSnapshot:
  """The iterator state at the moment of `save`, in the form grain's handler writes.

  grain's handler serialises `get_state()` when the handler runs; taking the state
  at call time keeps the saved position equal to the saved step.
  """

  def __init__(self, iterator: Any):
    state = iterator.get_state()
    self._state = state if isinstance(state, bytes) else json.dumps(state, indent=2).encode()

  def get_state(self) -> bytes:
    return self._state


def data_file_name(process_index: int, process_count: int) -> str:
  """grain's per-process iterator file inside `<step>/data`."""
  return f"process_{process_index}-of-{process_count}.json"


def list_files(directory: epath.Path) -> dict[str, int]:
  """{path relative to `directory`: size in bytes} of every file below it."""
  bare = lambda p: os.fspath(p).split("://", 1)[-1]  # fsspec walks without the scheme
  files = {}
  for root, _, names in directory.walk():
    relative = os.path.relpath(bare(root), bare(directory))
    for name in names:
      name = os.path.normpath(os.path.join(relative, name))
      files[name] = (directory / name).stat().length
  return files


def find_damage(step_dir: epath.Path, process_count: int) -> str | None:
  """What makes checkpoint `step_dir` unusable (naming the file), or None when it looks complete.

  Checks, in order: an empty folder; the sizes recorded in files.json; state/_METADATA; the
  data iterator files of the processes that wrote it.
  """
  present = list_files(step_dir)
  if not present:
    return f"the step folder {step_dir} is empty"
  if FILES in present:
    expected = json.loads((step_dir / FILES).read_text())
    for name, size in sorted(expected.items()):
      if name not in present:
        return f"{step_dir / name} is missing"
      if present[name] != size:
        return f"{step_dir / name} is truncated ({present[name]} of {size} bytes)"
  if "state/_METADATA" not in present:
    return f"{step_dir / 'state' / '_METADATA'} is missing"
  if any(n.startswith("data/") for n in present):
    writers = _writer_count(step_dir, process_count)
    for index in range(writers):
      name = "data/" + data_file_name(index, writers)
      if name not in present:
        return f"{step_dir / name} is missing"
  return None


def _writer_count(step_dir: epath.Path, default: int) -> int:
  """The process count of the run that wrote `step_dir` (from its run item, else `default`)."""
  info = read_run_info(step_dir)
  return info["process_count"] if info else default


def read_run_info(step_dir: epath.Path) -> dict | None:
  """The `run` item of a checkpoint ({"global_batch_size", "process_count"}) or None for older ones."""
  path = step_dir / "run" / "metadata"  # where orbax's JSON handler writes the item
  return json.loads(path.read_text()) if path.is_file() else None


class Checkpointer:
  """Keeps the last `keep` checkpoints of a run in `<workdir>/checkpoints` (see the module docstring)."""

  def __init__(self, workdir: str, *, keep: int = 3, asynchronous: bool = True):
    self.root = storage.path(workdir) / CHECKPOINT_DIR
    if storage.is_leader() and self.root.is_dir():
      for leftover in self.root.glob(f"*{TMP_SUFFIX}*"):  # saves that a crash interrupted
        logging.warning("removing %s, a checkpoint save that did not complete", leftover)
        storage.remove_tree(leftover)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=asynchronous)
    self.manager = ocp.CheckpointManager(
        self.root, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(), "data": grain.PyGrainCheckpointHandler(),
                       "run": ocp.JsonCheckpointHandler()})
    self._pending: int | None = None  # the step being saved asynchronously
    self._needed = 0  # its estimated size in bytes

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_iterator: Any | None, *, global_batch_size: int) -> None:
    """Starts saving `state` (and the iterator position) as checkpoint `step`.

    Raises PitiError naming the checkpoint folder when its filesystem has not enough free space
    (checked before writing), or when the previous asynchronous save ran out of space.
    """
    self.finish_pending()
    needed = int(SAFETY_FACTOR * sum(leaf.nbytes for leaf in jax.tree.leaves(state)))
    free = storage.free_bytes(self.root)
    if free is not None and free < needed:
      raise self._no_space(step, needed, free)
    items = {"state": ocp.args.StandardSave(state),
             "run": ocp.args.JsonSave({"global_batch_size": global_batch_size,
                                       "process_count": jax.process_count()})}
    if data_iterator is not None:
      items["data"] = grain.PyGrainCheckpointSave(_IteratorSnapshot(data_iterator))
    try:
      self.manager.save(step, args=ocp.args.Composite(**items), force=True)
    except Exception as error:  # pylint: disable=broad-except
      if storage.out_of_space(error):
        raise self._no_space(step, needed, storage.free_bytes(self.root)) from error
      raise
    self._pending = step
    self._needed = needed

  def _no_space(self, step: int, needed: int, free: int | None) -> PitiError:
    """The error for a save that does not fit; process 0 first removes what the save left behind."""
    if storage.is_leader():
      for leftover in self.root.glob(f"{step}{TMP_SUFFIX}*"):
        storage.remove_tree(leftover)
    have = f"{free / 2**20:.0f} MiB free" if free is not None else "the storage is full"
    return PitiError(f"no space to save checkpoint step {step} in {self.root}: it needs about "
                     f"{needed / 2**20:.0f} MiB and {have}; free space there (older checkpoints stay usable) "
                     "and run the same command again.")

  def finish_pending(self) -> None:
    """Waits for the running save; then process 0 records its files (the step is then verifiable)."""
    if self._pending is None:
      return
    step, self._pending = self._pending, None
    try:
      self.manager.wait_until_finished()
    except Exception as error:  # pylint: disable=broad-except
      if storage.out_of_space(error):
        raise self._no_space(step, self._needed, storage.free_bytes(self.root)) from error
      raise
    if storage.is_leader() and step in self.manager.all_steps():
      step_dir = self.root / str(step)
      storage.write_json(step_dir / FILES, list_files(step_dir))

  def restore(self, step: int, abstract_state: Any, data_iterator: Any | None, *, global_batch_size: int) -> Any:
    """Restores checkpoint `step` into the shardings of `abstract_state` (ShapeDtypeStructs).

    Moves `data_iterator` (in place) to the saved position (see the module docstring).
    """
    step_dir = self.root / str(step)
    info = read_run_info(step_dir)
    if info and info["global_batch_size"] != global_batch_size:
      raise PitiError(f"checkpoint step {step} in {self.root} was written with train.global_batch_size="
                      f"{info['global_batch_size']}, but this run has {global_batch_size}; the data position "
                      "would not carry over. Use the same batch size to resume, or start a new workdir "
                      "with config.init pointing at this one.")
    same_layout = (info["process_count"] if info else jax.process_count()) == jax.process_count()
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None and same_layout:
      items["data"] = grain.PyGrainCheckpointRestore(data_iterator)
    state = self.manager.restore(step, args=ocp.args.Composite(**items))["state"]
    if data_iterator is not None and not same_layout:
      logging.warning("checkpoint step %d was written by %d processes, this run has %d: each process starts "
                      "its new shard after %d batches", step, info["process_count"], jax.process_count(), step)
      data_iterator.set_state(position_after(data_iterator, step, global_batch_size // jax.process_count()))
    return state

  def restore_latest(self, abstract_state: Any, data_iterator: Any | None, *,
                     global_batch_size: int) -> tuple[Any, int] | None:
    """(state, step) of the newest usable checkpoint, or None when there is none at all.

    Damaged steps are reported (warning naming the step and the file) and skipped.
    """
    problems, damaged = [], []
    for step in sorted(self.manager.all_steps(), reverse=True):
      problem = find_damage(self.root / str(step), jax.process_count())
      if problem is None:
        if damaged:
          logging.warning("resuming from step %d, the newest intact checkpoint", step)
          self._set_aside(damaged)
        return self.restore(step, abstract_state, data_iterator, global_batch_size=global_batch_size), step
      logging.warning("checkpoint step %d is damaged and is skipped: %s", step, problem)
      problems.append(f"step {step}: {problem}")
      damaged.append(step)
    if problems:
      raise PitiError(f"no usable checkpoint in {self.root} ({'; '.join(problems)}); move the damaged step "
                      "folders away to start from scratch, or use a new workdir.")
    return None

  def _set_aside(self, steps: list[int]) -> None:
    """Renames damaged step folders to `<step>.damaged` (kept for inspection, no longer a step)."""
    if storage.is_leader():
      for step in steps:
        target = self.root / f"{step}{DAMAGED_SUFFIX}"
        storage.remove_tree(target)
        (self.root / str(step)).rename(target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"piti_jax.checkpoint.set_aside:{self.root}")
    self.manager.reload()

  def reached_preemption(self, step: int) -> bool:
    """True when the multi-host preemption sync point says to save and stop."""
    if jax.process_count() == 1:
      return False
    return self.manager.reached_preemption(step)

  def wait(self) -> None:
    self.finish_pending()

  def close(self) -> None:
    self.manager.close()


def position_after(iterator: Any, batches: int, batch_size: int) -> bytes:
  """The grain iterator state of `iterator`'s own layout after it has yielded `batches` batches.

  Every batch of a process comes whole from one reader (worker count w >= 1, or the process itself
  when w = 0); readers take turns, so reader j has produced batches//w (+1 when j < batches % w)
  batches of `batch_size` records. The state is written in grain's DataLoader format.
  """
  state = json.loads(iterator.get_state().decode())
  shard = iterator._data_loader._shard_options  # pylint: disable=protected-access
  workers = state["worker_count"]
  readers = max(workers, 1)
  global_readers = readers * shard.shard_count
  offset = shard.shard_index - global_readers
  state["last_seen_indices"] = {
      str(j): offset + j * shard.shard_count
              + batch_size * (batches // readers + (1 if j < batches % readers else 0)) * global_readers
      for j in range(readers)}
  state["last_worker_index"] = (batches - 1) % readers if workers else -1
  return json.dumps(state, indent=4).encode()


def _checkpoint_root(path: str) -> tuple[epath.Path, int | None]:
  """(checkpoints directory, explicit step or None) for a workdir, its checkpoints dir or a step dir."""
  path = storage.path(path)
  if (path / CHECKPOINT_DIR).is_dir():
    return path / CHECKPOINT_DIR, None
  if path.name.isdigit() and (path / "state").is_dir():
    return path.parent, int(path.name)
  return path, None


def is_train_checkpoint(path: str) -> bool:
  """True when `path` is a run's workdir, its checkpoints dir, or one step of it."""
  root, step = _checkpoint_root(path)
  if step is not None:
    return True
  return root.is_dir() and any(d.name.isdigit() and (d / "state").is_dir() for d in root.iterdir())


def load_trained_tree(path: str, tree: str) -> ParamTree:
  """One parameter tree of a run's checkpoint, as numpy arrays on the host.

  Args:
    path: a run's workdir, its `checkpoints` dir, or `checkpoints/<step>` (default: newest).
    tree: "params" (the trained parameters) or "ema_<rate>" (e.g. "ema_0.9999"). Parameters
      that run kept frozen are included in both, so the result covers the whole model.
  """
  root, step = _checkpoint_root(path)
  manager = ocp.CheckpointManager(root, options=ocp.CheckpointManagerOptions(read_only=True),
                                  item_handlers={"state": ocp.PyTreeCheckpointHandler()})
  step = manager.latest_step() if step is None else step
  if step is None:
    raise PitiError(f"no checkpoint found under {path}; point the init entry at a run's workdir that has "
                    f"a '{CHECKPOINT_DIR}' directory (or at one of its step directories).")
  metadata = manager.item_metadata(step)["state"]
  wanted = {name: metadata[name] for name in ("params", "frozen", "ema") if name in metadata}
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
  saved = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore(item=wanted, restore_args=restore_args, partial_restore=True)))["state"]
  manager.close()
  frozen = saved.get("frozen") or {}
  if tree == "params":
    return merge_trees(saved["params"], frozen)
  if tree.startswith("ema_"):
    rate = tree[len("ema_"):]
    averages = saved.get("ema") or {}
    if rate not in averages:
      raise PitiError(f"checkpoint {path} (step {step}) has no EMA at rate {rate}; it has "
                      f"{', '.join('ema_' + r for r in averages) or 'none'}. Pick one of those in the init entry.")
    return merge_trees(averages[rate], frozen)
  raise PitiError(f"unknown checkpoint tree {tree!r}; use 'params' or 'ema_<rate>' (e.g. 'ema_0.9999').")
