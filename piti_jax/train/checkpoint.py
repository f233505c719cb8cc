"""Orbax checkpoints of the train state together with the data iterator position.

Layout: `<workdir>/checkpoints/<step>/state` (the TrainState pytree, written
asynchronously) and `<workdir>/checkpoints/<step>/data/process_<i>-of-<n>.json` (each
process's grain iterator state). Orbax writes into a temporary directory and renames it
when complete, so an interrupted save never becomes the newest checkpoint.
"""

import json
import os
from typing import Any

import grain.python as grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from piti_jax.errors import PitiError
from piti_jax.train.params import ParamTree, merge_trees

CHECKPOINT_DIR = "checkpoints"


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


class Checkpointer:
  """Keeps the last `keep` checkpoints of a run in `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, *, keep: int = 3, asynchronous: bool = True):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=asynchronous)
    self.manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR)), options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(), "data": grain.PyGrainCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_iterator: Any | None) -> None:
    """Starts saving `state` (and the iterator position) as checkpoint `step`."""
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.PyGrainCheckpointSave(_IteratorSnapshot(data_iterator))
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, step: int, abstract_state: Any, data_iterator: Any | None) -> Any:
    """Restores checkpoint `step` into the shardings of `abstract_state` (ShapeDtypeStructs).

    Moves `data_iterator` (in place) to the saved position.
    """
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items["data"] = grain.PyGrainCheckpointRestore(data_iterator)
    return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

  def reached_preemption(self, step: int) -> bool:
    """True when the multi-host preemption sync point says to save and stop."""
    if jax.process_count() == 1:
      return False
    return self.manager.reached_preemption(step)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def _checkpoint_root(path: str) -> tuple[str, int | None]:
  """(checkpoints directory, explicit step or None) for a workdir, its checkpoints dir or a step dir."""
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, CHECKPOINT_DIR)):
    return os.path.join(path, CHECKPOINT_DIR), None
  base = os.path.basename(path)
  if base.isdigit() and os.path.isdir(os.path.join(path, "state")):
    return os.path.dirname(path), int(base)
  return path, None


def is_train_checkpoint(path: str) -> bool:
  """True when `path` is a run's workdir, its checkpoints dir, or one step of it."""
  root, step = _checkpoint_root(path)
  if step is not None:
    return True
  return os.path.isdir(root) and any(d.isdigit() and os.path.isdir(os.path.join(root, d, "state"))
                                      for d in os.listdir(root))


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
