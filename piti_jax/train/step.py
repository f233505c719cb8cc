"""The jitted train step (one for every mode) and the validation-loss step.

The step is a pure function of (TrainState, global batch, frozen extras such as the VGG
weights): it rebuilds the NNX modules from parameter trees with `ModelTemplate.merge`,
differentiates only with respect to the trainable tree, and returns the new state
(donated input) and a dict of scalar metrics reduced over the global batch. A step whose
loss or gradients are not finite applies no update (its step counter still advances) and
reports `nonfinite = 1`, so the state stays the last good one.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from piti_jax.diffusion import timestep_sampler
from piti_jax.diffusion.gaussian import GaussianDiffusion
from piti_jax.train import ema as ema_lib
from piti_jax.train import objectives, partition
from piti_jax.train.params import ModelTemplate
from piti_jax.train.state import TrainState

Metrics = dict[str, jax.Array]
VALIDATION_SALT = 0x7A11D


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Static settings of the step.

  ema_rates: rates of the parameter averages.
  objective: loss settings (objectives.ObjectiveConfig).
  """
  ema_rates: tuple[float, ...]
  objective: objectives.ObjectiveConfig


@dataclasses.dataclass(frozen=True)
class StepModels:
  """Static module definitions used inside the step.

  model: template of the diffusion model.
  discriminator: template of the PatchGAN critic (adversarial modes only).
  vgg_graphdef: graph definition of the VGG feature extractor (its weights come as `extras["vgg"]`).
  """
  model: ModelTemplate
  discriminator: ModelTemplate | None = None
  vgg_graphdef: Any = None


def _rng_key(state: TrainState) -> jax.Array:
  """The key of this step: fold_in(run key, step), so a resumed run draws the same numbers."""
  return jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)


def _keep_if(bad: jax.Array, new: Any, old: Any) -> Any:
  """`old` where `bad`, else `new` (leaf-wise)."""
  return jax.tree.map(lambda n, o: jnp.where(bad, o, n), new, old)


def make_train_step(models: StepModels, diffusion: GaussianDiffusion, tx: optax.GradientTransformation,
                    disc_tx: optax.GradientTransformation | None, config: StepConfig) -> Callable:
  """train_step(state, batch, extras) -> (state, metrics); not yet jitted (see `jit_train_step`).

  extras: {"nan_at_step": int32 () step whose loss is made NaN (tests of the fault path; -1 =
  never), "vgg": VGG feature weights (adversarial configs)}. Runtime values, so changing them
  does not recompile.
  """
  objective = config.objective

  def train_step(state: TrainState, batch: dict[str, jax.Array], extras: dict[str, Any]):
    key = _rng_key(state)
    k_time, k_noise, k_dropout, k_penalty = jax.random.split(key, 4)
    images = batch["image"]
    t, weights = timestep_sampler.sample_timesteps(state.sampler, k_time, images.shape[0])
    noise = jax.random.normal(k_noise, images.shape, images.dtype)
    cond = objectives.condition_of(batch)  # null conditions (uncond_p) are drawn by the data pipeline
    discriminator = vgg = None
    if objective.adversarial:
      discriminator = models.discriminator.merge(state.disc_params)
      vgg = nnx.merge(models.vgg_graphdef, extras["vgg"])

    def loss_fn(params):
      model = models.model.merge(params, state.frozen)
      losses = objectives.generator_losses(
          model, diffusion, batch, t=t, weights=weights, noise=noise, cond=cond, dropout_key=k_dropout,
          step=state.step, config=objective, discriminator=discriminator, vgg=vgg)
      loss = jnp.mean(losses["loss"])
      loss = loss + jnp.where(state.step == extras["nan_at_step"], jnp.nan, 0.0)
      return loss, losses

    (loss, losses), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grad_norm = optax.tree.norm(grads)
    nonfinite = ~(jnp.isfinite(loss) & jnp.isfinite(grad_norm))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new = dict(
        params=params,
        opt_state=opt_state,
        ema=ema_lib.update_ema(state.ema, params, config.ema_rates),
        sampler=timestep_sampler.update_sampler_state(state.sampler, t, losses["diffusion"]),
    )
    metrics = {
        "loss": loss,
        "mse": jnp.mean(losses["mse"]),
        "vb": jnp.mean(losses["vb"]),
        "grad_norm": grad_norm,
    }
    if objective.adversarial:
      def critic_fn(disc_params):
        return objectives.discriminator_loss(models.discriminator.merge(disc_params), images, losses["fake"],
                                             k_penalty, objective.gradient_penalty_weight)

      (critic_loss, critic_terms), disc_grads = jax.value_and_grad(critic_fn, has_aux=True)(state.disc_params)
      disc_updates, disc_opt_state = disc_tx.update(disc_grads, state.disc_opt_state, state.disc_params)
      off = state.step < objective.adversarial_start
      new["disc_params"] = _keep_if(off, optax.apply_updates(state.disc_params, disc_updates), state.disc_params)
      new["disc_opt_state"] = _keep_if(off, disc_opt_state, state.disc_opt_state)
      nonfinite = nonfinite | ~jnp.isfinite(critic_loss)
      metrics.update(perceptual=jnp.mean(losses["perceptual"]), adversarial=jnp.mean(losses["adversarial"]),
                     critic_loss=critic_loss, **critic_terms)
    old = {name: getattr(state, name) for name in new}
    new_state = state.replace(step=state.step + 1, **_keep_if(nonfinite, new, old))
    metrics["nonfinite"] = nonfinite.astype(jnp.float32)
    return new_state, metrics

  return train_step


def jit_train_step(train_step: Callable, mesh: Mesh, state_shardings: TrainState, batch_keys: tuple[str, ...],
                   extras_shardings: dict[str, Any]) -> Callable:
  """Jits the step with explicit shardings; the state argument is donated."""
  batch_shardings = {name: partition.batch_sharding(mesh) for name in batch_keys}
  replicated = NamedSharding(mesh, PartitionSpec())
  return jax.jit(train_step, in_shardings=(state_shardings, batch_shardings, extras_shardings),
                 out_shardings=(state_shardings, replicated), donate_argnums=(0,))


def make_validation_step(models: StepModels, diffusion: GaussianDiffusion, config: StepConfig) -> Callable:
  """validation_step(state, batch, index) -> {"val_loss", "val_mse", "val_vb"} (batch means).

  Uniform t and noise from a fixed key per validation batch `index` (the same every time),
  no dropout, the current (not averaged) parameters, the real conditions.
  """

  def validation_step(state: TrainState, batch: dict[str, jax.Array], index: jax.Array):
    key = jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(state.rng), VALIDATION_SALT), index)
    k_time, k_noise = jax.random.split(key)
    images = batch["image"]
    t = jax.random.randint(k_time, (images.shape[0],), 0, diffusion.num_timesteps)
    noise = jax.random.normal(k_noise, images.shape, images.dtype)
    model = models.model.merge(state.params, state.frozen)
    plain = dataclasses.replace(config.objective, adversarial=False)
    losses = objectives.generator_losses(
        model, diffusion, batch, t=t, weights=jnp.ones_like(t, jnp.float32), noise=noise,
        cond=objectives.condition_of(batch), dropout_key=k_noise, step=state.step, config=plain, train=False)
    return {"val_loss": jnp.mean(losses["diffusion"]), "val_mse": jnp.mean(losses["mse"]),
            "val_vb": jnp.mean(losses["vb"])}

  return validation_step
