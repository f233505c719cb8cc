"""Condition images as PITI's task encoders see them (NumPy only, no TensorFlow).

- Semantic masks: label ids colour-coded with the Pascal-VOC bit-interleaved colormap at
  index id + 1 (so id 0 gets (128, 0, 0)); the "unlabelled" id 255 stays black. The inverse maps a
  user-supplied colour mask back to ids and reports colours that no class owns.
- Sketches: binary edge maps (edges non-zero) turned into the L1 (taxicab) distance to the nearest
  edge pixel, clipped at 255, then scaled to [-1, 1] (edge pixels -1, each pixel of distance +2/255).
- Depth + normal: the reference's renderings (jet colormap of log depth with invalid pixels black;
  normals mapped to RGB by (n - min) / 2).
- The null condition (`null_condition`) is an all-ones image (white in [-1, 1] space), as PITI uses
  for dropout and for the unconditional branch of classifier-free guidance; for text, the empty caption.
"""

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import ndimage

from piti_jax import storage
from piti_jax.errors import PitiError

UNLABELLED = 255
MAX_DISTANCE = 255
DEPTH_MIN = 0.5
DEPTH_MAX = 300.0


@functools.cache
def voc_colormap(num_colors: int = 256) -> np.ndarray:
  """The Pascal-VOC bit-interleaved colormap.

  Bit j of the index (j = 0, 3, 6, ... for red; 1, 4, 7, ... green; 2, 5, 8, ... blue) is
  written to bit 7 - j // 3 of its channel.

  Returns:
    uint8 (num_colors, 3); row 0 is black. Read-only.
  """
  index = np.arange(num_colors, dtype=np.int64)
  colors = np.zeros((num_colors, 3), np.int64)
  for bit_group in range(8):
    for channel in range(3):
      bit = (index >> (3 * bit_group + channel)) & 1
      colors[:, channel] |= bit << (7 - bit_group)
  colors = colors.astype(np.uint8)
  colors.setflags(write=False)
  return colors


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
  """uint8 (..., 3) -> int64 (...) with r << 16 | g << 8 | b."""
  rgb = rgb.astype(np.int64)
  return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def colorize_labels(labels: np.ndarray, *, num_classes: int, source: str = "label map") -> np.ndarray:
  """Colour-codes a label map as PITI's preprocess_mask does.

  Args:
    labels: integer (H, W) or (H, W, 1) with ids in [0, num_classes) or 255 (unlabelled).
    num_classes: number of real classes (182 for COCO-Stuff, 150 for ADE20K).
    source: name of the file the labels came from, used in error messages.

  Returns:
    uint8 (H, W, 3): id -> voc_colormap()[id + 1]; 255 -> black.

  Raises:
    PitiError: if any id is outside [0, num_classes) and not 255.
  """
  if labels.ndim == 3 and labels.shape[-1] == 1:
    labels = labels[..., 0]
  if labels.ndim != 2:
    raise PitiError(f"{source}: a label map must be (H, W) or (H, W, 1), got shape {labels.shape}; "
                    "pass a single-channel image of class ids.")
  if labels.dtype != np.uint8:
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() > UNLABELLED:
      outside = np.unique(labels[(labels < 0) | (labels > UNLABELLED)])[:10].tolist()
      raise PitiError(f"{source}: label ids {outside} are outside 0..{num_classes - 1} (and not {UNLABELLED} = "
                      "unlabelled); check that the file is a class-id map of this dataset.")
  present = np.flatnonzero(np.bincount(labels.ravel(), minlength=UNLABELLED + 1))
  bad = present[(present >= num_classes) & (present != UNLABELLED)]
  if bad.size:
    raise PitiError(f"{source}: label ids {bad[:10].tolist()} are outside 0..{num_classes - 1} (and not {UNLABELLED} = "
                    "unlabelled); check that the file is a class-id map of this dataset.")
  table = np.zeros((UNLABELLED + 1, 3), np.uint8)
  table[:num_classes] = voc_colormap(num_classes + 1)[1:]
  return table[labels]


def labels_from_colors(mask: np.ndarray, *, num_classes: int, source: str = "colour mask") -> np.ndarray:
  """Inverse of `colorize_labels`: a colour-coded mask back to class ids.

  Args:
    mask: uint8 (H, W, 3) colour mask (RGB).
    num_classes: number of real classes of the dataset.
    source: name of the file, used in error messages.

  Returns:
    uint8 (H, W): class ids, 255 where the mask is black.

  Raises:
    PitiError: naming the file and the first unknown colours if any pixel has a colour that is
      neither black nor the colour of a class id.
  """
  if mask.ndim != 3 or mask.shape[-1] != 3:
    raise PitiError(f"{source}: a colour mask must be an RGB image (H, W, 3), got shape {mask.shape}; "
                    "save the mask as an RGB PNG.")
  known = _pack_rgb(voc_colormap(num_classes + 1))  # index 0 is black -> unlabelled.
  ids = np.concatenate([[UNLABELLED], np.arange(num_classes)])
  order = np.argsort(known)
  packed = _pack_rgb(mask)
  position = np.searchsorted(known[order], packed)
  position = np.minimum(position, len(known) - 1)
  found = known[order][position] == packed
  if not found.all():
    unknown = np.unique(packed[~found])
    shown = [((int(c) >> 16) & 255, (int(c) >> 8) & 255, int(c) & 255) for c in unknown[:8]]
    raise PitiError(f"{source}: {unknown.size} colour(s) belong to no class, e.g. {shown}; a mask may only use "
                    f"the VOC colormap colours of ids 0..{num_classes - 1} (colour index id + 1) and black. Save "
                    "masks without anti-aliasing or resampling (nearest neighbour only).")
  return ids[order][position].astype(np.uint8)


def sketch_distance_map(sketch: np.ndarray) -> np.ndarray:
  """L1 distance to the nearest edge pixel, clipped at 255 (cv2 DIST_L1 with mask 3 is exact taxicab).

  Args:
    sketch: (H, W) or (H, W, 1) edge map; non-zero pixels are edges (white edges on black).

  Returns:
    uint8 (H, W); 0 on edges, 255 everywhere when the sketch has no edge.
  """
  if sketch.ndim == 3:
    sketch = sketch[..., 0]
  edges = sketch != 0
  if not edges.any():
    return np.full(sketch.shape, MAX_DISTANCE, np.uint8)
  distance = ndimage.distance_transform_cdt(~edges, metric="taxicab")
  return np.minimum(distance, MAX_DISTANCE).astype(np.uint8)


def to_unit_range(image: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [-1, 1] (ToTensor then (x - 0.5) / 0.5)."""
  return image.astype(np.float32) / 127.5 - 1.0


def sketch_condition(sketch: np.ndarray) -> np.ndarray:
  """Binary sketch -> the sketch encoder's input, float32 (H, W, 1) in [-1, 1]."""
  return to_unit_range(sketch_distance_map(sketch))[..., None]


def _jet_lut(size: int = 256) -> np.ndarray:
  """The jet colormap as a float (size, 3) table (piecewise-linear segments of matplotlib's jet)."""
  segments = {
      0: ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
      1: ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
      2: ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
  }
  position = np.linspace(0.0, 1.0, size)
  lut = np.zeros((size, 3))
  for channel, points in segments.items():
    xs, ys = zip(*points)
    lut[:, channel] = np.interp(position, xs, ys)
  return lut


JET = _jet_lut()
JET_UINT8 = (JET * 255).astype(np.uint8)  # matplotlib's float -> byte conversion truncates


def render_depth(depth: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
  """Renders metric depth as PITI's DIODE preprocessing does.

  Depth is clipped to [0.5, min(300, 99th percentile)], logged, normalised by
  log(max + 1.01) into [0, 1] and mapped through the jet colormap; invalid pixels are black.

  Args:
    depth: float (H, W) or (H, W, 1) depth in metres.
    valid: bool-like (H, W) validity mask, or None for all valid.

  Returns:
    uint8 (H, W, 3).
  """
  depth = np.asarray(depth, np.float32).reshape(depth.shape[:2])
  valid = np.ones(depth.shape, bool) if valid is None else np.asarray(valid).reshape(depth.shape) > 0
  max_depth = min(DEPTH_MAX, float(np.percentile(depth, 99)))
  max_depth = max(max_depth, DEPTH_MIN)
  clipped = np.clip(depth, DEPTH_MIN, max_depth)
  normalised = np.log(clipped) / np.log(max_depth + 1.01)
  index = np.clip((normalised * len(JET)).astype(np.int64), 0, len(JET) - 1)
  rgb = JET_UINT8[index]
  rgb[~valid] = 0
  return rgb


def render_normals(normals: np.ndarray) -> np.ndarray:
  """Renders a normal map as PITI's DIODE preprocessing does.

  Pixels whose three components sum to zero (no normal) are set to the map's minimum, then
  the map is shifted by its minimum and halved, clipped to [0, 1].

  Args:
    normals: float (H, W, 3), unit normals in [-1, 1] (zero where unknown).

  Returns:
    uint8 (H, W, 3).
  """
  normals = np.asarray(normals, np.float32)
  missing = np.sum(normals, axis=-1, keepdims=True) == 0.0
  low = float(normals.min())
  normals = normals + missing.astype(np.float32) * low
  rgb = np.clip((normals - float(normals.min())) / 2.0, 0.0, 1.0)
  return (rgb * 255).astype(np.uint8)


def null_condition(cond: Any, xp: Any = np) -> Any:
  """The null condition in place of `cond`, for condition dropout and unguided classifier-free branches.

  Args:
    cond: a condition image (..., H, W, C) in [-1, 1], or a text condition {"tokens": int (..., L),
      "mask": bool (..., L)}.
    xp: the array module of `cond`: numpy (the data pipeline) or jax.numpy (inside jitted sampling).
  Returns:
    an all-ones image like `cond` (white in [-1, 1], PITI's ones_like), or the empty caption: the
    same tokens with every position masked out (the text encoder puts its padding embedding at
    masked positions, whatever the token there, as GLIDE's empty caption).
  """
  if isinstance(cond, Mapping):
    return {**cond, "mask": xp.zeros_like(cond["mask"])}
  return xp.ones_like(cond)


def _open_image(path: str):
  from PIL import Image, UnidentifiedImageError

  try:
    with storage.path(path).open("rb") as f, Image.open(f) as image:
      image.load()
      return image.copy()
  except FileNotFoundError as error:
    raise PitiError(f"condition file {path} does not exist; pass the path of a PNG.") from error
  except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
    raise PitiError(f"{path}: cannot read this condition image ({type(error).__name__}: {error}).") from error


def _as_rgb(image, path: str, what: str):
  if image.mode in ("RGB", "P") or (image.mode == "RGBA" and image.getextrema()[3][0] == 255):
    return image.convert("RGB")
  raise PitiError(f"{path}: a {what} must be an RGB image, got mode {image.mode}"
                  + (" (a class-id map? colour-code it with colorize_labels)" if image.mode in ("L", "I", "I;16")
                     else "") + ".")


def read_condition(paths, task: str, *, size: int = 256, num_classes: int | None = None) -> np.ndarray:
  """Reads a user-supplied condition file as the task encoder's input.

  Args:
    paths: "mask": the colour-coded mask (RGB PNG); "sketch": a sketch (white edges on black;
      greyscale or RGB, thresholded at 128); "depth": a pair (normal map, depth map), RGB renderings
      as `render_normals` / `render_depth` make them, of equal size.
    task: "mask" | "sketch" | "depth".
    size: side of the output (nearest-neighbour resize, as the reference squashes conditions).
    num_classes: for masks, check that every colour belongs to a class id < num_classes.

  Returns:
    float32 (size, size, C) in [-1, 1]; C = 3 (mask), 1 (sketch), 6 (depth: normal then depth).

  Raises:
    PitiError: naming the file for a missing/unreadable file, a wrong mode, unknown mask colours, or
      depth/normal maps of different sizes.
  """
  from PIL import Image

  if task == "mask":
    path = paths if isinstance(paths, str) else paths[0]
    mask = np.asarray(_as_rgb(_open_image(path), path, "colour mask").resize((size, size), Image.NEAREST))
    if num_classes is not None:
      labels_from_colors(mask, num_classes=num_classes, source=path)
    return to_unit_range(mask)
  if task == "sketch":
    path = paths if isinstance(paths, str) else paths[0]
    image = _open_image(path)
    if image.mode not in ("1", "L", "RGB", "P", "LA", "RGBA"):
      raise PitiError(f"{path}: a sketch must be a greyscale or RGB image, got mode {image.mode}.")
    grey = np.asarray(image.convert("L").resize((size, size), Image.NEAREST))
    return sketch_condition(np.where(grey >= 128, 255, 0).astype(np.uint8))
  if task == "depth":
    if isinstance(paths, str) or len(paths) != 2:
      raise PitiError(f"the depth task needs two files (normal map, depth map), got {paths!r}.")
    normal_path, depth_path = paths
    normal = _as_rgb(_open_image(normal_path), normal_path, "normal map")
    depth = _as_rgb(_open_image(depth_path), depth_path, "depth map")
    if normal.size != depth.size:
      raise PitiError(f"{depth_path}: size {depth.size[0]}x{depth.size[1]} differs from the normal map "
                      f"{normal_path} ({normal.size[0]}x{normal.size[1]}); render both at the same size.")
    maps = [np.asarray(m.resize((size, size), Image.NEAREST)) for m in (normal, depth)]
    return np.concatenate([to_unit_range(m) for m in maps], axis=-1)
  raise PitiError(f"unknown condition task {task!r}; use 'mask', 'sketch' or 'depth'.")
