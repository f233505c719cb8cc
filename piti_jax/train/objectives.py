"""Per-example training objectives: the diffusion loss, plus perceptual and adversarial terms.

A batch is a dict of global arrays (see the data contract): "image" (B, H, W, 3) in
[-1, 1], and either "condition" (B, 256, 256, Cin) for PITI or "tokens"/"token_mask"
(B, L) for text-to-image; upsamplers also get "low_res" (B, h, w, 3).

The upsampler objective (PITI_SPEC.md section 6) adds, from `adversarial_start` on,
0.004 * VGG conv2_2 MSE and 0.01 * (-mean D(x0_hat)) on the clamped predicted clean image
x0_hat at the sampled t; the PatchGAN critic is trained with WGAN-GP on the same x0_hat.
The train step (piti_jax.train.step) puts these together in the reference's order.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from piti_jax.diffusion.gaussian import GaussianDiffusion, mean_flat

Batch = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
  """Static settings of the loss.

  adversarial: add the perceptual and adversarial terms and train the discriminator.
  adversarial_start: first step at which those terms are on and the critic is trained (reference: 100).
  perceptual_weight, adversarial_weight, gradient_penalty_weight: 0.004, 0.01, 10 in the reference.
  critic_first: the reference's order (its adv.py): the critic takes its step on this step's x0_hat
    first, and the generator's adversarial term is computed with the updated critic. False: the
    generator's term uses the critic from before its update (both see the same x0_hat).
  """
  adversarial: bool = False
  adversarial_start: int = 100
  perceptual_weight: float = 0.004
  adversarial_weight: float = 0.01
  gradient_penalty_weight: float = 10.0
  critic_first: bool = True


def is_text_batch(batch: Batch) -> bool:
  return "tokens" in batch


def condition_of(batch: Batch) -> Any:
  """The model's `cond` argument from a batch: an image (B, 256, 256, Cin) or a token dict."""
  if is_text_batch(batch):
    return {"tokens": batch["tokens"], "mask": batch["token_mask"]}
  return batch["condition"]


def perceptual_distance(vgg: Callable[[jax.Array], jax.Array], fake: jax.Array, real: jax.Array) -> jax.Array:
  """Per-example mean squared distance of VGG conv2_2 features, float32 (B,)."""
  return mean_flat(jnp.square(vgg(fake).astype(jnp.float32) - vgg(real).astype(jnp.float32)))


def diffusion_terms(model: nnx.Module, diffusion: GaussianDiffusion, batch: Batch, *, t: jax.Array,
                    noise: jax.Array, cond: Any, dropout_key: jax.Array, train: bool = True) -> dict[str, jax.Array]:
  """Per-example diffusion losses of the model on one batch (differentiable in the model's parameters).

  `train` turns dropout on (with `dropout_key`); validation passes False.

  Returns float32 (B,) "mse", "vb" and "diffusion" (= mse + vb, the reference's hybrid loss, also
  what the timestep sampler records), and "fake" (B, H, W, 3): the x0 prediction clamped to [-1, 1].
  """
  x0 = batch["image"]
  x_t = diffusion.q_sample(x0, t, noise)
  output = model(x_t, diffusion.model_timesteps(t), cond, low_res=batch.get("low_res"), train=train,
                 rngs=nnx.Rngs(dropout=dropout_key) if train else None)
  terms = diffusion.training_losses(output.astype(jnp.float32), x0, x_t, t, noise)
  return {"mse": terms["mse"], "vb": terms["vb"], "diffusion": terms["loss"],
          "fake": jnp.clip(terms["pred_xstart"], -1.0, 1.0)}


def adversarial_terms(fake: jax.Array, real: jax.Array, *, discriminator: nnx.Module,
                      vgg: Callable[[jax.Array], jax.Array]) -> dict[str, jax.Array]:
  """The upsampler's extra per-example terms on the generated x0_hat `fake` (B, H, W, 3).

  Returns float32 (B,) "perceptual" (VGG conv2_2 feature MSE against `real`) and "adversarial"
  (-mean over patches of the critic's logits).
  """
  return {"perceptual": perceptual_distance(vgg, fake, real),
          "adversarial": -mean_flat(discriminator(fake).astype(jnp.float32))}


def discriminator_loss(discriminator: Callable[[jax.Array], jax.Array], real: jax.Array, fake: jax.Array,
                       mix: jax.Array, penalty_weight: float) -> tuple[jax.Array, dict[str, jax.Array]]:
  """WGAN-GP critic loss: mean D(fake) - mean D(real) + w * mean_b (||grad_x D(x_mix)_b||_2 - 1)^2.

  Args:
    discriminator: the critic, (B, H, W, 3) -> logits (B, h, w, 1).
    real, fake: (B, H, W, 3) images (fake: the generator's x0_hat, not differentiated here).
    mix: (B,) e ~ U(0, 1) per example; x_mix = e * real + (1 - e) * fake (the reference's order).
    penalty_weight: w (10 in the reference).
  The gradient is that of sum D(x_mix), its norm taken per example over all pixels and channels.
  Returns (scalar loss, {"critic": mean D(real) - mean D(fake), "gradient_penalty": the mean without w}).
  """
  e = mix.astype(real.dtype)[:, None, None, None]
  mixed = e * real + (1.0 - e) * fake

  def critic_sum(x):
    return jnp.sum(discriminator(x).astype(jnp.float32))

  gradients = jax.grad(critic_sum)(mixed)
  norms = jnp.sqrt(jnp.sum(jnp.square(gradients), axis=(1, 2, 3)) + 1e-12)
  penalty = jnp.mean(jnp.square(norms - 1.0))
  d_real = jnp.mean(discriminator(real).astype(jnp.float32))
  d_fake = jnp.mean(discriminator(fake).astype(jnp.float32))
  loss = d_fake - d_real + penalty_weight * penalty
  return loss, {"critic": d_real - d_fake, "gradient_penalty": penalty}
