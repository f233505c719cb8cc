"""Helpers shared by the dataset builders: PNG encoding, reading local files, bad-input policy."""

import io
import os

import numpy as np
from absl import logging
from PIL import Image, UnidentifiedImageError

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
  missing = [p for p in relative_paths if not os.path.exists(os.path.join(manual_dir, p))]
  if missing:
    listed = ", ".join(os.path.join(manual_dir, p) for p in missing)
    raise PitiError(f"{dataset}: missing {listed}. {how} Nothing is downloaded automatically.")


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
    with open(path, "rb") as f:
      data = f.read()
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
    with Image.open(path) as image:
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
