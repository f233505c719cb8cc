"""Timestep samplers for training as pure, jittable state (lives in the train state).

"uniform": t ~ U{0..T-1}, weight 1.
"loss-second-moment" (importance sampling of the reference): each t keeps its last
`history` training losses. Until every t has `history` of them, t is uniform. Then
p(t) = (1 - u) sqrt(mean L_t^2) / sum_s sqrt(mean L_s^2) + u / T with u = 0.001, and each
loss is weighted by 1 / (T p(t)) so the objective's expectation is unchanged.

The state is updated inside the jitted train step from the losses of the GLOBAL batch;
within one batch, losses are taken in batch order (as the reference's sequential update
does), so several examples with the same t shift the history deterministically.
"""

import jax
import jax.numpy as jnp
from flax import struct
from jax import Array

from piti_jax.errors import PitiError

KINDS = ("uniform", "loss-second-moment")
UNIFORM_PROB = 0.001


@struct.dataclass
class SamplerState:
  """Loss history of a timestep sampler.

  loss_history: float32 (T, history), per t the last losses, oldest first (slots past
    loss_counts[t] are zero).
  loss_counts: int32 (T,), how many losses t holds (<= history).
  """

  loss_history: Array
  loss_counts: Array
  kind: str = struct.field(pytree_node=False)
  uniform_prob: float = struct.field(pytree_node=False, default=UNIFORM_PROB)

  @property
  def num_timesteps(self) -> int:
    return self.loss_history.shape[0]

  @property
  def history(self) -> int:
    return self.loss_history.shape[1]


def init_sampler_state(kind: str, num_timesteps: int, history: int = 10,
                       uniform_prob: float = UNIFORM_PROB) -> SamplerState:
  """A fresh sampler state: empty history, so sampling starts uniform."""
  if kind not in KINDS:
    raise PitiError(f"unknown timestep sampler {kind!r}; use one of {', '.join(KINDS)}.")
  if num_timesteps < 1 or history < 1:
    raise PitiError(f"timestep sampler needs num_timesteps >= 1 and history >= 1, got {num_timesteps}, {history}.")
  return SamplerState(loss_history=jnp.zeros((num_timesteps, history), jnp.float32),
                      loss_counts=jnp.zeros((num_timesteps,), jnp.int32), kind=kind, uniform_prob=uniform_prob)


def timestep_probabilities(state: SamplerState) -> Array:
  """p(t), float32 (T,): uniform, or the second-moment rule once every t is warmed up.

  If every stored loss is zero the second-moment rule is undefined and p stays uniform.
  """
  num_timesteps = state.num_timesteps
  uniform = jnp.full((num_timesteps,), 1.0 / num_timesteps, jnp.float32)
  if state.kind == "uniform":
    return uniform
  root_mean_square = jnp.sqrt(jnp.mean(jnp.square(state.loss_history), axis=-1))
  total = jnp.sum(root_mean_square)
  second_moment = root_mean_square / jnp.where(total > 0, total, 1.0)
  second_moment = second_moment * (1.0 - state.uniform_prob) + state.uniform_prob / num_timesteps
  warmed_up = jnp.all(state.loss_counts == state.history) & (total > 0)
  return jnp.where(warmed_up, second_moment, uniform)


def sample_timesteps(state: SamplerState, key: Array, batch_size: int) -> tuple[Array, Array]:
  """Draws t ~ p(t) for a batch.

  Returns:
    t: int32 (batch_size,); weights: float32 (batch_size,) = 1 / (T p(t)).
  """
  probabilities = timestep_probabilities(state)
  t = jax.random.choice(key, state.num_timesteps, (batch_size,), p=probabilities).astype(jnp.int32)
  weights = 1.0 / (state.num_timesteps * probabilities[t])
  return t, weights.astype(jnp.float32)


def _occurrence_index(t: Array) -> Array:
  """For each i, how many j < i have t[j] == t[i] (int32 (B,))."""
  order = jnp.argsort(t, stable=True)
  sorted_t = t[order]
  rank_in_group = jnp.arange(t.shape[0]) - jnp.searchsorted(sorted_t, sorted_t, side="left")
  return jnp.zeros_like(t).at[order].set(rank_in_group.astype(t.dtype))


def update_sampler_state(state: SamplerState, t: Array, losses: Array) -> SamplerState:
  """Appends a global batch of (t, loss) pairs, in batch order, to the histories.

  Equivalent to pushing the pairs one by one into per-t FIFO buffers of length
  `history` (the oldest loss drops out once a buffer is full), but vectorised.

  Args:
    state: the sampler state.
    t: int (B,) timesteps of the global batch.
    losses: float (B,) unweighted per-example losses ("loss" of `training_losses`).
  """
  if state.kind == "uniform":
    return state
  num_timesteps, history = state.loss_history.shape
  t = t.astype(jnp.int32)
  counts = state.loss_counts
  new_per_t = jnp.zeros((num_timesteps,), jnp.int32).at[t].add(1)
  total = counts + new_per_t
  new_counts = jnp.minimum(total, history)
  dropped = total - new_counts  # entries at the front of [old..., new...] that fall out

  # Old entries move left by `dropped`; slots that then hold no old entry are refilled below.
  slots = jnp.arange(history)[None, :]
  source = slots + dropped[:, None]
  keeps_old = source < counts[:, None]
  shifted = jnp.take_along_axis(state.loss_history, jnp.minimum(source, history - 1), axis=1)
  loss_history = jnp.where(keeps_old, shifted, 0.0)

  # New entry i sits at position counts[t_i] + occurrence_i of the combined sequence.
  slot = counts[t] + _occurrence_index(t) - dropped[t]
  slot = jnp.where(slot >= 0, slot, history)  # out of range: dropped by the scatter
  loss_history = loss_history.at[t, slot].set(losses.astype(jnp.float32), mode="drop")
  return state.replace(loss_history=loss_history, loss_counts=new_counts)
