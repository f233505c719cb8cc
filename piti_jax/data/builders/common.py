"""Helpers shared by the dataset builders: PNG encoding, reading source files, bad-input policy.

Source paths are strings, local or URIs (gs://...); every read goes through `piti_jax.storage`.
"""

import io
import os
from collections.abc import Iterator

import numpy as np
from absl import logging
from PIL import Image, UnidentifiedImageError

from piti_jax import storage
from piti_jax.errors import PitiError

BAD_EXAMPLE_POLICIES = ("skip", "raise")


def encode_png(array: np.ndarray) -> bytes:
  """uint8 (H, W), (H, W, 1) or (H, W, 3) -> PNG bytes (fast compression)."""
  if array.ndim == 3 and array.shape[-1] == 1:
    array = array[..., 0]
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="png", compress_level=1)
  return buffer.getvalue()


def require_files(manual_dir: str, relative_paths: list[str], *, dataset: str, how: str) -> None:
  """Raises PitiError listing exactly which expected files or folders are missing under manual_dir.

  Args:
    manual_dir: the folder the user put the dataset into.
    relative_paths: paths that must exist, relative to manual_dir.
    dataset: dataset name for the message.
    how: one sentence telling the user where the files come from and how to lay them out.
  """
  if not manual_dir:
    raise PitiError(f"{dataset}: no manual_dir given; set data.manual_dir to the folder holding the files. {how}")
  missing = [p for p in relative_paths if not exists(os.path.join(manual_dir, p))]
  if missing:
    listed = ", ".join(os.path.join(manual_dir, p) for p in missing)
    raise PitiError(f"{dataset}: missing {listed}. {how} Nothing is downloaded automatically.")


def exists(path: str) -> bool:
  """Whether the file or folder `path` (local or URI) exists."""
  return storage.path(path).exists()


def list_names(folder: str) -> list[str]:
  """The sorted names of the entries of `folder` (local or URI), like sorted(os.listdir)."""
  return sorted(entry.name for entry in storage.path(folder).iterdir())


def _without_scheme(path: os.PathLike) -> str:
  return os.fspath(path).split("://", 1)[-1]


def walk_files(root: str) -> Iterator[tuple[str, list[str]]]:
  """(folder, its file names) for `root` and every folder below it, like os.walk.

  Folders are spelled as `root` joined with their relative path, so a local `root` given relative
  stays relative and a URI stays a URI (the remote walk reports folders without the scheme).
  """
  base = storage.path(root)
  for directory, _, files in base.walk():
    relative = os.path.relpath(_without_scheme(directory), _without_scheme(base))
    yield (root if relative == "." else os.path.join(root, relative)), files


def read_bytes(path: str) -> bytes:
  """The content of the file `path` (local or URI)."""
  return storage.path(path).read_bytes()


class BadInputLog:
  """Applies the on_bad_example policy to unreadable inputs and counts what was skipped.

  Attributes:
    policy: "skip" (log, count and leave the example out) or "raise" (stop with PitiError).
    skipped: list of {"file": path, "reason": text} for every skipped example.
  """

  def __init__(self, policy: str):
    if policy not in BAD_EXAMPLE_POLICIES:
      raise PitiError(f"on_bad_example={policy!r} is not one of {BAD_EXAMPLE_POLICIES}.")
    self.policy = policy
    self.skipped: list[dict[str, str]] = []

  def report(self, path: str, reason: str) -> None:
    """Records an unreadable input, or raises when the policy is "raise"."""
    if self.policy == "raise":
      raise PitiError(f"{path}: {reason}. Remove or replace the file, or set on_bad_example='skip' to leave it out.")
    logging.warning("skipping %s: %s", path, reason)
    self.skipped.append({"file": path, "reason": reason})


def read_image_bytes(path: str, *, mode: str, bad_inputs: BadInputLog) -> tuple[bytes, np.ndarray] | None:
  """Reads and fully decodes an image file.

  Args:
    path: image file.
    mode: PIL mode to convert to ("RGB" or "L").
    bad_inputs: policy for unreadable or corrupt files.

  Returns:
    (file bytes, uint8 array (H, W, 3) or (H, W)) or None when the file was skipped.
  """
  try:
    data = read_bytes(path)
    with Image.open(io.BytesIO(data)) as image:
      image.load()
      array = np.asarray(image.convert(mode))
  except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
    bad_inputs.report(path, f"unreadable or corrupt image ({type(error).__name__}: {error})")
    return None
  return data, array


def read_label_image(path: str) -> Image.Image:
  """Opens a label/condition PNG exactly (no conversion); a bad file is a PitiError naming it."""
  try:
    with Image.open(io.BytesIO(read_bytes(path))) as image:
      image.load()
      return image.copy()
  except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
    raise PitiError(f"{path}: cannot read this label image ({type(error).__name__}: {error}); "
                    "replace it with a valid PNG.") from error


def check_same_size(path: str, size: tuple[int, int], image_path: str, image_size: tuple[int, int]) -> None:
  """PitiError naming `path` if its (W, H) size differs from its image's size."""
  if size != image_size:
    raise PitiError(f"{path}: size {size[0]}x{size[1]} differs from its image {image_path} "
                    f"({image_size[0]}x{image_size[1]}); the condition must have the image's size.")
