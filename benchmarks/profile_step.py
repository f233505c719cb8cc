"""Where a train step spends its time: per-op timing from a jax.profiler trace, mapped to model code.

  python benchmarks/profile_step.py --config=configs/bench.py:tiny --mode=stage2 --steps=3
  python benchmarks/profile_step.py --config=configs/shapes.py:pretrain --top=25 --hlo_out=/tmp/step.hlo

The compiled step runs --steps times under `jax.profiler`; every XLA thunk (one HLO
instruction or fusion) it executed is summed per step and joined with the compiled HLO:
its kind (convolution, dot, reduce, elementwise, copy, ...), its FLOPs (convolutions and
dots, from the shapes), whether it belongs to the backward pass (a JAX `transpose(` in its
op name) and the model function that emitted it (the source line in its metadata, shown as
`file:function`). Prints one JSON line with the step time, the op time by kind, by source
function and by direction, and the slowest ops with their achieved GFLOP/s. Op times are
summed over threads, so they can add up to more than the wall time when XLA runs
independent ops concurrently. They can also add up to much less: on jaxlib 0.10 the traced
convolution thunks miss most of the convolutions' CPU time (the bench_tiny stage-2 step: 28 ms
of convolutions and 398 ms of ops in all, against 1.43 CPU-seconds per step and about 0.3 of
them in Eigen's convolution patch packing alone under `perf record`, which samples every
thread; docs/performance.md, section 13).
"""

import collections
import json
import os
import statistics
import tempfile

import jax
from absl import app, flags
from ml_collections import config_flags

import common
import hlo_trace
from piti_jax import huge_pages

_CONFIG = config_flags.DEFINE_config_file("config", "configs/bench.py:tiny", "Job config to profile.")
_MODE = flags.DEFINE_string("mode", None, "stage1 / stage2 / pretrain (default: the config's trainable set).")
_STEPS = flags.DEFINE_integer("steps", 3, "Traced steps (after one warm-up step).")
_TOP = flags.DEFINE_integer("top", 20, "How many of the slowest ops to list.")
_HLO_OUT = flags.DEFINE_string("hlo_out", "", "Also write the compiled step's HLO text to this file.")


def attribute(chain: list[tuple[str, str]]) -> tuple[str, str]:
  """(op source, block) of a stack chain: the innermost project function, and the innermost one
  outside the shared layers module (the block that called the layer), as `file.py:function`."""
  own = [(os.path.basename(f), fn) for f, fn in chain if f"{os.sep}piti_jax{os.sep}" in f]
  if not own:
    return "(outside piti_jax)", "(outside piti_jax)"
  blocks = [entry for entry in own if entry[0] != "layers.py"] or own
  return f"{own[0][0]}:{own[0][1]}", f"{blocks[0][0]}:{blocks[0][1]}"


def profile(config, mode: str | None, steps: int, top: int, hlo_out: str) -> dict:
  bench = common.build_step(config, mode)
  hlo = bench.compiled.as_text()
  if hlo_out:
    with open(hlo_out, "w") as f:
      f.write(hlo)
  by_name, computations = hlo_trace.parse_hlo(hlo)
  chains = hlo_trace.parse_stack_frames(hlo)
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    times = [cost.wall_s for cost in bench.run(steps)]
    jax.profiler.stop_trace()
    totals = hlo_trace.op_times(trace_dir)
  by_kind, by_source, by_block, by_direction = (collections.defaultdict(float) for _ in range(4))
  rows = []
  for name, ns in totals.items():
    ms = ns / 1e6 / steps
    instruction = by_name.get(name)
    if instruction is None:
      kind, flops, named, function, block, backward = "(not in HLO)", 0.0, None, "(unknown)", "(unknown)", False
    else:
      kind, flops, named = hlo_trace.classify(instruction, by_name, computations)
      function, block = attribute(chains.get(named.frame or instruction.frame, []))
      backward = "transpose(" in (named.op_name or instruction.op_name)
    by_kind[kind] += ms
    by_source[function] += ms
    by_block[block] += ms
    by_direction["backward" if backward else "forward/update"] += ms
    rows.append({"op": name, "kind": kind, "ms": round(ms, 2), "gflops_per_s": round(flops / ms / 1e6, 1) if flops else None,
                 "source": function, "block": block, "backward": backward,
                 "op_name": (named.op_name if named else "")[-120:]})
  rows.sort(key=lambda r: -r["ms"])
  ordered = lambda d: {k: round(v, 1) for k, v in sorted(d.items(), key=lambda kv: -kv[1])}
  return {
      "config": bench.config.model.preset, "mode": mode or bench.config.train.trainable or "all",
      "global_batch": bench.config.train.global_batch_size, "dtype": bench.config.model.dtype,
      "step_ms": round(statistics.median(times) * 1e3, 1), "op_ms": round(sum(by_kind.values()), 1),
      "by_kind_ms": ordered(by_kind), "by_direction_ms": ordered(by_direction),
      "by_source_ms": dict(list(ordered(by_source).items())[:20]),
      "by_block_ms": dict(list(ordered(by_block).items())[:20]), "top_ops": rows[:top],
  }


def main(argv) -> None:
  del argv
  print(json.dumps(profile(_CONFIG.value, _MODE.value, _STEPS.value, _TOP.value, _HLO_OUT.value)), flush=True)


if __name__ == "__main__":
  huge_pages.reexec_with_huge_pages()  # as `python -m piti_jax.main` runs
  app.run(main)
