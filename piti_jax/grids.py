"""Image grids for people to judge: one row per example, one column per image kind.

Used by the training sample grids (condition | low-res | sample | ground truth) and by
inference (condition | base sample | upsampled sample). Small images are enlarged by an
integer factor (nearest neighbour) so a 32x32 sample shows shapes, not smudges.
"""

import numpy as np
from PIL import Image

MIN_TILE = 128  # small images are enlarged (nearest neighbour) to at least this side for viewing


def to_uint8(images: np.ndarray) -> np.ndarray:
  """float (B, H, W, C) in [-1, 1] -> uint8 (B, H, W, C), rounded to the nearest level."""
  return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def to_rgb(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """(B, h, w, C) float in [-1, 1] or uint8 -> uint8 (B, H, W, 3) at `size`.

  1 channel becomes grey, more than 3 keep the first 3 (e.g. the normal map of a depth
  condition); resizing is nearest neighbour.
  """
  images = np.asarray(images)
  if images.dtype != np.uint8:
    images = to_uint8(images)
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  images = images[..., :3]
  if images.shape[1:3] != tuple(size):
    images = np.stack([np.asarray(Image.fromarray(im).resize(size[::-1], Image.NEAREST)) for im in images])
  return images


def display_size(size: tuple[int, int]) -> tuple[int, int]:
  """Tile size of a grid for images of `size`: enlarged by an integer factor to >= MIN_TILE."""
  factor = max(1, -(-MIN_TILE // min(size)))
  return size[0] * factor, size[1] * factor


def make_grid(columns: list[np.ndarray], size: tuple[int, int], pad: int = 2) -> np.ndarray:
  """One row per example, one column per array: uint8 (B*(h+pad)+pad, n*(w+pad)+pad, 3), white gaps.

  Every column is shown at (h, w) = display_size(size), whatever its own resolution.
  """
  size = display_size(size)
  tiles = [to_rgb(c, size) for c in columns]
  batch = tiles[0].shape[0]
  height, width = size
  grid = np.full((batch * (height + pad) + pad, len(tiles) * (width + pad) + pad, 3), 255, np.uint8)
  for row in range(batch):
    for col, tile in enumerate(tiles):
      top, left = pad + row * (height + pad), pad + col * (width + pad)
      grid[top:top + height, left:left + width] = tile[row]
  return grid


def sample_grid_columns(batch: dict[str, np.ndarray], samples: np.ndarray) -> tuple[list[np.ndarray], list[str]]:
  """Columns of a training sample grid and their names: condition (if an image), low-res input, sample, truth."""
  columns, names = [], []
  if "condition" in batch:
    columns.append(batch["condition"])
    names.append("condition")
  if "low_res" in batch:
    columns.append(batch["low_res"])
    names.append("low_res")
  columns += [samples, batch["image"]]
  names += ["sample", "ground_truth"]
  return columns, names
