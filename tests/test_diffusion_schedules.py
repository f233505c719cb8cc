"""Schedules and respacing against float64 NumPy references and the numbers of PITI_SPEC section 4."""

import math

import numpy as np
import pytest

from piti_jax.diffusion.gaussian import make_diffusion
from piti_jax.diffusion.schedules import get_named_beta_schedule, respaced_betas, space_timesteps
from piti_jax.errors import PitiError

FAST27 = [0, 22, 44, 66, 88, 111, 133, 155, 177, 199, 200, 222, 244, 266, 288, 311, 333, 355, 377, 399, 400, 500, 599,
          600, 799, 800, 997]


def cosine_reference(num_timesteps: int) -> np.ndarray:
  s = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
  alpha_bar = np.cos((s + 0.008) / 1.008 * np.pi / 2)**2
  return np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.999)


def sections_reference(num_timesteps: int, counts: list[int]) -> list[int]:
  """Equal sections (the first T % n one longer), each strided by accumulating (size-1)/(count-1)."""
  sizes = [num_timesteps // len(counts) + (i < num_timesteps % len(counts)) for i in range(len(counts))]
  starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
  steps = []
  for start, size, count in zip(starts, sizes, counts):
    stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
    positions = np.concatenate([[0.0], np.cumsum(np.full(count - 1, stride))])
    steps += [int(start) + int(np.round(p)) for p in positions]
  return sorted(set(steps))


@pytest.mark.parametrize("num_timesteps", [1000, 250, 37])
def test_cosine_schedule_equals_reference(num_timesteps):
  betas = get_named_beta_schedule("cosine", num_timesteps)
  assert betas.dtype == np.float64 and betas.shape == (num_timesteps,)
  np.testing.assert_allclose(betas, cosine_reference(num_timesteps), rtol=1e-12, atol=1e-15)
  np.testing.assert_array_equal(get_named_beta_schedule("squaredcos_cap_v2", num_timesteps), betas)


def test_cosine_schedule_spec_numbers():
  betas = get_named_beta_schedule("cosine", 1000)
  alpha_bar = np.cumprod(1.0 - betas)
  assert betas[0] == pytest.approx(4.1e-5, rel=0.01)
  assert betas[-1] == 0.999
  assert alpha_bar[-1] == pytest.approx(2.4e-9, rel=0.02)


@pytest.mark.parametrize("num_timesteps", [1000, 4000, 100])
def test_linear_schedule(num_timesteps):
  betas = get_named_beta_schedule("linear", num_timesteps)
  scale = 1000 / num_timesteps
  np.testing.assert_allclose(betas, np.linspace(1e-4 * scale, 0.02 * scale, num_timesteps), rtol=1e-14)
  if num_timesteps == 1000:
    assert np.prod(1.0 - betas) == pytest.approx(4.0e-5, rel=0.02)


def test_unknown_schedule_is_a_user_error():
  with pytest.raises(PitiError, match="cosine"):
    get_named_beta_schedule("quadratic", 1000)


def test_fast27_is_the_spec_list():
  assert space_timesteps(1000, "fast27") == FAST27


@pytest.mark.parametrize("spec", ["250", "100", "27", "10,10,3,2,2", "10,15,20", "1,7", "3,1,4,1,5,9,2,6"])
def test_sections_equal_reference(spec):
  counts = [int(c) for c in spec.split(",")]
  for num_timesteps in (1000, 300, 83):
    if num_timesteps // len(counts) < max(counts):
      continue
    assert space_timesteps(num_timesteps, spec) == sections_reference(num_timesteps, counts)
    assert space_timesteps(num_timesteps, counts) == sections_reference(num_timesteps, counts)


def test_common_respacings():
  steps_250 = space_timesteps(1000, "250")
  assert len(steps_250) == 250 and steps_250[:4] == [0, 4, 8, 12] and steps_250[-1] == 999
  steps_100 = space_timesteps(1000, "100")
  assert len(steps_100) == 100 and steps_100[:3] == [0, 10, 20] and steps_100[-1] == 999
  assert space_timesteps(300, "10,15,20")[:3] == [0, 11, 22]
  assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
  assert space_timesteps(1000, "ddim3") == [0, 334, 668]


@pytest.mark.parametrize("spec", ["ddim999", "2000", "ddimx", "ten", ""])
def test_impossible_respacing_is_a_user_error(spec):
  with pytest.raises(PitiError):
    space_timesteps(1000, spec)


def test_respaced_betas_keep_alpha_bar():
  betas = get_named_beta_schedule("cosine", 1000)
  kept = space_timesteps(1000, "fast27")
  new_betas = respaced_betas(betas, kept)
  # Reference semantics: walk the original steps, one new beta per kept step.
  expected, last = [], 1.0
  for i, alpha_bar in enumerate(np.cumprod(1.0 - betas)):
    if i in kept:
      expected.append(1.0 - alpha_bar / last)
      last = alpha_bar
  np.testing.assert_allclose(new_betas, expected, rtol=1e-13)
  np.testing.assert_allclose(np.cumprod(1.0 - new_betas), np.cumprod(1.0 - betas)[kept], rtol=1e-12)


def test_model_gets_original_indices_rescaled_to_1000():
  diffusion = make_diffusion("cosine", 1000, "fast27")
  assert diffusion.num_timesteps == 27
  times = np.asarray(diffusion.model_timesteps(np.arange(27)))
  np.testing.assert_allclose(times, FAST27, rtol=1e-6)
  long = make_diffusion("linear", 4000, "100")
  kept = np.array(space_timesteps(4000, "100"))
  np.testing.assert_allclose(np.asarray(long.model_timesteps(np.arange(100))), kept * 1000.0 / 4000, rtol=1e-6)
  plain = make_diffusion("cosine", 50)
  np.testing.assert_allclose(np.asarray(plain.model_timesteps(np.array([0, 1, 49]))), [0.0, 20.0, 980.0])
  assert math.isclose(float(np.asarray(plain.alphas_cumprod)[-1]),
                      float(np.cumprod(1.0 - cosine_reference(50))[-1]), rel_tol=1e-5)
