"""Binary sketches from images without learned weights: a Canny-style edge detector (NumPy/SciPy).

PITI's sketches are HED edge probabilities thresholded at 0.6 (see `piti_jax.data.hed`). When no HED
weights are at hand, `canny_sketch` gives line drawings of the same format, but not the same drawings
(thin edges of every intensity step; see `piti_jax.data.builders.coco_sketch` for what that changes):
  1. luma of the RGB image, Gaussian smoothing (sigma 2 px);
  2. Sobel gradients, magnitude, non-maximum suppression along the gradient direction
     (quantised to 0, 45, 90, 135 degrees), so edges are one pixel wide;
  3. hysteresis: thresholds adapt to the image - `high` is the 80th percentile of the surviving
     magnitudes (at least 2% of the maximum possible Sobel response), `low` = 0.4 x high; a weak
     pixel is kept when its 8-connected component contains a strong one;
  4. components shorter than `min_length` pixels are dropped (HED rarely fires on specks).
Output convention as HED sketches: uint8 (H, W), 255 on edges, 0 elsewhere.
"""

import numpy as np
from scipy import ndimage

SIGMA = 2.0
HIGH_PERCENTILE = 80.0
LOW_RATIO = 0.4
MIN_LENGTH = 10
_MAX_SOBEL = 4.0 * np.sqrt(2.0) * 255.0  # gradient magnitude of a full black/white step under Sobel


def _non_maximum_suppression(magnitude: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
  """Keeps pixels that are at least as strong as both neighbours along the gradient direction."""
  angle = (np.rad2deg(np.arctan2(gy, gx)) + 180.0) % 180.0
  sector = (np.round(angle / 45.0).astype(np.int64)) % 4  # 0: horizontal gradient, 1: 45, 2: vertical, 3: 135
  padded = np.pad(magnitude, 1)
  height, width = magnitude.shape
  shift = lambda dr, dc: padded[1 + dr:1 + dr + height, 1 + dc:1 + dc + width]
  steps = {0: (0, 1), 1: (1, 1), 2: (1, 0), 3: (1, -1)}
  keep = np.zeros(magnitude.shape, bool)
  for index, (dr, dc) in steps.items():
    local = (magnitude >= shift(dr, dc)) & (magnitude >= shift(-dr, -dc))
    keep |= (sector == index) & local
  return keep & (magnitude > 0)


def canny_sketch(image: np.ndarray, *, sigma: float = SIGMA, min_length: int = MIN_LENGTH) -> np.ndarray:
  """RGB uint8 (H, W, 3) -> binary sketch uint8 (H, W) with 255 on edges (see the module docstring)."""
  luma = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
  smooth = ndimage.gaussian_filter(luma, sigma)
  gx, gy = ndimage.sobel(smooth, axis=1), ndimage.sobel(smooth, axis=0)
  magnitude = np.hypot(gx, gy)
  candidates = _non_maximum_suppression(magnitude, gx, gy)
  if not candidates.any():
    return np.zeros(luma.shape, np.uint8)
  high = max(float(np.percentile(magnitude[candidates], HIGH_PERCENTILE)), 0.02 * _MAX_SOBEL)
  weak = candidates & (magnitude >= LOW_RATIO * high)
  components, count = ndimage.label(weak, structure=np.ones((3, 3)))
  if count == 0:
    return np.zeros(luma.shape, np.uint8)
  strong = np.zeros(count + 1, bool)
  strong[np.unique(components[weak & (magnitude >= high)])] = True
  sizes = np.bincount(components.ravel(), minlength=count + 1)
  keep = strong & (sizes >= min_length)
  keep[0] = False
  return np.where(keep[components], 255, 0).astype(np.uint8)
