"""The upsampler's extra objectives against hand computations: WGAN-GP, perceptual term, gating, step order."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from piti_jax.models import vgg as vgg_lib
from piti_jax.models.discriminator import PatchDiscriminator
from piti_jax.train import objectives, step as step_lib
from piti_jax.train.params import ModelTemplate
from tests.test_vgg import _numpy_features

SIZE = 16


@functools.cache
def _critic() -> ModelTemplate:
  return ModelTemplate(lambda rngs: PatchDiscriminator(3, 4, 1, rngs=rngs))


def _images(seed: int, batch: int = 2) -> np.ndarray:
  return np.random.default_rng(seed).uniform(-1, 1, (batch, SIZE, SIZE, 3)).astype(np.float32)


def test_gradient_penalty_matches_finite_differences():
  critic = _critic().merge(_critic().init_params(jax.random.key(0)))
  real, fake, mix = _images(1), _images(2), np.array([0.3, 0.8], np.float32)
  critic_loss = jax.jit(lambda r, f, m: objectives.discriminator_loss(critic, r, f, m, 10.0))
  loss, terms = critic_loss(jnp.asarray(real), jnp.asarray(fake), jnp.asarray(mix))

  mixed = mix[:, None, None, None] * real + (1 - mix[:, None, None, None]) * fake
  step = 3e-3
  basis = np.eye(mixed[0].size, dtype=np.float32).reshape(-1, SIZE, SIZE, 3) * step
  critic_sum = jax.jit(jax.vmap(lambda x: jnp.sum(critic(x[None]))))
  norms = []
  for example in mixed:  # central differences of sum D over every pixel and channel
    gradient = (np.asarray(critic_sum(example + basis)) - np.asarray(critic_sum(example - basis))) / (2 * step)
    norms.append(np.sqrt(np.sum(gradient.astype(np.float64) ** 2)))
  penalty = np.mean((np.asarray(norms) - 1.0) ** 2)
  mean_logit = jax.jit(lambda x: jnp.mean(critic(x)))
  d_real, d_fake = float(mean_logit(real)), float(mean_logit(fake))
  np.testing.assert_allclose(float(terms["gradient_penalty"]), penalty, rtol=1e-3)
  np.testing.assert_allclose(float(loss), d_fake - d_real + 10.0 * penalty, rtol=1e-3, atol=1e-4)
  np.testing.assert_allclose(float(terms["critic"]), d_real - d_fake, rtol=1e-5, atol=1e-6)


def test_perceptual_distance_matches_numpy():
  model = vgg_lib.load_vgg_features()
  real, fake = _images(3), _images(4)
  got = objectives.perceptual_distance(model, jnp.asarray(fake), jnp.asarray(real))
  arrays = vgg_lib.load_vgg_arrays()
  expected = np.mean((_numpy_features(fake, arrays) - _numpy_features(real, arrays)) ** 2, axis=(1, 2, 3))
  assert got.shape == (2,)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4)


@functools.cache
def _adversarial_fn(critic_first: bool):
  """Jitted adversarial_step with start step 5, Adam(1e-2) and the identity as `vgg` (features = pixels)."""
  objective = objectives.ObjectiveConfig(adversarial=True, adversarial_start=5, critic_first=critic_first)
  disc_tx = optax.adam(1e-2)

  def run(params, step, real, fake, weights, key):
    return step_lib.adversarial_step(
        discriminator=_critic(), disc_tx=disc_tx, objective=objective, disc_params=params,
        disc_opt_state=disc_tx.init(params), step=step, real=real, fake=fake, weights=weights, key=key,
        vgg=lambda x: x)

  return jax.jit(run)


def _adversarial(step: int, *, critic_first: bool = True):
  """(critic params before, adversarial_step result) on a fixed critic and batch."""
  params = _critic().init_params(jax.random.key(1))
  result = _adversarial_fn(critic_first)(params, jnp.int32(step), jnp.asarray(_images(5)), jnp.asarray(_images(6)),
                                         jnp.asarray([1.0, 0.5]), jax.random.key(2))
  return params, result


def _flat_max_change(a, b) -> float:
  leaves = zip(jax.tree.leaves(a), jax.tree.leaves(b))
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in leaves)


def test_adversarial_terms_do_not_act_before_the_start_step():
  params, result = _adversarial(step=4)
  assert _flat_max_change(result.disc_params, params) == 0.0
  assert float(result.loss) == 0.0 and float(jnp.max(jnp.abs(result.fake_grad))) == 0.0
  assert float(result.metrics["perceptual"]) > 0  # measured, just not applied


@pytest.mark.parametrize("critic_first", [True, False])
def test_adversarial_terms_act_from_the_start_step_in_the_configured_order(critic_first):
  params, result = _adversarial(step=5, critic_first=critic_first)
  assert _flat_max_change(result.disc_params, params) > 0  # the critic took its step
  real, fake, weights = _images(5), _images(6), np.array([1.0, 0.5])
  judge = _critic().merge(result.disc_params if critic_first else params)
  adversarial = -np.mean(np.asarray(judge(jnp.asarray(fake))), axis=(1, 2, 3))
  perceptual = np.mean((fake - real) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(np.asarray(result.metrics["adversarial"]), adversarial.mean(), rtol=1e-5)
  np.testing.assert_allclose(float(result.loss), np.mean(weights * (0.004 * perceptual + 0.01 * adversarial)),
                             rtol=1e-5)
  assert float(jnp.max(jnp.abs(result.fake_grad))) > 0
