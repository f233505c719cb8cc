"""TensorBoard event files written without TensorFlow.

An event file is a sequence of `Event` protos (tensorboard.compat.proto) in TFRecord framing,
written by the `tensorboard` package's pure-Python `RecordWriter` (length, masked CRC32C of
the length, payload, masked CRC32C of the payload). TensorBoard's own `EventFileWriter`
opens its file through `tensorboard.compat.tf`, which imports TensorFlow whenever it is
installed (0.6-0.8 GiB resident); here the file goes through `piti_jax.storage` instead.

A local file is flushed after every event, so TensorBoard shows each as it comes. An object
store (gs://...) cannot append to an object: there the records go to a local temporary file
whose whole content replaces the remote file on `flush()` and `close()`, and at most every
`upload_every_secs` while events arrive.
"""

import io
import itertools
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping

import numpy as np
from PIL import Image
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from piti_jax import storage

_FILE_NUMBERS = itertools.count()  # two files of one process opened in the same second get different names


class EventFile:
  """One new TensorBoard event file in `logdir` (local path or URI), named like TensorFlow names its own."""

  def __init__(self, logdir: str, upload_every_secs: float = 120.0):
    directory = storage.path(logdir)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_FILE_NUMBERS)}"
    self.path = directory / name
    self._remote = storage.is_remote(logdir)
    self._upload_every_secs = upload_every_secs
    self._file = tempfile.TemporaryFile() if self._remote else self.path.open("wb")
    self._records = RecordWriter(self._file)
    self._uploaded = time.monotonic()
    self.add(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
    self.flush()

  def add(self, event: event_pb2.Event) -> None:
    """Appends one event (see the module docstring for when it reaches a remote file)."""
    self._records.write(event.SerializeToString())
    if not self._remote:
      self._file.flush()
    elif time.monotonic() - self._uploaded >= self._upload_every_secs:
      self.flush()

  def flush(self) -> None:
    """Makes every event added so far readable at `self.path`."""
    self._file.flush()
    if self._remote:
      self._file.seek(0)
      with self.path.open("wb") as remote:
        shutil.copyfileobj(self._file, remote)
      self._uploaded = time.monotonic()

  def close(self) -> None:
    self.flush()
    self._file.close()


def scalars_event(step: int, scalars: Mapping[str, float]) -> event_pb2.Event:
  """One event holding each scalar as a `simple_value` under its name as the tag."""
  values = [summary_pb2.Summary.Value(tag=tag, simple_value=float(value)) for tag, value in scalars.items()]
  return event_pb2.Event(wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=values))


def image_event(step: int, tag: str, image: np.ndarray) -> event_pb2.Event:
  """One event holding `image`, uint8 (H, W, 3) RGB, as a PNG image summary under `tag`."""
  png = io.BytesIO()
  Image.fromarray(image).save(png, format="PNG")
  summary_image = summary_pb2.Summary.Image(height=image.shape[0], width=image.shape[1], colorspace=3,
                                            encoded_image_string=png.getvalue())
  value = summary_pb2.Summary.Value(tag=tag, image=summary_image)
  return event_pb2.Event(wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=[value]))
