"""AdamW with the reference's defaults, optional warm-up/cosine, clipping, per-part lrs.

The reference (PITI_SPEC.md section 5) uses AdamW (betas 0.9/0.999, eps 1e-8, weight
decay 0), a constant learning rate, no clipping. The optimizer only ever sees the
trainable parameter tree, so frozen parameters have no optimizer state at all.
"""

import jax
import ml_collections
import optax

from piti_jax.errors import PitiError
from piti_jax.train.params import ParamTree


def learning_rate_schedule(peak: float, warmup_steps: int = 0, cosine_decay_steps: int = 0,
                           final_fraction: float = 0.0) -> optax.Schedule:
  """Constant `peak`, optionally after a linear warm-up and followed by cosine decay.

  Args:
    peak: learning rate after warm-up.
    warmup_steps: steps of linear warm-up from 0 (0 = none).
    cosine_decay_steps: steps of cosine decay after warm-up (0 = stay constant).
    final_fraction: lr at the end of the decay as a fraction of `peak`.
  """
  if peak <= 0:
    raise PitiError(f"learning rate {peak} must be positive; set config.optim.lr (or encoder_lr/decoder_lr).")
  if cosine_decay_steps > 0:
    return optax.warmup_cosine_decay_schedule(0.0, peak, max(warmup_steps, 0), warmup_steps + cosine_decay_steps,
                                              end_value=peak * final_fraction)
  if warmup_steps > 0:
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup_steps), optax.constant_schedule(peak)],
                                [warmup_steps])
  return optax.constant_schedule(peak)


def _adamw(optim: ml_collections.ConfigDict, peak: float) -> optax.GradientTransformation:
  schedule = learning_rate_schedule(peak, optim.warmup_steps, optim.cosine_decay_steps, optim.final_lr_fraction)
  return optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay)


def part_labels(params: ParamTree) -> ParamTree:
  """Labels every parameter with its top-level part ("encoder" or "decoder")."""

  def label(path, _):
    return "encoder" if path and getattr(path[0], "key", None) == "encoder" else "decoder"

  return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(optim: ml_collections.ConfigDict, params: ParamTree) -> optax.GradientTransformation:
  """The optimizer for the trainable tree `params` (only its structure is read).

  `optim.encoder_lr` / `optim.decoder_lr` (> 0) give the encoder and the rest of the
  model their own learning rate; otherwise `optim.lr` applies to everything.
  Clipping (`optim.grad_clip_norm` > 0) acts on the global norm over all parts.
  """
  separate = optim.encoder_lr > 0 or optim.decoder_lr > 0
  if separate:
    rates = {"encoder": optim.encoder_lr or optim.lr, "decoder": optim.decoder_lr or optim.lr}
    used = set(jax.tree.leaves(part_labels(params)))
    tx = optax.multi_transform({name: _adamw(optim, rates[name]) for name in used}, part_labels)
  else:
    tx = _adamw(optim, optim.lr)
  if optim.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(optim.grad_clip_norm), tx)
  return tx


def make_discriminator_optimizer(lr: float) -> optax.GradientTransformation:
  """Adam with default betas at `lr` (the reference's discriminator optimizer)."""
  return optax.adam(learning_rate_schedule(lr))
