"""Metric writing from process 0 only: TensorBoard + log lines, progress reports.

Metrics arrive as one dict of device scalars per step. They stay on device until the
next `log_every` boundary (or checkpoint), where `MetricBuffer.fetch` brings them to the
host in one transfer, checks that every step was finite, and averages them.
"""

import math
from typing import Any

import jax
import numpy as np
from clu import metric_writers, periodic_actions

from piti_jax.errors import PitiError


class NonFiniteLoss(PitiError):
  """The loss or gradients became NaN/inf; carries the first bad step."""

  def __init__(self, step: int, last_good_checkpoint: int | None):
    kept = (f"the newest checkpoint is still the last good one (step {last_good_checkpoint})"
            if last_good_checkpoint is not None else "no checkpoint was written")
    super().__init__(f"non-finite loss at step {step}: training stopped and {kept}. Lower config.optim.lr, "
                     "enable config.optim.grad_clip_norm, or check the input data; restarting with the same "
                     "workdir resumes from that checkpoint.")
    self.step = step


class MetricBuffer:
  """Holds per-step device metrics until they are fetched together."""

  def __init__(self):
    self._pending: list[tuple[int, dict[str, jax.Array]]] = []

  def add(self, step: int, metrics: dict[str, jax.Array]) -> None:
    """Records the metrics of the step that made the state reach `step` (step counted after the update)."""
    self._pending.append((step, metrics))

  def __len__(self) -> int:
    return len(self._pending)

  @property
  def last_step(self) -> int | None:
    """Step of the newest pending metrics (None when empty)."""
    return self._pending[-1][0] if self._pending else None

  def fetch(self) -> tuple[dict[str, float], int | None]:
    """(means over the pending steps, first step whose update was non-finite or None); empties the buffer.

    A step is non-finite when its `nonfinite` flag is set or its loss is NaN/inf; the
    reported step is the one the update would have produced minus one (the step index at
    which the bad update was computed).
    """
    if not self._pending:
      return {}, None
    steps = [s for s, _ in self._pending]
    values = jax.device_get([m for _, m in self._pending])
    self._pending = []
    first_bad = None
    for step, metrics in zip(steps, values):
      if metrics.get("nonfinite", 0.0) > 0 or not math.isfinite(float(metrics["loss"])):
        first_bad = step - 1
        break
    means = {name: float(np.mean([m[name] for m in values])) for name in values[0]}
    return means, first_bad


def make_writer(workdir: str, tensorboard: bool = True) -> metric_writers.MetricWriter:
  """TensorBoard (process 0, when `tensorboard`) and log writer; other processes write nothing."""
  return metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0 or not tensorboard,
                                              asynchronous=True)


def make_progress(num_steps: int, writer: metric_writers.MetricWriter, every_steps: int) -> Any:
  """clu ReportProgress (steps/s, ETA every `every_steps`) on process 0, a no-op elsewhere."""
  if jax.process_index() > 0:
    return lambda step, **_: None
  return periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer, every_secs=None,
                                         every_steps=every_steps)
