"""The attention softmax's row maximum: XLA's one reduction against `layers.max_over_last_axis`'s stages.

  python benchmarks/attention_row_max.py [--repeats 25]
  python benchmarks/attention_row_max.py --config=configs/bench.py:small --config.train.global_batch_size=8 --mode=stage2

Per attention shape of the bench models (q (B, T, heads, d) against S keys), four programs: the
row maximum of random float32 logits (B, heads, T, S) alone and the attention forward pass
(`layers.qkv_attention`), each with the maximum taken by `x.max(-1, keepdims=True)` ("one_reduction")
and by `layers.max_over_last_axis` ("staged"; two stages on a CPU, docs/performance.md section 31).
All programs take turns, in a process restarted with glibc's huge-page malloc as the project's entry
points run (piti_jax/huge_pages.py). One JSON line per shape: median ms of --repeats runs per program and form,
their spreads, and whether the two forms' outputs are bitwise equal. Runs on the default JAX device
(off a CPU both forms are the same program).

With --config, the whole train step of that job instead: compiled twice in this process, once as
the project runs it and once with the one-reduction maximum in its place, then timed in --rounds
rounds of --steps steps taking turns (`common.steps_in_turns`). One JSON line: median step ms,
spread and CPU seconds of each.
"""

import json

import piti_jax  # noqa: F401  (sets the project's XLA:CPU flags before JAX starts)
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from piti_jax import huge_pages
from piti_jax.models import layers

import common

_REPEATS = flags.DEFINE_integer("repeats", 25, "Timed runs per program; the median is reported.")
_CONFIG = config_flags.DEFINE_config_file("config", None, "Job config whose train step to time instead.")
_MODE = flags.DEFINE_string("mode", None, "With --config: stage1 / stage2 / pretrain (default: the config's).")
_ROUNDS = flags.DEFINE_integer("rounds", 4, "With --config: rounds of the two steps taking turns.")
_STEPS = flags.DEFINE_integer("steps", 2, "With --config: steps of each per round.")

# (name, q shape (B, T, heads, d), keys S)
SHAPES = [
    ("bench_small UNet 32x32, B=8", (8, 1024, 2, 64), 1280),
    ("bench_small UNet 16x16, B=8", (8, 256, 3, 64), 512),
    ("bench_tiny UNet 16x16, guided sampler batch 8", (8, 256, 2, 32), 512),
    ("bench_small task encoder transformer, B=8", (8, 257, 4, 64), 257),
]


def one_reduction(x: jax.Array) -> jax.Array:
  """XLA's own maximum over the last axis, kept as a length-1 axis."""
  return x.max(axis=-1, keepdims=True)


FORMS = {"one_reduction": one_reduction, "staged": layers.max_over_last_axis}


def shape_calls(q_shape: tuple[int, ...], keys: int, form: str, rng: np.random.Generator) -> dict:
  """Argument-free, compiled calls {program: call} for one shape and form."""
  batch, rows, heads, width = q_shape
  logits = jnp.asarray(rng.standard_normal((batch, heads, rows, keys), dtype=np.float32) * 4)
  q, k, v = (jnp.asarray(rng.standard_normal(shape, dtype=np.float32))
             for shape in (q_shape, (batch, keys, heads, width), (batch, keys, heads, width)))

  def build():
    row_max = jax.jit(lambda x: layers.max_over_last_axis(x)).lower(logits).compile()
    forward = jax.jit(layers.qkv_attention).lower(q, k, v).compile()
    return {"row_max": lambda: row_max(logits), "attention_forward": lambda: forward(q, k, v)}

  with common.traced_with(layers, "max_over_last_axis", FORMS[form]):
    return build()


def train_steps(config, mode: str | None, rounds: int, steps: int) -> dict:
  """Median step ms, spread and CPU seconds of the job's train step with each form, steps taking turns."""
  builds = {}
  for form, row_max in FORMS.items():
    with common.traced_with(layers, "max_over_last_axis", row_max):
      builds[form] = common.build_step(config, mode)
  return common.steps_in_turns(config, mode, builds, rounds, steps)


def main(argv):
  del argv
  huge_pages.reexec_with_huge_pages()  # as `python -m piti_jax.main` runs
  if _CONFIG.value is not None:
    line = train_steps(_CONFIG.value, _MODE.value, _ROUNDS.value, _STEPS.value)
    print(json.dumps({**line, "malloc_huge_pages": huge_pages.active()}))
    return
  calls = {}
  for name, q_shape, keys in SHAPES:
    for form in FORMS:
      for program, call in shape_calls(q_shape, keys, form, np.random.default_rng(0)).items():
        calls[name, program, form] = call
  lines = common.variants_in_turns(calls, _REPEATS.value)
  for name, q_shape, keys in SHAPES:
    print(json.dumps({"shape": name, "q": q_shape, "keys": keys, "device": jax.devices()[0].platform,
                      "repeats": _REPEATS.value, "malloc_huge_pages": huge_pages.active(), **lines[name]}))

if __name__ == "__main__":
  app.run(main)
