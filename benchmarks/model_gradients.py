"""Do two versions of the model compute the same gradients? Save one model's gradients, compare.

  python benchmarks/model_gradients.py --preset=tiny_piti64 --out=/tmp/after.npz
  (the same at the other commit, --out=/tmp/before.npz)
  python benchmarks/model_gradients.py --compare=/tmp/before.npz,/tmp/after.npz
  (or one commit, the model with and without `--remat` / `--recompute_encoder`)

Train steps from a fresh model say little about the backward pass: the zero-initialised output
convolutions stop every gradient but their own at the first step, and Adam normalises each
element of a gradient, so rounding-level gradients move as much as large ones. This draws every
parameter from N(0, 0.05^2) (seed 0), runs the model in train mode (dropout on, key 3) on one
random batch of 2, and writes the value and the gradients of a fixed random projection of its
output. `--compare` prints one JSON line: whether the values are bitwise equal, how many gradient
arrays are, and the largest difference relative to each array's largest magnitude, over the
arrays whose gradient reaches 1e-3 of the largest one anywhere and, apart, over the smaller ones
(where a relative difference can be rounding noise: e.g. a convolution bias that a following
per-channel norm cancels has a gradient of rounding size).
"""

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

import common
from piti_jax.models import get_config
from piti_jax.models.presets import build_model
from piti_jax.models.task_encoder import TASK_CHANNELS
from piti_jax.param_paths import flatten

VALUE = "value"  # the key of the projection's value in the .npz; every other key is a parameter path
BATCH = 2
SMALL = 1e-3  # arrays whose largest gradient is below this fraction of the largest anywhere are reported apart

_PRESET = flags.DEFINE_string("preset", "tiny_piti64", "Model preset (a PITI base model).")
_OUT = flags.DEFINE_string("out", None, ".npz file to write the value and gradients to.")
_REMAT = flags.DEFINE_bool("remat", False, "model.overrides.remat: the UNet blocks recomputed in the backward pass.")
_RECOMPUTE_ENCODER = flags.DEFINE_bool("recompute_encoder", False,
                                       "model.overrides.recompute_encoder: the encoder recomputed in the backward pass.")
_COMPARE = flags.DEFINE_list("compare", [], "Two .npz files written by --out: compare them and exit.")


def gradients(preset: str, **overrides) -> dict[str, np.ndarray]:
  """{"value": projection, parameter path: its float32 gradient} of the preset with random parameters."""
  config = get_config(preset, **overrides)
  model = build_model(config, rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda p: jnp.asarray(rng.normal(0.0, 0.05, p.shape), p.dtype), params)
  size, cond_size = config.image_size, config.cond_size
  x = jnp.asarray(rng.normal(size=(BATCH, size, size, 3)), jnp.float32)
  cond = jnp.asarray(rng.uniform(-1, 1, size=(BATCH, cond_size, cond_size, TASK_CHANNELS[config.task])), jnp.float32)
  t = jnp.asarray([10, 700])
  projection = jnp.asarray(rng.normal(size=(BATCH, size, size, 6)), jnp.float32)

  def value(params):
    output = nnx.merge(graphdef, params, rest)(x, t, cond, train=True, rngs=nnx.Rngs(dropout=jax.random.key(3)))
    return jnp.sum(output * projection)

  result, grads = jax.jit(jax.value_and_grad(value))(params)
  return {VALUE: np.asarray(result), **{k: np.asarray(v) for k, v in flatten(jax.device_get(grads)).items()}}


def compare(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> dict:
  differences = common.array_differences(before, after, VALUE)
  largest = max(magnitude for _, magnitude, _ in differences.values())
  worst = {False: (0.0, None), True: (0.0, None)}  # small array? -> (largest relative difference, its name)
  for name, (relative, magnitude, _) in differences.items():
    small = magnitude < SMALL * largest
    worst[small] = max(worst[small], (relative, name), key=lambda pair: pair[0])
  return {"value_before": float(before[VALUE]), "value_after": float(after[VALUE]),
          "value_bitwise_equal": bool(np.array_equal(before[VALUE], after[VALUE])),
          "gradient_arrays": len(differences),
          "bitwise_equal_arrays": sum(equal for _, _, equal in differences.values()),
          "max_relative_difference": worst[False][0], "max_difference_at": worst[False][1],
          "small_arrays": sum(magnitude < SMALL * largest for _, magnitude, _ in differences.values()),
          "max_relative_difference_of_small_arrays": worst[True][0], "small_max_difference_at": worst[True][1]}


def main(argv) -> None:
  del argv
  common.save_or_compare(_COMPARE.value, _OUT.value, compare, lambda: gradients(
      _PRESET.value, remat=_REMAT.value, recompute_encoder=_RECOMPUTE_ENCODER.value))


if __name__ == "__main__":
  app.run(main)
