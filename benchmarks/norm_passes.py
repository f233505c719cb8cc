"""A norm's forward pass, and forward + backward, layer by layer at the models' map sizes.

  python benchmarks/norm_passes.py [--repeats 25]

`layers.normalize_affine` (GroupNorm32 with SiLU and a per-sample affine as in the UNet's
ResBlocks; InstanceNorm with LeakyReLU as in the task encoder), jitted as the forward pass alone
and as the pullback of the input, scale and bias (which includes the statistics). One JSON line
per layer: median ms of --repeats runs and their spreads, the programs taking turns. Run it at
two commits to compare versions (docs/performance.md section 20). Runs on the default JAX device.
"""

import functools
import json

import piti_jax  # noqa: F401  (sets the project's XLA:CPU flags before JAX starts)
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from piti_jax.models import layers

import common
import timing

_REPEATS = flags.DEFINE_integer("repeats", 25, "Timed runs per program; the median is reported.")

# (name, map shape (B, H, W, C), groups, activation, per-sample affine)
LAYERS = [
    ("encoder level 1, bench_tiny B=4", (4, 256, 256, 32), 32, "leaky_relu", False),
    ("encoder level 2, bench_tiny B=4", (4, 128, 128, 64), 64, "leaky_relu", False),
    ("encoder level 2, demo B=16", (16, 32, 32, 32), 32, "leaky_relu", False),
    ("UNet 64x64, bench_tiny B=4", (4, 64, 64, 64), 32, "silu", True),
    ("UNet 32x32, bench_tiny B=4", (4, 32, 32, 64), 32, "silu", True),
    ("UNet 32x32, bench_small B=8", (8, 32, 32, 128), 32, "silu", True),
    ("UNet 16x16, demo B=16", (16, 16, 16, 64), 32, "silu", True),
]


def layer_calls(shape, groups: int, activation: str, per_sample: bool, rng: np.random.Generator) -> dict:
  """"forward" and "forward_and_backward": argument-free calls of the jitted norm at one layer's shapes."""
  affine_shape = (shape[0], shape[-1]) if per_sample else (shape[-1],)
  x, grad = (jnp.asarray(rng.standard_normal(shape, dtype=np.float32)) for _ in range(2))
  scale, bias = (jnp.asarray(rng.standard_normal(affine_shape, dtype=np.float32)) for _ in range(2))
  norm = functools.partial(layers.normalize_affine, groups=groups, activation=activation)
  backward = jax.jit(lambda x, s, b, g: jax.vjp(norm, x, s, b)[1](g))
  return {"forward": functools.partial(jax.jit(norm), x, scale, bias),
          "forward_and_backward": functools.partial(backward, x, scale, bias, grad)}


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  calls = {name: layer_calls(shape, groups, activation, per_sample, rng)
           for name, shape, groups, activation, per_sample in LAYERS}
  programs = {(name, kind): call for name, kinds in calls.items() for kind, call in kinds.items()}
  for call in programs.values():
    jax.block_until_ready(call())  # compile
  times = timing.timed_in_turns(programs, _REPEATS.value)
  for name, shape, groups, activation, _ in LAYERS:
    print(json.dumps({"layer": name, "shape": shape, "groups": groups, "activation": activation,
                      "device": jax.devices()[0].platform, "repeats": _REPEATS.value,
                      **{f"{kind}_ms": common.median_ms(times[name, kind]) for kind in calls[name]},
                      **{f"{kind}_spread": common.spread(times[name, kind]) for kind in calls[name]}}))


if __name__ == "__main__":
  app.run(main)
