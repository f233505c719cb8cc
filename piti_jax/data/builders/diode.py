"""DIODE depth + normals from the files in manual_dir, rendered as PITI's preprocess_depth.

manual_dir layout (the official DIODE archives unpacked):
  train/<indoors|outdoor>/<scene>/<scan>/<name>.png with <name>_depth.npy, <name>_depth_mask.npy
  and <name>_normal.npy beside it; val/... the same.
Each example: the image bicubic-resized to 256x256; depth, validity mask and normals
nearest-resized to 256x256 (OpenCV's nearest rule, source index floor(i * scale)); depth rendered
with the jet colormap of log depth (invalid black) and normals as (n - min) / 2, both RGB PNGs.
The depth task's condition is [normal RGB, depth RGB] (6 channels).
"""

import io
import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from piti_jax.data import conditions
from piti_jax.data.builders.base import LocalFilesBuilder
from piti_jax.data.builders.common import (encode_png, exists, read_bytes, read_image_bytes, require_files,
                                           walk_files)
from piti_jax.errors import PitiError

SIZE = 256
SPLITS = {"train": "train", "validation": "val"}
SUFFIXES = ("_depth.npy", "_depth_mask.npy", "_normal.npy")
HOW = ("Unpack DIODE's train and val archives (RGB, depth, depth mask and normals) into <manual_dir>/train and "
       "<manual_dir>/val, keeping <name>.png, <name>_depth.npy, <name>_depth_mask.npy and <name>_normal.npy together.")


def nearest_resize(array: np.ndarray, size: int) -> np.ndarray:
  """(H, W, ...) -> (size, size, ...) picking source index floor(i * H / size) (cv2.INTER_NEAREST)."""
  rows = np.floor(np.arange(size) * array.shape[0] / size).astype(np.int64)
  cols = np.floor(np.arange(size) * array.shape[1] / size).astype(np.int64)
  return array[rows][:, cols]


def list_images(folder: str) -> list[str]:
  """All DIODE RGB images (.png) under folder, sorted."""
  found = []
  for root, files in walk_files(folder):
    found.extend(os.path.join(root, f) for f in files if f.endswith(".png"))
  return sorted(found)


def _load(path: str, image_path: str) -> np.ndarray:
  if not exists(path):
    raise PitiError(f"missing {path} for image {image_path}. " + HOW)
  try:
    return np.load(io.BytesIO(read_bytes(path))).astype(np.float32)
  except (OSError, ValueError) as error:
    raise PitiError(f"{path}: cannot read this .npy file ({error}); replace it with DIODE's original.") from error


def diode_example(image_path: str, bad_inputs) -> dict | None:
  """Reads one DIODE sample and renders its depth and normal maps (None when the image is skipped)."""
  read = read_image_bytes(image_path, mode="RGB", bad_inputs=bad_inputs)
  if read is None:
    return None
  rgb = read[1]
  stem = image_path[:-len(".png")]
  depth_path, mask_path, normal_path = (stem + s for s in SUFFIXES)
  depth = _load(depth_path, image_path).squeeze()
  mask = _load(mask_path, image_path).squeeze()
  normal = _load(normal_path, image_path)
  expected = rgb.shape[:2]
  for path, array, shape in ((depth_path, depth, expected), (mask_path, mask, expected),
                             (normal_path, normal, expected + (3,))):
    if array.shape != shape:
      raise PitiError(f"{path}: shape {array.shape} does not match its image {image_path} (expected {shape}).")
  image = np.asarray(Image.fromarray(rgb).resize((SIZE, SIZE), Image.BICUBIC))
  depth_rgb = conditions.render_depth(nearest_resize(depth, SIZE), nearest_resize(mask, SIZE))
  normal_rgb = conditions.render_normals(nearest_resize(normal, SIZE))
  return {"file_name": image_path, "image": encode_png(image), "depth": encode_png(depth_rgb),
          "normal": encode_png(normal_rgb)}


class Diode(LocalFilesBuilder):
  """DIODE images with rendered depth and normal maps for PITI's depth task."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}

  def _info(self) -> tfds.core.DatasetInfo:
    image = lambda: tfds.features.Image(shape=(SIZE, SIZE, 3), dtype=np.uint8)
    return self._info_with_metadata(
        description="DIODE images with jet-rendered log depth and rendered normals at 256x256.",
        features=tfds.features.FeaturesDict({"file_name": tfds.features.Text(), "image": image(),
                                             "depth": image(), "normal": image()}))

  def _split_generators(self, dl_manager):
    del dl_manager  # Only the files in manual_dir; nothing is downloaded.
    require_files(self.manual_dir, list(SPLITS.values()), dataset="diode", how=HOW)
    return {split: self._generate_examples(split, folder) for split, folder in SPLITS.items()}

  def _generate_examples(self, split: str, folder: str):
    start = len(self.bad_inputs.skipped)
    images = list_images(os.path.join(self.manual_dir, folder))
    if not images:
      raise PitiError(f"no DIODE images (.png) under {os.path.join(self.manual_dir, folder)}. " + HOW)
    for image_path in images:
      example = diode_example(image_path, self.bad_inputs)
      if example is not None:
        yield os.path.relpath(image_path, self.manual_dir), example
    self.record_skipped(split, start)


def builder_from_config(config) -> Diode:
  return Diode(data_dir=os.path.expanduser(config.data_dir), manual_dir=config.manual_dir,
               on_bad_example=config.on_bad_example, file_format="array_record")
