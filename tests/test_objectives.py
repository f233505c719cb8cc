"""The upsampler's extra objectives against hand computations: step order."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from piti_jax.models.discriminator import PatchDiscriminator
from piti_jax.train import objectives, step as step_lib
from piti_jax.train.params import ModelTemplate

SIZE = 16


@functools.cache
def _critic() -> ModelTemplate:
  return ModelTemplate(lambda rngs: PatchDiscriminator(3, 4, 1, rngs=rngs))


def _images(seed: int, batch: int = 2) -> np.ndarray:
  return np.random.default_rng(seed).uniform(-1, 1, (batch, SIZE, SIZE, 3)).astype(np.float32)


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
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


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
