"""Timestep samplers against a NumPy reference that pushes losses one by one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from piti_jax.diffusion.timestep_sampler import (init_sampler_state, sample_timesteps, timestep_probabilities,
                                                 update_sampler_state)
from piti_jax.errors import PitiError

NUM_TIMESTEPS = 6
HISTORY = 3
BATCH = 8


class SecondMomentReference:
  """Per-t FIFO of the last `history` losses, updated one (t, loss) pair at a time."""

  def __init__(self, num_timesteps, history, uniform_prob=0.001):
    self.history = np.zeros((num_timesteps, history))
    self.counts = np.zeros(num_timesteps, int)
    self.uniform_prob = uniform_prob

  def update(self, ts, losses):
    for t, loss in zip(ts, losses):
      if self.counts[t] == self.history.shape[1]:
        self.history[t] = np.append(self.history[t, 1:], loss)
      else:
        self.history[t, self.counts[t]] = loss
        self.counts[t] += 1

  def probabilities(self):
    num_timesteps = len(self.counts)
    if not (self.counts == self.history.shape[1]).all():
      return np.full(num_timesteps, 1.0 / num_timesteps)
    weights = np.sqrt(np.mean(self.history**2, axis=-1))
    return weights / weights.sum() * (1 - self.uniform_prob) + self.uniform_prob / num_timesteps


update = jax.jit(update_sampler_state)
probabilities = jax.jit(timestep_probabilities)
sample = jax.jit(sample_timesteps, static_argnums=2)


def test_second_moment_sampler_follows_reference_through_a_scripted_history():
  rng = np.random.default_rng(0)
  state = init_sampler_state("loss-second-moment", NUM_TIMESTEPS, history=HISTORY)
  reference = SecondMomentReference(NUM_TIMESTEPS, HISTORY)
  scripted_ts = [
      [0, 0, 0, 0, 0, 1, 1, 2],  # t = 0 overflows its history inside one batch
      [5, 4, 3, 3, 2, 1, 0, 0],
      [2, 2, 2, 2, 2, 2, 2, 2],
      [3, 4, 5, 4, 3, 5, 1, 1],  # now every t is full: second-moment sampling starts
      [0, 1, 2, 3, 4, 5, 0, 1],
      [4, 4, 1, 4, 4, 0, 4, 4],
  ]
  warm = []
  for ts in scripted_ts:
    losses = rng.uniform(0.01, 2.0, BATCH) * (1 + np.array(ts))  # larger t, larger loss
    state = update(state, jnp.array(ts), jnp.array(losses, jnp.float32))
    reference.update(ts, losses)
    np.testing.assert_array_equal(state.loss_counts, reference.counts)
    np.testing.assert_allclose(state.loss_history, reference.history, rtol=1e-6)
    np.testing.assert_allclose(probabilities(state), reference.probabilities(), rtol=1e-5)
    warm.append(bool((reference.counts == HISTORY).all()))
  assert warm == [False, False, False, True, True, True]
  p = reference.probabilities()
  assert p[5] > p[0] and not np.allclose(p, 1.0 / NUM_TIMESTEPS)

  t, weights = sample(state, jax.random.key(0), 20000)
  assert t.dtype == jnp.int32 and weights.dtype == jnp.float32
  np.testing.assert_allclose(weights, 1.0 / (NUM_TIMESTEPS * p[np.asarray(t)]), rtol=1e-5)
  frequencies = np.bincount(np.asarray(t), minlength=NUM_TIMESTEPS) / 20000
  np.testing.assert_allclose(frequencies, p, atol=0.015)


def test_uniform_until_every_timestep_has_ten_losses():
  state = init_sampler_state("loss-second-moment", 5)
  ts = np.repeat(np.arange(5), 10)[:-1]  # t = 4 gets only nine losses
  state = update(state, jnp.array(ts), jnp.array(ts + 1.0))
  np.testing.assert_allclose(probabilities(state), 0.2)
  state = update(state, jnp.array([4]), jnp.array([5.0]))
  rms = np.arange(1.0, 6.0)
  np.testing.assert_allclose(probabilities(state), rms / rms.sum() * 0.999 + 0.001 / 5, rtol=1e-6)


def test_uniform_sampler():
  state = init_sampler_state("uniform", 10)
  updated = update_sampler_state(state, jnp.array([1, 2]), jnp.array([3.0, 4.0]))
  np.testing.assert_array_equal(updated.loss_counts, 0)
  t, weights = sample(state, jax.random.key(1), 4000)
  np.testing.assert_array_equal(weights, 1.0)
  assert np.asarray(t).min() == 0 and np.asarray(t).max() == 9
  again, _ = sample(state, jax.random.key(1), 4000)
  np.testing.assert_array_equal(t, again)


def test_unknown_sampler_is_a_user_error():
  with pytest.raises(PitiError, match="loss-second-moment"):
    init_sampler_state("importance", 10)
