"""The one path layer: every file the project reads or writes goes through `etils.epath`.

Local paths, `gs://` and the other fsspec schemes behave the same. Remote schemes go through
fsspec (gcsfs for `gs://`): `piti_jax/__init__.py` sets EPATH_USE_TF=false unless the user set
it, because TensorFlow's own GCS client cannot be pointed anywhere but the real service and so
could not be tested here; orbax's array files go through tensorstore either way.

Only process 0 writes shared files (`is_leader`); every process reads them.
"""

import errno
import json
import os
import shutil
from typing import Any

from etils import epath

from piti_jax.errors import PitiError

PathLike = str | os.PathLike


def path(value: PathLike) -> epath.Path:
  """An epath.Path: URIs (gs://...) as given, local paths with `~` expanded and made absolute."""
  text = os.fspath(value)
  if is_remote(text):
    return epath.Path(text)
  return epath.Path(os.path.abspath(os.path.expanduser(text)))


def is_remote(value: PathLike) -> bool:
  """True for a URI such as gs://bucket/dir (anything with a scheme)."""
  return "://" in os.fspath(value)


def is_leader() -> bool:
  """True on process 0, the one process that writes shared files."""
  import jax  # pylint: disable=import-outside-toplevel

  return jax.process_index() == 0


def write_text(target: PathLike, text: str) -> None:
  """Writes `text` to `target` under a temporary name, then renames it (readers never see half a file)."""
  write_bytes(target, text.encode("utf-8"))


def write_json(target: PathLike, value: Any) -> None:
  """Like `write_text`, for a JSON value."""
  write_text(target, json.dumps(value, indent=2, sort_keys=True))


def write_bytes(target: PathLike, data: bytes) -> None:
  """Writes `data` (e.g. an encoded PNG) to `target` under a temporary name, then renames it."""
  target = path(target)
  target.parent.mkdir(parents=True, exist_ok=True)
  staging = target.parent / f".{target.name}.tmp"
  staging.write_bytes(data)
  staging.replace(target)


def remove_tree(target: PathLike) -> None:
  """Deletes a directory tree (or file) if it exists."""
  target = path(target)
  if target.is_dir():
    target.rmtree()
  elif target.exists():
    target.unlink()


def free_bytes(target: PathLike) -> int | None:
  """Free bytes on the filesystem holding `target` (its nearest existing parent); None for remote storage."""
  if is_remote(target):
    return None
  current = os.path.abspath(os.path.expanduser(os.fspath(target)))
  while not os.path.exists(current):
    current = os.path.dirname(current)
  return shutil.disk_usage(current).free


def prepare_workdir(value: PathLike, *, create: bool) -> epath.Path:
  """Checks that `value` can be a workdir (a writable directory) and, with `create`, makes it.

  Raises PitiError naming the path when it is a file, lies under a file, or cannot be written.
  """
  workdir = path(value)
  text = os.fspath(workdir)
  if not is_remote(workdir):
    parent = text
    while not os.path.exists(parent):
      parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
      what = "is a file" if parent == text else f"lies under the file {parent}"
      raise PitiError(f"workdir {text} {what}; pass a directory path for --workdir.")
  if not create:
    return workdir
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / f".write_probe.{os.getpid()}"
    probe.write_text("")
    probe.unlink()
  except OSError as error:
    reason = os.strerror(error.errno) if error.errno else str(error)
    raise PitiError(f"cannot write to workdir {text} ({reason}); pass a writable --workdir.") from error
  return workdir


def out_of_space(error: BaseException) -> bool:
  """True when `error` (or an exception it was raised from) is a full disk."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
      return True
    if "No space left on device" in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False
