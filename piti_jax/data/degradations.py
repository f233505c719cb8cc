"""PITI's "bsrgan_light" degradation of the upsampler's low-res input (NumPy/SciPy/PIL).

`bsrgan_light(image, scale, rng)` turns a uint8 (H, W, 3) ground-truth image into the uint8
(H/scale, W/scale, 3) low-res input, with the reference's probabilities and parameter ranges:
  0. with p=0.25 (scale 4 only) first halve the image (50% random interpolation, 50% antialiased
     bicubic) and continue with scale 2;
  then ops 0..6 in random order with op 2 forced before op 3 (op 1 does nothing):
  op 0: blur, p=0.8: 50% anisotropic Gaussian (size U{5..14}, eigenvalues U(0, (4+s)/4), angle
        U(0, pi)), 50% isotropic (size U{5..7}, sigma U(0, (2+0.2s)/4)); mirror padding;
  op 2: p=0.8 resize by 1/s1, s1 ~ U(1, 2s), random interpolation; else a 25x25 Gaussian with
        sigma ~ U(0.1, 0.6s) shifted by (s-1)/2 pixels, then nearest subsampling by s;
  op 3: resize to the pre-op-2 size divided by s, random interpolation;
  op 4: Gaussian noise of level U{1, 2}/255 (40% colour, 40% grey, 20% channel-correlated with L = 2/255);
  op 5: JPEG, p=0.5, quality U{80..95};
  op 6: L0 smoothing, p=0.2, lambda ~ U(1.2, 4.0) * 1e-3, kappa 2, beta from 2 lambda to 1e5.
Random interpolation is one of bilinear, bicubic (no antialiasing, like OpenCV) and area averaging.

Fix versus the reference: its L0 smoothing rescales [0, 1] floats as if they were 0..255 and returns
an all-black image; here it runs on [0, 1] floats and returns the smoothed image. For exact
replication `l0_smoothing="reference"` (data.l0_smoothing) keeps the reference's behaviour: the image
is smoothed at 1/256 of its scale and truncated back as the reference's uint8 cast does, which
leaves it black (1 only where the smoothed image reaches white), so about 20% of the low-res inputs
are black apart from the noise and JPEG steps that may follow.

`quantize_8bit` is the 8-bit quantisation applied to the base model's output at sampling time.
"""

import io

import numpy as np
from PIL import Image
from scipy import fft, ndimage, signal
from scipy.linalg import orth

BLUR_P, JPEG_P, HALVE_P, L0_P, RESIZE_P = 0.8, 0.5, 0.25, 0.2, 0.8
INTERPOLATIONS = ("linear", "cubic", "area")
L0_SMOOTHING = ("fixed", "reference")


def _to_float(image: np.ndarray) -> np.ndarray:
  return image.astype(np.float32) / 255.0


def to_uint8(image: np.ndarray) -> np.ndarray:
  """float [0, 1] -> uint8, rounded."""
  return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def resize(image: np.ndarray, width: int, height: int, interpolation: str) -> np.ndarray:
  """Resizes float32 (H, W, C) to (height, width, C).

  "linear" and "cubic" sample the source at the target pixel centres without antialiasing (as
  OpenCV's INTER_LINEAR / INTER_CUBIC do; cubic is SciPy's interpolating cubic spline); "area"
  averages boxes (INTER_AREA). The result is clipped to [0, 1] (cubic overshoots), as every op
  of the reference clips after resizing.
  """
  width, height = max(int(width), 1), max(int(height), 1)
  if interpolation == "area":
    channels = [np.asarray(Image.fromarray(image[..., c]).resize((width, height), Image.BOX))
                for c in range(image.shape[-1])]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)
  rows = (np.arange(height, dtype=np.float32) + 0.5) * image.shape[0] / height - 0.5
  cols = (np.arange(width, dtype=np.float32) + 0.5) * image.shape[1] / width - 0.5
  grid_rows, grid_cols = np.meshgrid(rows, cols, indexing="ij")
  order = 1 if interpolation == "linear" else 3
  channels = [ndimage.map_coordinates(image[..., c], [grid_rows, grid_cols], order=order, mode="nearest")
              for c in range(image.shape[-1])]
  return np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)


def _random_interpolation(rng: np.random.Generator) -> str:
  return INTERPOLATIONS[int(rng.integers(0, 3))]


def convolve_mirror(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """Per-channel 2-D convolution with mirror (reflect-without-edge-repeat) padding, via FFT.

  Kernels are non-negative and sum to one, so the result is clipped to [0, 1] against FFT round-off.
  """
  # out[i] = sum_j kernel[j] image[i + size // 2 - j], the alignment of scipy.ndimage.convolve.
  (rows, cols) = kernel.shape
  before_r, before_c = rows - 1 - rows // 2, cols - 1 - cols // 2
  padded = np.pad(image, ((before_r, rows // 2), (before_c, cols // 2), (0, 0)), mode="reflect")
  out = signal.fftconvolve(padded, kernel[..., None], mode="valid", axes=(0, 1))
  return np.clip(out, 0.0, 1.0).astype(np.float32)


def anisotropic_gaussian_kernel(size: int, theta: float, l1: float, l2: float) -> np.ndarray:
  """Normalised Gaussian kernel (size, size) with covariance eigenvalues l1, l2 rotated by theta."""
  v = np.array([np.cos(theta), np.sin(theta)])
  basis = np.array([[v[0], v[1]], [v[1], -v[0]]])
  covariance = basis @ np.diag([max(l1, 1e-4), max(l2, 1e-4)]) @ np.linalg.inv(basis)
  offsets = np.arange(size) - (size - 1) / 2.0
  x, y = np.meshgrid(offsets, offsets)
  points = np.stack([x, y], axis=-1)
  precision = np.linalg.inv(covariance)
  energy = np.einsum("...i,ij,...j->...", points, precision, points)
  # Shifting by the smallest energy only rescales the kernel, and keeps a very narrow one (whose
  # samples would all underflow to 0, giving 0/0) finite.
  kernel = np.exp(-0.5 * (energy - energy.min()))
  return kernel / kernel.sum()


def isotropic_gaussian_kernel(size: int, sigma: float) -> np.ndarray:
  """MATLAB fspecial('gaussian', size, sigma): normalised, tiny values zeroed."""
  offsets = np.arange(size) - (size - 1) / 2.0
  x, y = np.meshgrid(offsets, offsets)
  radius2 = x * x + y * y
  kernel = np.exp(-(radius2 - radius2.min()) / (2.0 * max(sigma, 1e-3) ** 2))  # shifted: see above
  kernel[kernel < np.finfo(float).eps * kernel.max()] = 0.0
  return kernel / kernel.sum()


def add_blur(image: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
  """Op 0 (without its p=0.8 gate): a random anisotropic or isotropic Gaussian blur."""
  wide = (4.0 + scale) / 4.0
  narrow = (2.0 + 0.2 * scale) / 4.0
  if rng.random() < 0.5:
    kernel = anisotropic_gaussian_kernel(int(rng.integers(2, 12)) + 3, theta=rng.random() * np.pi,
                                         l1=wide * rng.random(), l2=wide * rng.random())
  else:
    kernel = isotropic_gaussian_kernel(int(rng.integers(2, 5)) + 3, narrow * rng.random())
  return convolve_mirror(image, kernel)


def _shift_kernel(kernel: np.ndarray, scale: int) -> np.ndarray:
  """Bilinearly shifts a kernel by (scale - 1) / 2 pixels towards the upper left (edges clamped)."""
  size = kernel.shape[0]
  shifted = np.clip(np.arange(size) + (scale - 1) * 0.5, 0, size - 1)
  rows, cols = np.meshgrid(shifted, shifted, indexing="ij")
  return ndimage.map_coordinates(kernel, [rows, cols], order=1, mode="nearest")


def random_downsample(image: np.ndarray, scale: int, rng: np.random.Generator,
                      applied: list[str] | None = None) -> np.ndarray:
  """Op 2: random-factor resize (p=0.8) or shifted-Gaussian blur + nearest subsampling by `scale`.

  `applied`, if given, gets "resize" or "shifted_gaussian" appended.
  """
  if rng.random() < RESIZE_P:
    factor = rng.uniform(1.0, 2.0 * scale)
    out = resize(image, int(image.shape[1] / factor), int(image.shape[0] / factor), _random_interpolation(rng))
    kind = "resize"
  else:
    kernel = _shift_kernel(isotropic_gaussian_kernel(25, rng.uniform(0.1, 0.6 * scale)), scale)
    out = convolve_mirror(image, kernel / kernel.sum())[0::scale, 0::scale]
    kind = "shifted_gaussian"
  if applied is not None:
    applied.append(kind)
  return np.clip(out, 0.0, 1.0)


def add_gaussian_noise(image: np.ndarray, rng: np.random.Generator, low: int = 1, high: int = 2) -> np.ndarray:
  """Op 4: Gaussian noise of level U{low..high}/255 (colour, grey or channel-correlated)."""
  level = int(rng.integers(low, high + 1)) / 255.0
  draw = rng.random()
  if draw > 0.6:
    noise = rng.normal(0.0, level, image.shape)
  elif draw < 0.4:
    noise = rng.normal(0.0, level, image.shape[:2] + (1,))
  else:
    amplitude = high / 255.0
    basis = orth(rng.random((3, 3)))
    covariance = np.abs(amplitude ** 2 * basis.T @ np.diag(rng.random(3)) @ basis)
    noise = rng.multivariate_normal(np.zeros(3), covariance, image.shape[:2])
  return np.clip(image + noise.astype(np.float32), 0.0, 1.0)


def add_jpeg(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Op 5 (without its p=0.5 gate): JPEG round trip at quality U{80..95}."""
  buffer = io.BytesIO()
  Image.fromarray(to_uint8(image)).save(buffer, format="jpeg", quality=int(rng.integers(80, 96)))
  return _to_float(np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")))


def l0_smooth(image: np.ndarray, smoothness: float, kappa: float = 2.0, beta_max: float = 1e5) -> np.ndarray:
  """L0 gradient minimisation (Xu et al. 2011) of a float [0, 1] (H, W, 3) image.

  Alternates a hard threshold of the (circular) forward differences, where their squared norm
  over channels is below smoothness / beta, with an FFT solve of
  (1 + beta |D|^2) S = I + beta D^T (h, v), doubling beta (kappa) from 2 * smoothness to beta_max.

  Returns:
    float32 (H, W, 3) in [0, 1].
  """
  image = np.ascontiguousarray(np.moveaxis(image.astype(np.float32), -1, 0))  # (C, H, W) for fast FFTs
  height, width = image.shape[1:]
  fy = 2.0 - 2.0 * np.cos(2.0 * np.pi * np.arange(height) / height)
  fx = 2.0 - 2.0 * np.cos(2.0 * np.pi * np.arange(width // 2 + 1) / width)
  transfer = (fy[:, None] + fx[None, :]).astype(np.float32)  # |otf(dx)|^2 + |otf(dy)|^2 on the rfft grid
  image_spectrum = fft.rfft2(image)
  smooth = image
  beta = 2.0 * smoothness
  while beta < beta_max:
    h = np.roll(smooth, -1, axis=2) - smooth
    v = np.roll(smooth, -1, axis=1) - smooth
    keep = np.sum(h * h + v * v, axis=0) >= smoothness / beta
    h *= keep
    v *= keep
    divergence = (np.roll(h, 1, axis=2) - h) + (np.roll(v, 1, axis=1) - v)
    spectrum = (image_spectrum + np.float32(beta) * fft.rfft2(divergence)) / (1.0 + np.float32(beta) * transfer)
    smooth = fft.irfft2(spectrum, s=(height, width))
    beta *= kappa
  smooth = np.moveaxis(smooth, 0, -1)
  return np.clip(smooth, 0.0, 1.0).astype(np.float32)


def reference_l0_smooth(image: np.ndarray, smoothness: float) -> np.ndarray:
  """The reference's op 6 as it behaves on [0, 1] floats: smoothing at 1/256 scale, then its uint8 cast.

  The reference divides by 256 (it expects 0..255), smooths, multiplies by 256 and casts to uint8,
  so values below 1 become 0. Returns float32 (H, W, 3) in {0, 1}: black but where the smoothed
  image reaches white.
  """
  return np.floor(l0_smooth(image / 256.0, smoothness) * 256.0).astype(np.float32)


def halve(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """The optional first step: halve the size (50% random interpolation, 50% antialiased bicubic)."""
  height, width = image.shape[:2]
  if rng.random() < 0.5:
    out = resize(image, width // 2, height // 2, _random_interpolation(rng))
  else:
    channels = [np.asarray(Image.fromarray(image[..., c]).resize((width // 2, height // 2), Image.BICUBIC))
                for c in range(image.shape[-1])]
    out = np.stack(channels, axis=-1)
  return np.clip(out, 0.0, 1.0).astype(np.float32)


def op_order(rng: np.random.Generator) -> list[int]:
  """A random permutation of ops 0..6 with op 2 swapped in front of op 3 when it came after it."""
  order = [int(i) for i in rng.permutation(7)]
  first, second = order.index(2), order.index(3)
  if first > second:
    order[first], order[second] = order[second], order[first]
  return order


def bsrgan_light(image: np.ndarray, scale: int, rng: np.random.Generator,
                 applied: list[str] | None = None, l0_smoothing: str = "fixed") -> np.ndarray:
  """Degrades a uint8 (H, W, 3) image into the uint8 (H // scale, W // scale, 3) low-res input.

  Args:
    image: uint8 (H, W, 3) ground truth.
    scale: 4 (or 2) as in the reference.
    rng: the random generator (the result is a pure function of the image and its state).
    applied: if given, the names of the steps that ran are appended to it, in order ("halve",
      "blur", "resize" or "shifted_gaussian" (op 2), "resize_to_target", "noise", "jpeg", "l0_smooth").
    l0_smoothing: "fixed" (op 6 smooths the image) or "reference" (op 6 blacks it out, as the
      reference's does; see `reference_l0_smooth`).

  Returns:
    uint8 (H // scale, W // scale, 3).
  """
  log = applied.append if applied is not None else (lambda name: None)
  work = _to_float(image)
  height, width = work.shape[:2]
  work = work[:height - height % scale, :width - width % scale]
  if scale == 4 and rng.random() < HALVE_P:
    work = halve(work, rng)
    scale = 2
    log("halve")
  target_height, target_width = work.shape[0] // scale, work.shape[1] // scale
  for op in op_order(rng):
    if op == 0 and rng.random() < BLUR_P:
      work = add_blur(work, scale, rng)
      log("blur")
    elif op == 2:
      work = random_downsample(work, scale, rng, applied)
    elif op == 3:
      work = resize(work, target_width, target_height, _random_interpolation(rng))
      log("resize_to_target")
    elif op == 4:
      work = add_gaussian_noise(work, rng)
      log("noise")
    elif op == 5 and rng.random() < JPEG_P:
      work = add_jpeg(work, rng)
      log("jpeg")
    elif op == 6 and rng.random() < L0_P:
      smooth = reference_l0_smooth if l0_smoothing == "reference" else l0_smooth
      work = smooth(work, rng.uniform(1.2, 4.0) * 1e-3)
      log("l0_smooth")
  return to_uint8(work)


def quantize_8bit(x):
  """floor(127.5 (x + 1)) / 127.5 - 1 for x clipped to [-1, 1] (NumPy or JAX arrays)."""
  scaled = (x.clip(-1.0, 1.0) + 1.0) * 127.5
  return (scaled - scaled % 1.0) / 127.5 - 1.0
