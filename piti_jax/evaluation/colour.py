"""Colour statistics of an image set: what guidance does to colours (over-saturation, contrast).

Per image, in [0, 1] units: the mean HSV saturation, the mean and std of each RGB channel,
and the fraction of clipped channel values (0 or 255). The set's value is the mean over its
images.
"""

import numpy as np


def colour_statistics(images: np.ndarray) -> dict[str, float]:
  """uint8 (N, H, W, 3) -> {"saturation", "clipped", "mean_r/g/b", "std_r/g/b"} averaged over images."""
  rgb = images.astype(np.float64) / 255.0
  high, low = rgb.max(axis=-1), rgb.min(axis=-1)
  saturation = np.where(high > 0, (high - low) / np.maximum(high, 1e-12), 0.0)
  stats = {"saturation": float(saturation.mean(axis=(1, 2)).mean()),
           "clipped": float(np.mean((images == 0) | (images == 255)))}
  for index, channel in enumerate("rgb"):
    values = rgb[..., index].reshape(len(rgb), -1)
    stats[f"mean_{channel}"] = float(values.mean(axis=1).mean())
    stats[f"std_{channel}"] = float(values.std(axis=1).mean())
  return stats
