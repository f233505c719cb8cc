"""Metrics of the train loop: log lines, TensorBoard events (process 0), progress reports.

Metrics arrive as one dict of device scalars per step. They stay on device until the
next `log_every` boundary (or checkpoint), where `MetricBuffer.fetch` brings them to the
host in one transfer, checks that every step was finite, and averages them.

Nothing here imports TensorFlow: the event files are written by `train.event_file`.
"""

import math
import time
from collections.abc import Callable, Mapping

import jax
import numpy as np
from absl import logging

from piti_jax.errors import PitiError
from piti_jax.train import event_file


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


class MetricWriter:
  """Writes scalars and images: a log line each, and TensorBoard events when it has an event file."""

  def __init__(self, events: event_file.EventFile | None):
    self.events = events

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """Logs `[step] name=value, ...` (names sorted) and adds each scalar under its name."""
    logging.info("[%d] %s", step, ", ".join(f"{name}={float(value):.6g}" for name, value in sorted(scalars.items())))
    if self.events is not None:
      self.events.add(event_file.scalars_event(step, scalars))

  def write_image(self, step: int, tag: str, image: np.ndarray) -> None:
    """Adds `image`, uint8 (H, W, 3), under `tag` (and logs its shape)."""
    logging.info("[%d] image %s %s", step, tag, image.shape)
    if self.events is not None:
      self.events.add(event_file.image_event(step, tag, image))

  def flush(self) -> None:
    if self.events is not None:
      self.events.flush()

  def close(self) -> None:
    if self.events is not None:
      self.events.close()


def make_writer(workdir: str, tensorboard: bool = True) -> MetricWriter:
  """Log lines on every process; a TensorBoard event file in `workdir` on process 0 when `tensorboard`."""
  return MetricWriter(event_file.EventFile(workdir) if tensorboard and jax.process_index() == 0 else None)


def _duration(seconds: float) -> str:
  minutes, secs = divmod(round(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class ProgressReport:
  """Training speed every `every_steps` steps and at the last step; call it after every step.

  The first call only starts the clock (so a resumed run's rate counts from where it resumed,
  and the first step's compile is left out). Each report logs `<rate> steps/s, <percent>%
  (<step>/<num_steps>), ETA <time>`, writes the scalars `steps_per_sec` (over the steps since
  the previous report) and `uptime` (seconds since this object was made), and returns
  {"steps_per_sec", "eta_seconds"}; calls that do not report return None.
  """

  def __init__(self, num_steps: int, writer: MetricWriter, every_steps: int):
    self.num_steps = num_steps
    self.writer = writer
    self.every_steps = every_steps
    self._start = time.monotonic()
    self._previous: tuple[int, float] | None = None

  def __call__(self, step: int) -> dict[str, float] | None:
    now = time.monotonic()
    if self._previous is None:
      self._previous = (step, now)
      return None
    if step == self._previous[0] or (step % self.every_steps and step != self.num_steps):
      return None
    rate = (step - self._previous[0]) / (now - self._previous[1])
    self._previous = (step, now)
    eta = (self.num_steps - step) / rate
    logging.info("%.2f steps/s, %.1f%% (%d/%d), ETA %s", rate, 100 * step / self.num_steps, step, self.num_steps,
                 _duration(eta))
    self.writer.write_scalars(step, {"steps_per_sec": rate, "uptime": now - self._start})
    return {"steps_per_sec": rate, "eta_seconds": eta}


def make_progress(num_steps: int, writer: MetricWriter,
                  every_steps: int) -> Callable[[int], dict[str, float] | None]:
  """A ProgressReport on process 0, a no-op elsewhere."""
  if jax.process_index() > 0:
    return lambda step: None
  return ProgressReport(num_steps, writer, every_steps)
