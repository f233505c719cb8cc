"""Periodic sample grids during training: condition | sample | ground truth, side by side.

Samples come from the first EMA average (the parameters that would be released), with
ancestral DDPM over a few respaced steps. The condition encoder runs once per sample,
not once per denoising step: `model.encode` runs before the sampling loop and the loop
only calls the decoder with `encoded=`.
"""

import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from piti_jax.diffusion import samplers
from piti_jax.diffusion.gaussian import GaussianDiffusion
from piti_jax.diffusion.guidance import guided_model_fn
from piti_jax.data import conditions
from piti_jax.train.params import ModelTemplate, ParamTree


def make_sample_fn(template: ModelTemplate, diffusion: GaussianDiffusion, *, guidance_scale: float = 1.0,
                   guidance_kind: str = "plain", temperature: float = 1.0) -> Callable:
  """sample(params, cond, low_res, key) -> images float32 (B, H, W, 3) in [-1, 1] (jitted).

  Args (of the returned function):
    params: complete parameter tree of the model.
    cond: condition image (B, 256, 256, Cin) or token dict, as in a batch.
    low_res: (B, h, w, 3) for upsamplers, else None.
    key: PRNG key.
  With guidance_scale != 1 the model runs on [cond; null] and classifier-free guidance
  mixes the two halves.
  """

  def sample(params: ParamTree, cond: Any, low_res: jax.Array | None, key: jax.Array, image_shape: tuple):
    model = template.merge(params)
    guided = guidance_scale != 1.0
    if guided:
      cond = jax.tree.map(lambda c, n: jnp.concatenate([c, n]), cond, conditions.null_condition(cond, jnp))
      low_res = None if low_res is None else jnp.concatenate([low_res, low_res])
    encoded = model.encode(cond)

    def model_fn(x, t):
      return model(x, t, encoded=encoded, low_res=low_res).astype(jnp.float32)

    fn = guided_model_fn(model_fn, guidance_scale, kind=guidance_kind) if guided else model_fn
    return samplers.ddpm_sample(diffusion, fn, image_shape, key, clip_denoised=True, temperature=temperature)

  return jax.jit(sample, static_argnums=(4,))


def _to_rgb(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """(B, h, w, C) in [-1, 1] -> uint8 (B, H, W, 3); 1 channel becomes grey, >3 keeps the first 3."""
  images = np.asarray(images, np.float32)
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  images = images[..., :3]
  images = np.clip((images + 1.0) * 127.5, 0, 255).astype(np.uint8)
  if images.shape[1:3] != size:
    images = np.stack([np.asarray(Image.fromarray(im).resize(size[::-1], Image.NEAREST)) for im in images])
  return images


MIN_TILE = 128  # small images are enlarged (nearest neighbour) to at least this side for viewing


def display_size(size: tuple[int, int]) -> tuple[int, int]:
  """Tile size of a grid for images of `size`: enlarged by an integer factor to >= MIN_TILE."""
  factor = max(1, -(-MIN_TILE // min(size)))
  return size[0] * factor, size[1] * factor


def make_grid(columns: list[np.ndarray], size: tuple[int, int], pad: int = 2) -> np.ndarray:
  """One row per example, one column per array: uint8 (B*(h+pad)+pad, n*(w+pad)+pad, 3), white gaps.

  Every column is shown at (h, w) = display_size(size), whatever its own resolution.
  """
  size = display_size(size)
  tiles = [_to_rgb(c, size) for c in columns]
  batch = tiles[0].shape[0]
  height, width = size
  grid = np.full((batch * (height + pad) + pad, len(tiles) * (width + pad) + pad, 3), 255, np.uint8)
  for row in range(batch):
    for col, tile in enumerate(tiles):
      top, left = pad + row * (height + pad), pad + col * (width + pad)
      grid[top:top + height, left:left + width] = tile[row]
  return grid


def grid_columns(batch: dict[str, np.ndarray], samples: np.ndarray) -> tuple[list[np.ndarray], list[str]]:
  """The columns of a sample grid and their names: condition (if an image), low-res input, sample, truth."""
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


def write_grid(workdir: str, step: int, grid: np.ndarray) -> str:
  """Saves the grid as `<workdir>/samples/step_<step>.png`; returns the path."""
  directory = os.path.join(workdir, "samples")
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f"step_{step:07d}.png")
  Image.fromarray(grid).save(path)
  return path
