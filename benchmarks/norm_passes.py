"""A norm's forward pass, and forward + backward, layer by layer at the models' map sizes.

  python benchmarks/norm_passes.py [--repeats 25]

`layers.normalize_affine` (GroupNorm32 with SiLU and a per-sample affine as in the UNet's
ResBlocks; InstanceNorm with LeakyReLU as in the task encoder), jitted as the forward pass alone
and as the pullback of the input, scale and bias (which includes the statistics). One JSON line
per layer: median ms of --repeats runs, the programs taking turns. Run it at two commits to
compare versions (docs/performance.md section 20). Runs on the default JAX device.
"""

import json
import statistics
import time

import piti_jax  # noqa: F401  (sets the project's XLA:CPU flags before JAX starts)
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from piti_jax.models import layers

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


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  programs = []
  for name, shape, groups, activation, per_sample in LAYERS:
    affine_shape = (shape[0], shape[-1]) if per_sample else (shape[-1],)
    x, grad = (jnp.asarray(rng.standard_normal(shape, dtype=np.float32)) for _ in range(2))
    scale, bias = (jnp.asarray(rng.standard_normal(affine_shape, dtype=np.float32)) for _ in range(2))
    norm = lambda x, s, b, groups=groups, activation=activation: layers.normalize_affine(x, s, b, groups, activation)
    forward = jax.jit(norm)
    backward = jax.jit(lambda x, s, b, g, norm=norm: jax.vjp(norm, x, s, b)[1](g))
    programs.append((name, shape, groups, activation, [(forward, (x, scale, bias)), (backward, (x, scale, bias, grad))]))
  times = {name: ([], []) for name, *_ in programs}
  for _, _, _, _, fns in programs:
    for fn, args in fns:
      jax.block_until_ready(fn(*args))
  for _ in range(_REPEATS.value):
    for name, _, _, _, fns in programs:
      for (fn, args), record in zip(fns, times[name]):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        record.append(time.perf_counter() - start)
  for name, shape, groups, activation, _ in programs:
    forward_s, backward_s = times[name]
    print(json.dumps({"layer": name, "shape": shape, "groups": groups, "activation": activation,
                      "device": jax.devices()[0].platform, "repeats": _REPEATS.value,
                      "forward_ms": round(1e3 * statistics.median(forward_s), 3),
                      "forward_and_backward_ms": round(1e3 * statistics.median(backward_s), 3)}))


if __name__ == "__main__":
  app.run(main)
