"""A change to the attention layer on a CPU, timed against the form it replaced, in one process.

  python benchmarks/attention_forms.py --change=row_max [--repeats 25]
  python benchmarks/attention_forms.py --change=slice_groups [--repeats 25]
  python benchmarks/attention_forms.py --change=slice_groups --config=configs/bench.py:small \
      --config.train.global_batch_size=8 --mode=stage2

Each change swaps one of `layers`' forms back to what it replaced (`target.traced_with`):
- row_max (docs/performance.md section 31): the softmax's row maximum as XLA's one reduction
  ("one_reduction") against `layers.max_over_last_axis`'s two stages ("staged"). Programs per shape:
  the row maximum of random float32 logits (B, heads, T, S) alone, and the attention forward pass.
- slice_groups (section 32): the attention forward pass over all (batch, head) slices at once
  ("all_slices", `layers.attention_slice_groups` fixed at 1) against groups of slices one after the
  other as the project runs it ("slice_groups"). Programs per shape: the attention forward pass, and
  its gradients with respect to q, k and v (the forward pass and the backward pass, which is the same
  in both forms).
Per attention shape (the bench models', and the demo upsampler's at its evaluation batch; q (B, T, heads, d)
against S keys), every program in both forms
takes turns, in a process restarted with glibc's huge-page malloc as the project's entry points run
(piti_jax/huge_pages.py). One JSON line per shape: median ms of --repeats runs per program and form,
their spreads, and whether the two forms' outputs are bitwise equal. Runs on the default JAX device
(off a CPU both forms are the same program).

With --config, the whole train step of that job instead: compiled twice in this process, once as
the project runs it and once with the replaced form, then timed in --rounds rounds of --steps steps
taking turns (`common.steps_in_turns`). One JSON line: median step ms, spread and CPU seconds of each.
"""

import json

import piti_jax  # noqa: F401  (sets the project's XLA:CPU flags before JAX starts)
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from piti_jax import huge_pages
from piti_jax.models import layers, target

import common

_CHANGE = flags.DEFINE_enum("change", None, ["row_max", "slice_groups"], "Which change to time.", required=True)
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
    ("demo upsampler 16x16 attention, evaluation batch 64", (64, 256, 2, 32), 272),
]


def one_reduction(x: jax.Array) -> jax.Array:
  """XLA's own maximum over the last axis, kept as a length-1 axis."""
  return x.max(axis=-1, keepdims=True)


def all_slices(q_shape: tuple[int, ...], keys: int) -> int:
  """One group: every (batch, head) slice at once, as the forward pass ran before section 32."""
  del q_shape, keys
  return 1


# change -> (the `layers` attribute swapped, {form: value}), the replaced form first.
CHANGES = {
    "row_max": ("max_over_last_axis", {"one_reduction": one_reduction, "staged": layers.max_over_last_axis}),
    "slice_groups": ("attention_slice_groups",
                     {"all_slices": all_slices, "slice_groups": layers.attention_slice_groups}),
}


def shape_calls(change: str, q_shape: tuple[int, ...], keys: int, rng: np.random.Generator) -> dict:
  """Argument-free, compiled calls {program: call} of the change's programs for one shape, in the form
  currently in `layers`."""
  batch, rows, heads, width = q_shape
  q, k, v, out_grad = (jnp.asarray(rng.standard_normal(shape, dtype=np.float32))
                       for shape in (q_shape, (batch, keys, heads, width), (batch, keys, heads, width), q_shape))
  forward = jax.jit(layers.qkv_attention).lower(q, k, v).compile()
  calls = {"attention_forward": lambda: forward(q, k, v)}
  if change == "row_max":
    logits = jnp.asarray(rng.standard_normal((batch, heads, rows, keys), dtype=np.float32) * 4)
    row_max = jax.jit(lambda x: layers.max_over_last_axis(x)).lower(logits).compile()
    calls["row_max"] = lambda: row_max(logits)
  else:
    loss = lambda q, k, v: (layers.qkv_attention(q, k, v) * out_grad).sum()
    gradients = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, k, v).compile()
    calls["attention_gradients"] = lambda: gradients(q, k, v)
  return calls


def train_steps(change: str, config, mode: str | None, rounds: int, steps: int) -> dict:
  """Median step ms, spread and CPU seconds of the job's train step with each form, steps taking turns."""
  name, forms = CHANGES[change]
  builds = {}
  for form, value in forms.items():
    with target.traced_with(layers, name, value):
      builds[form] = common.build_step(config, mode)
  return common.steps_in_turns(config, mode, builds, rounds, steps)


def main(argv):
  del argv
  huge_pages.reexec_with_huge_pages()  # as `python -m piti_jax.main` runs
  change = _CHANGE.value
  if _CONFIG.value is not None:
    line = train_steps(change, _CONFIG.value, _MODE.value, _ROUNDS.value, _STEPS.value)
    print(json.dumps({"change": change, **line, "malloc_huge_pages": huge_pages.active()}))
    return
  name, forms = CHANGES[change]
  calls = {}
  for shape, q_shape, keys in SHAPES:
    for form, value in forms.items():
      with target.traced_with(layers, name, value):
        for program, call in shape_calls(change, q_shape, keys, np.random.default_rng(0)).items():
          calls[shape, program, form] = call
  lines = common.variants_in_turns(calls, _REPEATS.value)
  for shape, q_shape, keys in SHAPES:
    print(json.dumps({"change": change, "shape": shape, "q": q_shape, "keys": keys,
                      "device": jax.devices()[0].platform, "repeats": _REPEATS.value,
                      "malloc_huge_pages": huge_pages.active(), **lines[shape]}))


if __name__ == "__main__":
  app.run(main)
