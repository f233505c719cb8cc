"""Classifier-free guidance: formulas against hand-computed values, and the doubled-batch contract."""

import jax.numpy as jnp
import numpy as np
import pytest

from piti_jax.diffusion.guidance import guided_model_fn, normalized_guidance, plain_guidance, rescaled_guidance
from piti_jax.errors import PitiError

# One sample, (H, W, C) = (1, 2, 2): eps_c = [1, 2, 3, 6], eps_u = [1, 1, 2, 4].
EPS_C = np.array([1.0, 2.0, 3.0, 6.0]).reshape(1, 1, 2, 2)
EPS_U = np.array([1.0, 1.0, 2.0, 4.0]).reshape(1, 1, 2, 2)


def test_plain_guidance_by_hand():
  # s = 2: eps_u + 2 (eps_c - eps_u) = [1, 3, 4, 8].
  np.testing.assert_allclose(plain_guidance(EPS_C, EPS_U, 2.0), np.array([1.0, 3.0, 4.0, 8.0]).reshape(EPS_C.shape))
  np.testing.assert_allclose(plain_guidance(EPS_C, EPS_U, 1.0), EPS_C)


def test_normalized_guidance_by_hand():
  # eps_hat = [1, 3, 4, 8]: mean 4, std sqrt((9 + 1 + 0 + 16) / 4) = sqrt(6.5).
  # eps_c: mean 3, std sqrt((4 + 1 + 0 + 9) / 4) = sqrt(3.5).
  expected = (np.array([1.0, 3.0, 4.0, 8.0]) - 4.0) / np.sqrt(6.5) * np.sqrt(3.5) + 3.0
  np.testing.assert_allclose(normalized_guidance(EPS_C, EPS_U, 2.0), expected.reshape(EPS_C.shape), rtol=1e-6)
  # Analytic statistics (w = 1): mean 3 + (3 - 2) = 4; eps_u std sqrt((1 + 1 + 0 + 4) / 4) = sqrt(1.5);
  # std_hat^2 = 4 * 3.5 + 1 * 1.5 = 15.5.
  expected = (np.array([1.0, 3.0, 4.0, 8.0]) - 4.0) / np.sqrt(15.5) * np.sqrt(3.5) + 3.0
  np.testing.assert_allclose(normalized_guidance(EPS_C, EPS_U, 2.0, stats="analytic"), expected.reshape(EPS_C.shape),
                             rtol=1e-6)


def test_rescaled_guidance_by_hand():
  # phi = 0.5: 0.5 * eps_hat * sqrt(3.5) / sqrt(6.5) + 0.5 * eps_hat.
  eps_hat = np.array([1.0, 3.0, 4.0, 8.0])
  expected = 0.5 * eps_hat * np.sqrt(3.5 / 6.5) + 0.5 * eps_hat
  np.testing.assert_allclose(rescaled_guidance(EPS_C, EPS_U, 2.0, 0.5), expected.reshape(EPS_C.shape), rtol=1e-6)
  np.testing.assert_allclose(rescaled_guidance(EPS_C, EPS_U, 2.0, 0.0), eps_hat.reshape(EPS_C.shape))


def per_sample_stats(a):
  a = np.asarray(a, np.float64)
  return a.mean(axis=(1, 2, 3)), a.std(axis=(1, 2, 3))


def test_normalized_guidance_keeps_conditional_statistics():
  rng = np.random.default_rng(0)
  eps_c = rng.normal(0.2, 1.3, (3, 4, 4, 3)) * np.array([1.0, 0.5, 2.0])[:, None, None, None]
  eps_u = 0.8 * eps_c + rng.normal(-0.1, 0.4, eps_c.shape)
  for scale in (1.3, 3.0, 7.5):
    guided = normalized_guidance(jnp.asarray(eps_c, jnp.float32), jnp.asarray(eps_u, jnp.float32), scale)
    mean, std = per_sample_stats(guided)
    mean_c, std_c = per_sample_stats(eps_c)
    np.testing.assert_allclose(mean, mean_c, atol=1e-5)
    np.testing.assert_allclose(std, std_c, rtol=1e-5)
    # The direction is the plain guided one: a positive affine map of eps_hat per sample.
    eps_hat = np.asarray(plain_guidance(eps_c, eps_u, scale))
    for b in range(3):
      assert np.corrcoef(np.ravel(guided[b]), np.ravel(eps_hat[b]))[0, 1] == pytest.approx(1.0, abs=1e-6)
    rescaled = rescaled_guidance(jnp.asarray(eps_c, jnp.float32), jnp.asarray(eps_u, jnp.float32), scale, 1.0)
    np.testing.assert_allclose(per_sample_stats(rescaled)[1], std_c, rtol=1e-5)
  for kind_output in (normalized_guidance(eps_c, eps_u, 1.0), rescaled_guidance(eps_c, eps_u, 1.0, 0.7)):
    np.testing.assert_allclose(kind_output, eps_c, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["plain", "normalized", "rescaled"])
def test_guided_model_fn_runs_doubled_batch_once(kind):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 2, 2, 3)), jnp.float32)
  t = jnp.array([10.0, 500.0])
  calls = []

  def model_fn_doubled(x2, t2):
    calls.append((x2, t2))
    cond_eps, uncond_eps = x2[:2] * 0.5 + 1.0, x2[2:] * -0.25
    variance = jnp.concatenate([jnp.full_like(x2[:2], 0.3), jnp.full_like(x2[2:], -0.9)])
    return jnp.concatenate([jnp.concatenate([cond_eps, uncond_eps]), variance], axis=-1)

  out = guided_model_fn(model_fn_doubled, 1.5, kind=kind, rescale_phi=0.7)(x, t)
  assert len(calls) == 1
  np.testing.assert_array_equal(calls[0][0], jnp.concatenate([x, x]))
  np.testing.assert_array_equal(calls[0][1], jnp.concatenate([t, t]))
  assert out.shape == (2, 2, 2, 6)
  np.testing.assert_array_equal(out[..., 3:], np.float32(0.3))  # the conditional half's variance channels
  eps_c, eps_u = x * 0.5 + 1.0, x * -0.25
  expected = {"plain": plain_guidance(eps_c, eps_u, 1.5), "normalized": normalized_guidance(eps_c, eps_u, 1.5),
              "rescaled": rescaled_guidance(eps_c, eps_u, 1.5, 0.7)}[kind]
  np.testing.assert_allclose(out[..., :3], expected, rtol=1e-6)


def test_unknown_guidance_is_a_user_error():
  with pytest.raises(PitiError, match="normalized"):
    guided_model_fn(lambda x, t: x, 2.0, kind="cfg++")
  with pytest.raises(PitiError, match="analytic"):
    guided_model_fn(lambda x, t: x, 2.0, kind="normalized", normalized_stats="exact")
