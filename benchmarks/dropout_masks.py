"""Dropout with its mask drawn by `jax.random.bernoulli` and by `dropout.keep_mask`: alone, and in a ResBlock.

  python benchmarks/dropout_masks.py [--repeats 25]
  python benchmarks/dropout_masks.py --config=configs/bench.py:tiny --config.train.global_batch_size=4 --mode=stage2

Two programs per map size and mask source: the dropout alone (draw the mask, scale the kept
elements, zero the rest), and a UNet ResBlock's out path after its in-convolution: the out-norm
with the timestep's scale-shift and SiLU (`GroupNorm32.modulated_silu`), dropout at rate 0.1, the
3x3 out-convolution, jitted as the gradient of a sum of squares with respect to the input and the
parameters, so the mask is used by the forward and the backward pass as in a train step. The two
mask sources give equal masks bit for bit; all programs take turns. One JSON line per map size:
median ms of --repeats runs per program and mask source, their spreads, and whether the outputs
of the two mask sources are bitwise equal (docs/performance.md, section 21). Runs on the default
JAX device.

With --config, the whole train step of that job instead: compiled twice in this process, once as
the project runs it and once with `jax.random.bernoulli` in place of `dropout.keep_mask`, then
timed in --rounds rounds of --steps steps, the two taking turns (so they see the same host load,
which alternating processes do not). One JSON line: median step ms and CPU seconds of each.
"""

import json

import piti_jax  # noqa: F401  (sets the project's XLA:CPU flags before JAX starts)
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from piti_jax.models import dropout, layers, target

import common

_REPEATS = flags.DEFINE_integer("repeats", 25, "Timed runs per program; the median is reported.")
_CONFIG = config_flags.DEFINE_config_file("config", None, "Job config whose train step to time instead.")
_MODE = flags.DEFINE_string("mode", None, "With --config: stage1 / stage2 / pretrain (default: the config's).")
_ROUNDS = flags.DEFINE_integer("rounds", 10, "With --config: rounds of the two steps taking turns.")
_STEPS = flags.DEFINE_integer("steps", 3, "With --config: steps of each per round.")

RATE = 0.1
# (name, map shape (B, H, W, C))
MAPS = [
    ("UNet 64x64, bench_tiny B=4", (4, 64, 64, 64)),
    ("UNet 32x32, bench_small B=8", (8, 32, 32, 128)),
    ("UNet 16x16, demo B=16", (16, 16, 16, 64)),
    ("UNet 8x8, demo B=16", (16, 8, 8, 64)),
]
MASKS = {"jax_random_bernoulli": jax.random.bernoulli, "keep_mask": dropout.keep_mask}


def dropout_alone(shape: tuple[int, ...], draw_mask, rng: np.random.Generator):
  """An argument-free call: dropout of a random map at `shape` with its mask from draw_mask(key, keep, shape)."""
  x = jnp.asarray(rng.standard_normal(shape, dtype=np.float32))
  key = jax.random.key_data(jax.random.key(int(rng.integers(2**31))))
  apply = jax.jit(lambda x: jax.lax.select(draw_mask(key, 1.0 - RATE, x.shape), x / (1.0 - RATE), jnp.zeros_like(x)))
  return lambda: apply(x)


def out_path_gradient(shape: tuple[int, ...], draw_mask, rng: np.random.Generator):
  """An argument-free call: gradients of the out path at `shape` with masks from draw_mask(key, keep, shape)."""
  channels = shape[-1]
  graph, params = nnx.split((layers.GroupNorm32(channels, swish=False, dtype=jnp.float32),
                             layers.Conv2d(channels, channels, 3, dtype=jnp.float32, rngs=nnx.Rngs(0))))
  x = jnp.asarray(rng.standard_normal(shape, dtype=np.float32))
  scale, shift = (jnp.asarray(0.1 * rng.standard_normal((shape[0], channels), dtype=np.float32)) for _ in range(2))
  key = jax.random.key_data(jax.random.key(int(rng.integers(2**31))))

  def loss(params, x):
    norm, conv = nnx.merge(graph, params)
    h = norm.modulated_silu(x, scale, shift)
    keep = draw_mask(key, 1.0 - RATE, h.shape)
    h = jax.lax.select(keep, h / (1.0 - RATE), jnp.zeros_like(h))
    return jnp.sum(conv(h) ** 2)

  gradient = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return lambda: gradient(params, x)


def train_steps(config, mode: str | None, rounds: int, steps: int) -> dict:
  """Median step ms and CPU seconds of the job's train step with each mask source, steps taking turns."""
  builds = {"keep_mask": common.build_step(config, mode)}
  with target.traced_with(dropout, "keep_mask", MASKS["jax_random_bernoulli"]):
    builds["jax_random_bernoulli"] = common.build_step(config, mode)
  hashes = {source: build.compiled.as_text().count(" xor(") for source, build in builds.items()}
  if hashes["keep_mask"] <= hashes["jax_random_bernoulli"]:
    raise RuntimeError(f"the two builds do not differ in their mask hash (xor ops: {hashes})")
  return common.steps_in_turns(config, mode, builds, rounds, steps)


def main(argv):
  del argv
  if _CONFIG.value is not None:
    print(json.dumps(train_steps(_CONFIG.value, _MODE.value, _ROUNDS.value, _STEPS.value)))
    return
  programs = {"dropout": dropout_alone, "out_path_gradient": out_path_gradient}
  calls = {(name, program, source): build(shape, draw_mask, np.random.default_rng(0))
           for name, shape in MAPS for program, build in programs.items() for source, draw_mask in MASKS.items()}
  lines = common.variants_in_turns(calls, _REPEATS.value)
  for name, shape in MAPS:
    print(json.dumps({"map": name, "shape": shape, "dropout": RATE, "device": jax.devices()[0].platform,
                      "repeats": _REPEATS.value, **lines[name]}))

if __name__ == "__main__":
  app.run(main)
