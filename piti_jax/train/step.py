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

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

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


def apply_gradients(tx: optax.GradientTransformation, ema_rates: tuple[float, ...], params: Any, grads: Any,
                    opt_state: Any, ema: dict[str, Any]) -> tuple[Any, Any, dict[str, Any], jax.Array]:
  """The update part of a train step: (new params, new optimizer state, new averages, global gradient norm).

  params and grads: the trainable tree; ema: the averages by rate name (`ema.update_ema`); the norm is
  a float32 scalar. `benchmarks/update_step.py` times this alone.
  """
  grad_norm = optax.tree.norm(grads)
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  return params, opt_state, ema_lib.update_ema(ema, params, ema_rates), grad_norm


def make_train_step(models: StepModels, diffusion: GaussianDiffusion, tx: optax.GradientTransformation,
                    disc_tx: optax.GradientTransformation | None, config: StepConfig) -> Callable:
  """train_step(state, batch, extras) -> (state, metrics); not yet jitted (see `jit_train_step`).

  extras: {"vgg": VGG feature weights} in adversarial configs, else {}: runtime values, so other
  weights do not recompile.

  The model runs forward once (`jax.vjp`); with the adversarial terms, the critic takes its
  step on that forward's x0_hat before the generator's adversarial term is evaluated (the
  reference's order, `ObjectiveConfig.critic_first`), and the generator's gradient is pulled
  back through that one forward.

  A step whose loss or gradients are not finite is applied like any other and flagged in
  `metrics["nonfinite"]`; the loop stops at the first flagged step and never saves a state
  after it (loop.py). Keeping the old state here instead (a select between old and new) made
  XLA copy the whole state every step: on a 2-core CPU, 70 MiB more at the bench_tiny stage-2
  step's peak (docs/performance.md, section 16).
  """
  objective = config.objective

  def train_step(state: TrainState, batch: dict[str, jax.Array], extras: dict[str, Any]):
    key = _rng_key(state)
    k_time, k_noise, k_dropout, k_penalty = jax.random.split(key, 4)
    images = batch["image"]
    t, weights = timestep_sampler.sample_timesteps(state.sampler, k_time, images.shape[0])
    noise = jax.random.normal(k_noise, images.shape, images.dtype)
    cond = objectives.condition_of(batch)  # null conditions (uncond_p) are drawn by the data pipeline

    def forward(params):
      model = models.model.merge(params, state.frozen)
      return objectives.diffusion_terms(model, diffusion, batch, t=t, noise=noise, cond=cond, dropout_key=k_dropout)

    terms, pullback = jax.vjp(forward, state.params)
    loss = jnp.mean(weights * terms["diffusion"])
    cotangent = jax.tree.map(jnp.zeros_like, terms)
    cotangent["diffusion"] = weights / images.shape[0]
    new, metrics = {}, {}
    if objective.adversarial:
      adversarial = adversarial_step(
          discriminator=models.discriminator, disc_tx=disc_tx, objective=objective, disc_params=state.disc_params,
          disc_opt_state=state.disc_opt_state, step=state.step, real=images, fake=terms["fake"], weights=weights,
          key=k_penalty, vgg=nnx.merge(models.vgg_graphdef, extras["vgg"]))
      new.update(disc_params=adversarial.disc_params, disc_opt_state=adversarial.disc_opt_state)
      cotangent["fake"] = adversarial.fake_grad
      loss = loss + adversarial.loss
      metrics.update(adversarial.metrics)
    (grads,) = pullback(cotangent)
    params, opt_state, ema, grad_norm = apply_gradients(tx, config.ema_rates, state.params, grads, state.opt_state,
                                                        state.ema)
    nonfinite = ~(jnp.isfinite(loss) & jnp.isfinite(grad_norm))
    if objective.adversarial:
      nonfinite = nonfinite | ~jnp.isfinite(metrics["critic_loss"])
    new.update(params=params, opt_state=opt_state, ema=ema,
               sampler=timestep_sampler.update_sampler_state(state.sampler, t, terms["diffusion"]))
    metrics.update(loss=loss, mse=jnp.mean(terms["mse"]), vb=jnp.mean(terms["vb"]), grad_norm=grad_norm,
                   nonfinite=nonfinite.astype(jnp.float32))
    return state.replace(step=state.step + 1, **new), metrics

  return train_step


@flax.struct.dataclass
class AdversarialStep:
  """The adversarial part of an upsampler train step (see `adversarial_step`).

  disc_params, disc_opt_state: the critic after its step (unchanged before `adversarial_start`).
  loss: scalar, mean_b weights_b * (perceptual_weight * perceptual_b + adversarial_weight * adversarial_b),
    0 before `adversarial_start`.
  fake_grad: d loss / d fake, (B, H, W, 3), to pull back through the generator.
  metrics: "perceptual", "adversarial" (batch means, also before the start), "critic_loss", "critic",
    "gradient_penalty".
  """
  disc_params: Any
  disc_opt_state: Any
  loss: jax.Array
  fake_grad: jax.Array
  metrics: Metrics


def adversarial_step(*, discriminator: ModelTemplate, disc_tx: optax.GradientTransformation,
                     objective: objectives.ObjectiveConfig, disc_params: Any, disc_opt_state: Any, step: jax.Array,
                     real: jax.Array, fake: jax.Array, weights: jax.Array, key: jax.Array,
                     vgg: Callable[[jax.Array], jax.Array]) -> AdversarialStep:
  """The critic's WGAN-GP step and the generator's perceptual + adversarial loss on x0_hat `fake`.

  Nothing acts before step `objective.adversarial_start`: the critic keeps its parameters and
  optimizer state, and the generator's extra loss and its gradient are zero. From then on the
  critic steps on (real, fake) first and, with `objective.critic_first` (the reference's order),
  the generator's adversarial term is computed with the updated critic; otherwise with the critic
  from before the step.
  """
  on = step >= objective.adversarial_start
  mix = jax.random.uniform(key, real.shape[:1])

  def critic_fn(params):
    return objectives.discriminator_loss(discriminator.merge(params), real, jax.lax.stop_gradient(fake), mix,
                                         objective.gradient_penalty_weight)

  (critic_loss, critic_terms), grads = jax.value_and_grad(critic_fn, has_aux=True)(disc_params)
  updates, new_opt_state = disc_tx.update(grads, disc_opt_state, disc_params)
  new_params = _keep_if(~on, optax.apply_updates(disc_params, updates), disc_params)
  new_opt_state = _keep_if(~on, new_opt_state, disc_opt_state)
  judge = discriminator.merge(new_params if objective.critic_first else disc_params)

  def generator_loss(fake):
    terms = objectives.adversarial_terms(fake, real, discriminator=judge, vgg=vgg)
    total = objective.perceptual_weight * terms["perceptual"] + objective.adversarial_weight * terms["adversarial"]
    return jnp.mean(weights * jnp.where(on, total, 0.0)), terms

  (loss, terms), fake_grad = jax.value_and_grad(generator_loss, has_aux=True)(fake)
  metrics = {"perceptual": jnp.mean(terms["perceptual"]), "adversarial": jnp.mean(terms["adversarial"]),
             "critic_loss": critic_loss, **critic_terms}
  return AdversarialStep(new_params, new_opt_state, loss, fake_grad, metrics)


def jit_train_step(train_step: Callable, mesh: Mesh, state_shardings: TrainState, batch_keys: tuple[str, ...],
                   extras_shardings: dict[str, Any]) -> Callable:
  """Jits the step with explicit shardings; the state argument is donated."""
  batch_shardings = {name: partition.batch_sharding(mesh) for name in batch_keys}
  return jax.jit(train_step, in_shardings=(state_shardings, batch_shardings, extras_shardings),
                 out_shardings=(state_shardings, partition.replicated(mesh)), donate_argnums=(0,))


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
    terms = objectives.diffusion_terms(model, diffusion, batch, t=t, noise=noise, cond=objectives.condition_of(batch),
                                       dropout_key=k_noise, train=False)
    return {"val_loss": jnp.mean(terms["diffusion"]), "val_mse": jnp.mean(terms["mse"]),
            "val_vb": jnp.mean(terms["vb"])}

  return validation_step
