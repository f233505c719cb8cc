"""Train-step throughput per mode: one JSON line each with images/s, step ms, FLOPs and peak fractions.

  python benchmarks/train_step.py --config=configs/bench.py:tiny --modes=stage1,stage2
  python benchmarks/train_step.py --config=configs/shapes.py:pretrain --modes=pretrain --steps=10

Modes set the trainable parameter set of the config: `stage1` trains the encoder only
(no decoder gradients, optimizer state or EMA), `stage2` and `pretrain` train everything;
without --modes the config's own trainable set is used. Batches are random arrays with the
data config's shapes, so no dataset is needed.

FLOP accounting on every line: `model_gflops_per_image` is 3 x the forward pass (the usual
training convention), `xla_gflops_per_image` what XLA counts in the compiled step (a CPU attention
layer's loops at every block: `common.step_xla_flops`); achieved rates use the median step
time. On a CPU `peak_fraction` is the XLA FLOP rate over this machine's float32 matmul peak as
the same JAX measures it (a 2048^2 matmul, timed right before); on a GPU/TPU `mfu` is the model
FLOP rate over the devices' bfloat16 peak.

Memory (Linux): `import_rss_mib` is the resident memory once the project is imported,
`step_peak_rss_mib` the peak of the timed steps alone (`rss.reset_peak` after the compile and
warm-up step), `peak_rss_mib` the process's peak so far (compiles included). Per step
(medians): `step_cpu_s` CPU seconds of all threads, `step_system_cpu_s` the kernel's part of
them, `step_page_faults` minor page faults. The script restarts itself with glibc's huge-page
malloc as `python -m piti_jax.main` does (`malloc_huge_pages`; piti_jax/huge_pages.py);
`GLIBC_TUNABLES=glibc.malloc.hugetlb=0` measures without. `--clear_caches` empties JAX's
caches of traced, lowered and compiled functions after the compile (the compiled step is kept),
which shows what those caches add to the steps' peak.
"""

import json
import statistics

import jax
from absl import app, flags
from ml_collections import config_flags

import common
import rss
from piti_jax import accounting, huge_pages

IMPORT_RSS_MIB = rss.current_mib()

_CONFIG = config_flags.DEFINE_config_file("config", "configs/bench.py:tiny", "Job config to benchmark.")
_MODES = flags.DEFINE_list("modes", [], "Modes: stage1 (encoder only), stage2/pretrain (all); empty = the config's.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per mode (after one warm-up step); the median is reported.")
_CLEAR_CACHES = flags.DEFINE_bool("clear_caches", False, "Empty JAX's function caches once the step is compiled.")


def benchmark(config, mode: str | None, steps: int, clear_caches: bool) -> dict:
  bench = common.build_step(config, mode, clear_caches=clear_caches)
  rss.reset_peak()
  costs = bench.run(steps)
  step_peak = rss.peak_mib()
  times = [cost.wall_s for cost in costs]
  peak = accounting.measured_matmul_peak() if jax.devices()[0].platform == "cpu" else None
  batch = bench.config.train.global_batch_size
  seconds = statistics.median(times)
  model_flops = 3.0 * common.forward_flops(bench.trainer, bench.batch)
  process_peak = rss.process_peak_mib()  # before step_xla_flops may compile once more
  count = lambda tree: int(sum(x.size for x in jax.tree.leaves(tree)))
  return {
      "mode": mode or bench.config.train.trainable or "all", "preset": bench.config.model.preset,
      "dtype": bench.config.model.dtype, "malloc_huge_pages": huge_pages.active(), "caches_cleared": clear_caches,
      "global_batch": batch,
      "devices": jax.device_count(), "mesh": dict(bench.mesh.shape), "step_ms": round(seconds * 1e3, 2),
      "step_spread": common.spread(times), "images_per_s": round(batch / seconds, 2),
      **accounting.rate_fields(model_flops=model_flops, xla_flops=common.step_xla_flops(bench),
                               seconds=seconds, items=batch, matmul_peak=peak),
      "step_cpu_s": round(statistics.median(cost.cpu_s for cost in costs), 3),
      "step_system_cpu_s": round(statistics.median(cost.system_s for cost in costs), 3),
      "step_page_faults": int(statistics.median(cost.page_faults for cost in costs)),
      "compile_s": round(bench.compile_s, 1), "peak_rss_mib": round(process_peak),
      "step_peak_rss_mib": round(step_peak), "import_rss_mib": round(IMPORT_RSS_MIB),
      "trained_params": count(bench.state.params), "frozen_params": count(bench.state.frozen),
      "optimizer_state_floats": count(bench.state.opt_state),
  }


def main(argv) -> None:
  del argv
  for mode in _MODES.value or [None]:
    if mode is not None and mode not in common.TRAINABLE:
      raise app.UsageError(f"unknown mode {mode!r}; use {', '.join(common.TRAINABLE)}")
    print(json.dumps(benchmark(_CONFIG.value, mode, _STEPS.value, _CLEAR_CACHES.value)), flush=True)


if __name__ == "__main__":
  huge_pages.reexec_with_huge_pages()  # as `python -m piti_jax.main` runs
  app.run(main)
