"""Preemption: SIGTERM (or the TPU maintenance notice) makes the run save and exit.

One process: a SIGTERM handler sets a flag that the loop checks after every step.
Several processes: every process must stop at the same step, so the decision comes from
JAX's preemption sync point (the coordination service sees the notice and picks a step
all processes reach), read through orbax's CheckpointManager.reached_preemption.
"""

import signal
import threading
from typing import Callable

import jax


class PreemptionWatch:
  """Installs the single-process SIGTERM handler; `should_stop(step)` says when to save and exit."""

  def __init__(self, reached_sync_point: Callable[[int], bool]):
    self._reached_sync_point = reached_sync_point
    self._signalled = threading.Event()
    self._previous = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame) -> None:
    del signum, frame
    self._signalled.set()

  def should_stop(self, step: int) -> bool:
    if jax.process_count() == 1:
      return self._signalled.is_set()
    return self._reached_sync_point(step)

  def close(self) -> None:
    """Restores the previous SIGTERM handler."""
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
