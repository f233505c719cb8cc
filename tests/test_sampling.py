"""The sampling module on 8 fake devices with a very small PITI model (16x16 images, 32x32 conditions).

The model's weights are random and non-zero everywhere (the zero-initialised output layers
too), so conditional and unconditional predictions differ and guidance has something to do.
Compiled samplers are shared through `_sampler` (one compile per sampling config).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from piti_jax import sampling
from piti_jax.diffusion.analytic import gaussian_data_model_fn
from piti_jax.errors import PitiError
from piti_jax.models import presets
from piti_jax.models.piti import PitiModel
from piti_jax.param_paths import flatten, unflatten
from piti_jax.train.params import ModelTemplate

MODEL = presets.get_config("tiny_piti64", image_size=16, model_channels=32, num_head_channels=32, xf_width=32,
                           xf_heads=2, cond_size=32, cnn_hidden=(4, 8, 8, 16, 32), dropout=0.0)
BATCH = 8
IMAGE_SHAPE = (BATCH, 16, 16, 3)
ENCODED_IMAGES = []  # condition images seen by the encoder at run time (one entry per shard)


class CountingPitiModel(PitiModel):
  """PitiModel whose encoder reports, at run time, how many condition images it encodes."""

  def encode(self, cond):
    jax.debug.callback(lambda c: ENCODED_IMAGES.append(c.shape[0]), cond)
    return super().encode(cond)


@functools.cache
def _template() -> ModelTemplate:
  return ModelTemplate(lambda rngs: CountingPitiModel(MODEL, rngs=rngs))


@functools.cache
def _params():
  rng = np.random.default_rng(0)
  flat = flatten(_template().abstract_params())
  return unflatten({path: jnp.asarray(rng.normal(0.0, 0.15, leaf.shape), jnp.float32) for path, leaf in flat.items()})


@functools.cache
def _sampler(**fields) -> sampling.Sampler:
  return sampling.Sampler(_template(), "cosine", 1000, sampling.SamplingConfig(**fields))


def _conditions(count: int = BATCH) -> jax.Array:
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 3, (count, 2, 2))
  colours = np.array([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]], np.float32)
  return jnp.asarray(np.repeat(np.repeat(colours[labels], 16, axis=1), 16, axis=2))


def _run(sampler: sampling.Sampler, indices, seed: int = 0, cond=None) -> np.ndarray:
  cond = _conditions(len(indices)) if cond is None else cond
  return np.asarray(sampler(_params(), cond, None, jax.random.key(seed), np.asarray(indices),
                           (len(indices),) + IMAGE_SHAPE[1:]))


DDPM = dict(sampler="ddpm", respacing="4")
DDIM = dict(sampler="ddim", respacing="4")


def test_sampling_is_deterministic_for_a_seed_and_per_sample():
  sampler = _sampler(**DDPM)
  first = _run(sampler, range(BATCH))
  assert first.shape == IMAGE_SHAPE and np.all(np.abs(first) <= 1.0)
  np.testing.assert_array_equal(first, _run(sampler, range(BATCH)))
  assert not np.allclose(first, _run(sampler, range(BATCH), seed=1))
  # Sample i depends only on (seed, i): the same images in a shuffled batch.
  order = np.array([3, 0, 7, 1, 6, 2, 5, 4])
  shuffled = _run(sampler, order, cond=_conditions()[order])
  np.testing.assert_allclose(shuffled, first[order], atol=1e-5)


def test_the_encoder_runs_once_per_image_and_once_for_the_null_condition():
  # guided: each condition once and the (shared) null condition once, not once per step
  for fields, encoded, per_image in ((DDPM, BATCH, 1), (dict(DDIM, guidance_scale=3.0), BATCH + 1, 2)):
    sampler = _sampler(**fields)
    _run(sampler, range(BATCH))  # compile outside the count
    ENCODED_IMAGES.clear()
    _run(sampler, range(BATCH))
    jax.effects_barrier()
    assert sum(ENCODED_IMAGES) == encoded
    assert sampler.network_evaluations == 4 * per_image


def test_plain_guidance_at_scale_one_equals_the_conditional_model():
  from piti_jax.diffusion.guidance import guided_model_fn
  from piti_jax.data.conditions import null_condition

  @jax.jit
  def guided_and_conditional(params, cond, x, t):
    model = _template().merge(params)
    doubled = model.encode(jnp.concatenate([cond, null_condition(cond, jnp)]))
    return guided_model_fn(lambda x2, t2: model(x2, t2, encoded=doubled), 1.0)(x, t), model(x, t, cond)

  x = jax.random.normal(jax.random.key(2), IMAGE_SHAPE)
  guided, conditional = guided_and_conditional(_params(), _conditions(), x, jnp.full((BATCH,), 500.0))
  np.testing.assert_allclose(guided, conditional, rtol=1e-5, atol=1e-5)  # eps_u + (eps_c - eps_u) rounds


class GaussianConditionModel:
  """A stand-in model with exact eps: condition c -> data x0 ~ N(0.5 c, 0.1^2) per pixel; the null
  condition (all ones) -> grey data N(0, 0.1^2). `encode` and `__call__(x, t, encoded=)`
  as the PITI models, so `sampling.sample_images` runs its real guidance and sampler code on it."""

  def __init__(self, diffusion):
    self.diffusion = diffusion

  def encode(self, cond):
    return cond

  def __call__(self, x, t, encoded, low_res=None):
    del low_res
    null = jnp.all(encoded == 1.0, axis=(1, 2, 3), keepdims=True)
    mean, std = jnp.where(null, 0.0, 0.5 * encoded), 0.1
    return gaussian_data_model_fn(self.diffusion, mean, std)(x, t)


@functools.cache
def _gaussian_sampler(**fields):
  config = sampling.SamplingConfig(sampler="ddim", respacing="25", **fields)
  diffusion = sampling.sampling_diffusion("cosine", 1000, config)
  model = GaussianConditionModel(diffusion)
  return jax.jit(lambda cond, key: sampling.sample_images(model, cond, None, key, IMAGE_SHAPE, diffusion, config))


def _per_sample_stats(images) -> np.ndarray:
  """(B, ...) -> (B, 2): mean and std over each sample's pixels."""
  flat = np.asarray(images, np.float64).reshape(images.shape[0], -1)
  return np.stack([flat.mean(axis=1), flat.std(axis=1)], axis=1)


def test_normalized_guidance_keeps_statistics_where_plain_guidance_drifts(monkeypatch):
  """At every step of a guided chain, the eps the sampler uses keeps the conditional eps's per-sample
  mean and std under normalized guidance; under plain guidance its std drifts away as the scale grows."""
  recorded = []  # per step: (B, 2) stats of the guided eps and of the conditional eps
  real_guided_model_fn = sampling.guidance_lib.guided_model_fn

  def recording_guided_model_fn(model_fn_doubled, scale, **kwargs):
    guided = real_guided_model_fn(model_fn_doubled, scale, **kwargs)

    def model_fn(x, t):
      out = guided(x, t)
      eps_cond = model_fn_doubled(jnp.concatenate([x, x]), jnp.concatenate([t, t]))[:x.shape[0], ..., :3]
      jax.debug.callback(lambda g, c: recorded.append((_per_sample_stats(g), _per_sample_stats(c))),
                         out[..., :3], eps_cond)
      return out

    return model_fn

  monkeypatch.setattr(sampling.guidance_lib, "guided_model_fn", recording_guided_model_fn)
  cond, key = _conditions()[:, ::2, ::2], jax.random.key(3)  # the stand-in's conditions are image-sized
  worst = {}
  for kind, scale in (("plain", 3.0), ("plain", 8.0), ("normalized", 3.0), ("normalized", 8.0)):
    recorded.clear()
    jax.block_until_ready(_gaussian_sampler(guidance=kind, guidance_scale=scale)(cond, key))
    jax.effects_barrier()
    assert len(recorded) == 25  # one guided evaluation per step
    worst[kind, scale] = max(np.abs(g - c).max(axis=0)[1] / c[:, 1].min() for g, c in recorded)
  assert worst["normalized", 3.0] < 1e-4 and worst["normalized", 8.0] < 1e-4
  assert 0.05 < worst["plain", 3.0] and worst["plain", 8.0] > 1.0  # measured: 0.074 and 5.0


def test_bad_sampling_settings_are_user_errors():
  with pytest.raises(PitiError, match="unknown sampler"):
    sampling.SamplingConfig(sampler="euler")
  with pytest.raises(PitiError, match="unknown guidance"):
    sampling.SamplingConfig(guidance="cfg++")
  with pytest.raises(PitiError, match="unknown sample field"):
    sampling.sampling_config({"respacing": "25", "guidance_sclae": 2.0})
  with pytest.raises(PitiError, match="pad it to 8"):
    _sampler(**DDPM)(_params(), _conditions(3), None, jax.random.key(0), np.arange(3), (3, 16, 16, 3))
