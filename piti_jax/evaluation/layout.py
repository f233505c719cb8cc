"""Layout fidelity: mIoU of labels read back from samples against the input label maps.

On the built-in `shapes` dataset every class has its own colour family, so
`shapes_scenes.classify_pixels` (the oracle) reads a label map from pixels alone. A sample
that follows its mask gets labels that agree with the mask; the oracle's mIoU on the real
images of the same masks is the ceiling a perfect generator would reach.

mIoU is the standard segmentation score: intersections and unions are summed over all
images per class, IoU = intersection / union per class, and the mean runs over the classes
that occur in the input masks. Pixels the oracle cannot read (label 255, too dark) count
as wrong.
"""

import numpy as np
from PIL import Image

from piti_jax.data import conditions, shapes_scenes
from piti_jax.errors import PitiError

UNREADABLE = 255


def mean_iou(predicted: np.ndarray, target: np.ndarray, num_classes: int) -> dict:
  """mIoU of label maps.

  Args:
    predicted: uint8 (N, H, W) labels (UNREADABLE where unknown).
    target: uint8 (N, H, W) labels in [0, num_classes).
    num_classes: number of classes.

  Returns:
    {"miou": float, "per_class": {class id: IoU} for the classes present in `target`,
     "pixel_accuracy": float}.
  """
  if predicted.shape != target.shape:
    raise PitiError(f"label maps of shape {predicted.shape} and {target.shape} cannot be compared.")
  if target.size and int(target.max()) >= num_classes:
    raise PitiError(f"target labels go up to {int(target.max())} but there are {num_classes} classes.")
  target = target.astype(np.int64).ravel()
  predicted = predicted.astype(np.int64).ravel()
  predicted = np.where(predicted < num_classes, predicted, num_classes)  # unreadable -> an extra column
  counts = np.bincount(target * (num_classes + 1) + predicted, minlength=num_classes * (num_classes + 1))
  confusion = counts.reshape(num_classes, num_classes + 1)
  intersection = np.diag(confusion[:, :num_classes])
  union = confusion.sum(axis=1) + confusion[:, :num_classes].sum(axis=0) - intersection
  present = confusion.sum(axis=1) > 0
  per_class = {int(c): float(intersection[c] / union[c]) for c in np.flatnonzero(present)}
  return {"miou": float(np.mean(list(per_class.values()))) if per_class else float("nan"),
          "per_class": per_class, "pixel_accuracy": float(intersection.sum() / max(target.size, 1))}


def resize_labels(labels: np.ndarray, size: int) -> np.ndarray:
  """uint8 (N, S, S) label maps -> (N, size, size), nearest neighbour (as conditions are resized)."""
  if labels.shape[1:] == (size, size):
    return labels
  return np.stack([np.asarray(Image.fromarray(m).resize((size, size), Image.NEAREST)) for m in labels])


def mask_labels(masks: np.ndarray, num_classes: int = shapes_scenes.NUM_CLASSES) -> np.ndarray:
  """Colour-coded masks uint8 (N, S, S, 3) -> class ids uint8 (N, S, S) (every colour must be in the palette)."""
  return np.stack([conditions.labels_from_colors(m, num_classes=num_classes) for m in masks]).astype(np.uint8)


def shapes_layout_miou(images: np.ndarray, labels: np.ndarray) -> dict:
  """Oracle mIoU of `shapes` images against their label maps, at the images' resolution.

  Args:
    images: uint8 (N, H, W, 3) samples (or real images, for the ceiling).
    labels: uint8 (N, S, S) input label maps; resized to (H, W) by nearest neighbour.
  """
  predicted = np.stack([shapes_scenes.classify_pixels(image) for image in images])
  return mean_iou(predicted, resize_labels(labels, images.shape[1]), shapes_scenes.NUM_CLASSES)
