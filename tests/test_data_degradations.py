"""BSRGAN-light degradations of the upsampler's low-res input."""

import numpy as np
import pytest
from PIL import Image

from piti_jax.data import degradations, shapes_scenes


@pytest.fixture(scope="module")
def image_uint8():
  scene = shapes_scenes.generate_scene(0, 0, 3)
  return np.asarray(Image.fromarray(scene.image).resize((96, 96), Image.BICUBIC))


@pytest.fixture(scope="module")
def image(image_uint8):
  return image_uint8.astype(np.float32) / 255.0


def _check(out, reference, shape=None):
  assert out.dtype == np.float32
  assert out.min() >= 0.0 and out.max() <= 1.0
  assert out.mean() > 0.5 * reference.mean()  # not black
  assert abs(out.mean() - reference.mean()) < 0.05
  if shape is not None:
    assert out.shape == shape


@pytest.mark.parametrize("seed", range(6))
def test_each_op_keeps_the_image_in_range_and_not_black(image, seed):
  rng = np.random.default_rng(seed)
  _check(degradations.add_blur(image, 4, rng), image, image.shape)
  low = degradations.random_downsample(image, 4, rng)
  _check(low, image)
  assert low.shape[0] < image.shape[0]
  for interpolation in degradations.INTERPOLATIONS:
    _check(degradations.resize(image, 24, 24, interpolation), image, (24, 24, 3))
  _check(degradations.add_gaussian_noise(image, rng), image, image.shape)
  _check(degradations.add_jpeg(image, rng), image, image.shape)
  _check(degradations.l0_smooth(image, rng.uniform(1.2, 4.0) * 1e-3), image, image.shape)
  _check(degradations.halve(image, rng), image, (48, 48, 3))


def test_l0_smoothing_flattens_texture_and_keeps_flat_regions(image):
  smooth = degradations.l0_smooth(image, 4e-3)
  gradients = lambda x: np.count_nonzero(np.abs(np.diff(x, axis=1)).sum(-1) > 1e-3)
  assert gradients(smooth) < 0.5 * gradients(image)
  flat = np.full((32, 32, 3), 0.6, np.float32)
  flat[:, 16:] = 0.2
  np.testing.assert_allclose(degradations.l0_smooth(flat, 4e-3), flat, atol=1e-3)


def test_kernels_are_normalised():
  for kernel in (degradations.anisotropic_gaussian_kernel(9, 0.7, 1.5, 0.2),
                 degradations.anisotropic_gaussian_kernel(6, 0.3, 1e-4, 1e-3),  # even size, all samples far out
                 degradations.isotropic_gaussian_kernel(7, 0.5), degradations.isotropic_gaussian_kernel(5, 0.0)):
    assert np.all(np.isfinite(kernel))
    np.testing.assert_allclose(kernel.sum(), 1.0, rtol=1e-6)
    assert kernel.min() >= 0.0
  iso = degradations.isotropic_gaussian_kernel(7, 1.0)
  np.testing.assert_allclose(iso, iso.T)
  np.testing.assert_allclose(iso, iso[::-1, ::-1])


def test_op_order_always_puts_op_2_before_op_3():
  for seed in range(200):
    order = degradations.op_order(np.random.default_rng(seed))
    assert sorted(order) == list(range(7))
    assert order.index(2) < order.index(3)


def test_bsrgan_light_gives_the_low_res_size_deterministically(image_uint8):
  outputs = [degradations.bsrgan_light(image_uint8, 4, np.random.default_rng(seed)) for seed in range(12)]
  for out in outputs:
    assert out.shape == (24, 24, 3) and out.dtype == np.uint8
    assert out.mean() > 0.5 * image_uint8.mean()
  np.testing.assert_array_equal(degradations.bsrgan_light(image_uint8, 4, np.random.default_rng(3)), outputs[3])
  assert len({o.tobytes() for o in outputs}) == len(outputs)
  assert degradations.bsrgan_light(image_uint8, 2, np.random.default_rng(0)).shape == (48, 48, 3)


def test_quantize_8bit_truncates_like_the_reference():
  x = np.array([-1.5, -1.0, -0.999, 0.0, 0.5, 0.999, 1.0])
  expected = np.floor(127.5 * (np.clip(x, -1, 1) + 1.0)) / 127.5 - 1.0
  np.testing.assert_allclose(degradations.quantize_8bit(x), expected)
  import jax.numpy as jnp

  np.testing.assert_allclose(np.asarray(degradations.quantize_8bit(jnp.asarray(x, jnp.float32))), expected, atol=1e-6)


@pytest.mark.parametrize("size", [5, 6])
def test_fft_convolution_matches_scipy_ndimage_with_mirror_padding(image, size):
  from scipy import ndimage

  kernel = np.random.default_rng(size).random((size, size))
  kernel /= kernel.sum()
  expected = ndimage.convolve(image, kernel[..., None], mode="mirror")
  np.testing.assert_allclose(degradations.convolve_mirror(image, kernel), expected, atol=1e-5)


def test_bsrgan_light_applies_each_step_with_the_reference_probability():
  image = np.asarray(Image.fromarray(shapes_scenes.generate_scene(1, 0, 0).image).resize((32, 32)))
  draws = 400
  counts = {}
  for seed in range(draws):
    applied = []
    degradations.bsrgan_light(image, 4, np.random.default_rng(seed), applied)
    assert applied.count("resize_to_target") == 1 and applied.count("noise") == 1
    assert applied.index("resize_to_target") > applied.index(applied[[s in ("resize", "shifted_gaussian")
                                                                       for s in applied].index(True)])
    for step in set(applied):
      counts[step] = counts.get(step, 0) + 1
  # Binomial standard deviations over 400 draws are at most 0.025; allow about 4 of them.
  expected = {"halve": 0.25, "blur": 0.8, "resize": 0.8, "shifted_gaussian": 0.2, "jpeg": 0.5, "l0_smooth": 0.2}
  for step, probability in expected.items():
    assert abs(counts.get(step, 0) / draws - probability) < 0.1, (step, counts.get(step, 0))


def test_reference_l0_switch_blacks_out_about_a_fifth_of_the_low_res_inputs():
  image = np.asarray(Image.fromarray(shapes_scenes.generate_scene(2, 0, 0).image).resize((32, 32)))
  draws = 300
  black = []
  for seed in range(draws):
    applied = []
    low = degradations.bsrgan_light(image, 4, np.random.default_rng(seed), applied, l0_smoothing="reference")
    dark = low.mean() < 4.0  # what later noise (1-2/255) and JPEG leave of a black image
    assert dark == ("l0_smooth" in applied), (seed, applied, low.mean())
    black += [seed] if dark else []
  # A binomial(300, 0.2) count has standard deviation 6.9; allow about 4 of them.
  assert abs(len(black) - 0.2 * draws) < 28, len(black)
  fixed = degradations.bsrgan_light(image, 4, np.random.default_rng(black[0]), l0_smoothing="fixed")
  assert fixed.mean() > 0.5 * image.mean()  # the same draws with the fix: smoothed, not black
