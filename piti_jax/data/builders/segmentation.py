"""Shared example construction for the semantic-mask datasets (COCO-Stuff, ADE20K)."""

import io
import os

import numpy as np
from PIL import Image

from piti_jax.data import conditions
from piti_jax.data.builders.common import (BadInputLog, check_same_size, encode_png, exists, list_names,
                                           read_image_bytes, read_label_image)
from piti_jax.errors import PitiError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def list_pairs(image_dir: str, label_dir: str, *, how: str) -> list[tuple[str, str]]:
  """(image, label) path pairs; a missing label is a PitiError naming where it should be."""
  pairs = []
  for name in list_names(image_dir):
    stem, extension = os.path.splitext(name)
    if extension.lower() not in IMAGE_EXTENSIONS:
      continue
    label_path = os.path.join(label_dir, stem + ".png")
    if not exists(label_path):
      raise PitiError(f"missing label map {label_path} for image {os.path.join(image_dir, name)}; " + how)
    pairs.append((os.path.join(image_dir, name), label_path))
  if not pairs:
    raise PitiError(f"no images (.jpg/.png) in {image_dir}. " + how)
  return pairs


def segmentation_features(tfds):
  """Fields: image (original encoded file), label (class ids, 255 unlabelled), mask (PITI colours)."""
  return tfds.features.FeaturesDict({
      "file_name": tfds.features.Text(),
      "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
      "label": tfds.features.Image(shape=(None, None, 1), dtype=np.uint8),
      "mask": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
  })


def image_field(data: bytes, array: np.ndarray) -> bytes:
  """The original file when it decodes to RGB, else the pixels re-encoded as an RGB PNG."""
  with Image.open(io.BytesIO(data)) as image:
    if image.mode == "RGB" and image.format in ("JPEG", "PNG"):
      return data
  return encode_png(array)


def segmentation_example(image_path: str, label_path: str, *, num_classes: int, label_offset: int,
                         bad_inputs: BadInputLog) -> dict | None:
  """Reads one image and its class-id PNG and returns the tfds example (None when the image is skipped).

  Args:
    image_path, label_path: the files.
    num_classes: number of classes (ids 0..num_classes-1 after the offset).
    label_offset: subtracted from the stored values (1 for ADE20K, whose 0 means "other", which
      becomes 255 = unlabelled through uint8 wrap-around); 0 for COCO-Stuff.
    bad_inputs: what to do with an unreadable image.

  Raises:
    PitiError: naming the label file if it is not a single-channel image of the image's size or holds
      ids outside the dataset's range.
  """
  read = read_image_bytes(image_path, mode="RGB", bad_inputs=bad_inputs)
  if read is None:
    return None
  data, rgb = read
  label_image = read_label_image(label_path)
  if label_image.mode not in ("L", "P"):
    raise PitiError(f"{label_path}: a label map must be a single-channel (greyscale or palette) PNG of class ids, "
                    f"not mode {label_image.mode}; use the dataset's class-id annotation files.")
  check_same_size(label_path, label_image.size, image_path, (rgb.shape[1], rgb.shape[0]))
  values = np.asarray(label_image).astype(np.int64)
  unlabelled = 255 if label_offset == 0 else 0
  bad = ((values < label_offset) | (values >= num_classes + label_offset)) & (values != unlabelled)
  if bad.any():
    raise PitiError(f"{label_path}: values {np.unique(values[bad])[:10].tolist()} are not class ids of this dataset "
                    f"(expected {label_offset}..{num_classes - 1 + label_offset} and {unlabelled} for unlabelled); "
                    "check that this is the right annotation file.")
  labels = ((values - label_offset) % 256).astype(np.uint8)
  mask = conditions.colorize_labels(labels, num_classes=num_classes, source=label_path)
  return {"file_name": image_path, "image": image_field(data, rgb), "label": encode_png(labels),
          "mask": encode_png(mask)}
