"""The update part of a train step alone: over the parameter tree, as the step does it, and over one flat vector.

  python benchmarks/update_step.py --config=configs/bench.py:tiny --config.train.global_batch_size=4 --mode=stage2

After its backward pass a train step takes the global gradient norm, runs the optimizer, applies
the update and moves the parameter averages (piti_jax/train/step.py). Every one of those works
leaf by leaf, so XLA compiles a few small programs (fusions) per trained parameter array. This
times that part at the job's trained parameter shapes, random values, in two forms jitted on
their own and run in turns: `tree`, the step's own code (`step.apply_gradients`: `optax.tree.norm`,
the job's optimizer, `optax.apply_updates`, `ema.update_ema`), and `flat`, the same computation on all
the trained parameters concatenated into one vector (the job's optimizer on a one-leaf tree,
so it needs one learning rate for all parts). One JSON line: median ms of --repeats runs of
each, their spreads, the fusions each compiled program holds, the trained arrays and floats,
and the largest difference of the flat form's new parameters from the tree form's relative to
the largest parameter. Runs on the default JAX device.
"""

import json

import piti_jax  # noqa: F401  (sets the project's XLA:CPU flags before JAX starts)
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from absl import app, flags
from ml_collections import config_flags

from piti_jax.train import ema as ema_lib
from piti_jax.train import loop, partition, step

import common
import timing

_CONFIG = config_flags.DEFINE_config_file("config", "configs/bench.py:tiny", "Job config whose update to time.")
_MODE = flags.DEFINE_string("mode", None, "stage1 / stage2 / pretrain (default: the config's trainable set).")
_REPEATS = flags.DEFINE_integer("repeats", 25, "Timed runs of each form; the median is reported.")


def main(argv) -> None:
  del argv
  config = common.with_mode(_CONFIG.value, _MODE.value)
  if config.optim.encoder_lr > 0 or config.optim.decoder_lr > 0:
    raise app.UsageError("the flat form needs one learning rate for all parts; unset optim.encoder_lr / decoder_lr")
  mesh = partition.make_mesh(config.mesh.data, config.mesh.fsdp)
  with jax.set_mesh(mesh):
    trainer = loop.Trainer(config, mesh)
    shapes = trainer.abstract_sharded_state().params
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda leaf: jnp.asarray(rng.standard_normal(leaf.shape, dtype=np.float32)), shapes)
  grads = jax.tree.map(lambda leaf: jnp.asarray(1e-3 * rng.standard_normal(leaf.shape, dtype=np.float32)), shapes)
  rates, tx = tuple(trainer.ema_rates), trainer.functions.tx
  flat_params, flat_grads = ravel_pytree(params)[0], ravel_pytree(grads)[0]
  inputs = {"tree": (params, grads, tx.init(params), ema_lib.init_ema(params, rates)),
            "flat": (flat_params, flat_grads, tx.init(flat_params), ema_lib.init_ema(flat_params, rates))}
  compiled = {form: jax.jit(lambda *args: step.apply_gradients(tx, rates, *args)).lower(*args).compile()
              for form, args in inputs.items()}
  results = {form: jax.block_until_ready(compiled[form](*args)) for form, args in inputs.items()}
  times = timing.timed_in_turns({form: (lambda form=form: compiled[form](*inputs[form])) for form in inputs},
                                _REPEATS.value)
  largest = float(jnp.max(jnp.abs(flat_params)))
  difference = float(jnp.max(jnp.abs(ravel_pytree(results["tree"][0])[0] - results["flat"][0]))) / largest
  line = {"preset": config.model.preset, "mode": _MODE.value or config.train.trainable or "all",
          "device": jax.devices()[0].platform, "trained_arrays": len(jax.tree.leaves(params)),
          "trained_floats": int(flat_params.size), "ema_rates": list(rates), "repeats": _REPEATS.value}
  for form in inputs:
    line[f"{form}_ms"] = common.median_ms(times[form])
    line[f"{form}_spread"] = common.spread(times[form])
    line[f"{form}_fusions"] = compiled[form].as_text().count(" fusion(")
  line["max_relative_difference"] = difference
  print(json.dumps(line))


if __name__ == "__main__":
  app.run(main)
