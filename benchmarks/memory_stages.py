"""Resident memory of a train-step process at each stage of its start, after handing freed heap back.

  python benchmarks/memory_stages.py --config=configs/bench.py:tiny --config.train.global_batch_size=4 --mode=stage2
  heaptrack python benchmarks/memory_stages.py ... --stop_after=compiled   # what is live at that point

Builds the train step as `python -m piti_jax.main` does (`common.build_step(clear_caches=True)`)
and prints one JSON line with the RSS in MiB after each stage, each read after `rss.reset_peak()`
(glibc `malloc_trim`, so freed heap pages do not count): the imports with the JAX backend started,
the Trainer, the step lowered and compiled for the state's shapes, the compiled step after
`jax.clear_caches()` (JAX's caches of traced and lowered functions dropped), the initial state
(its init programs compiled, run and dropped), and per timed step the RSS before it and the peak
during it.
With --stop_after the process leaves right after that stage without freeing anything, so a
heap profiler sees what is live there. Runs with glibc's huge-page malloc as the project's
entry points do (piti_jax/huge_pages.py).
"""

import json
import os

import rss

STARTED_MIB = rss.current_mib()

from absl import app, flags  # noqa: E402  (the RSS above is the interpreter's alone)
from ml_collections import config_flags  # noqa: E402

import common  # noqa: E402
from piti_jax import huge_pages  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/bench.py:tiny", "Job config.")
_MODE = flags.DEFINE_string("mode", None, "stage1 / stage2 / pretrain (default: the config's trainable set).")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps after the stages.")
STAGES = ("backend", "trainer", "lowered", "compiled", "caches_cleared", "state")
_STOP_AFTER = flags.DEFINE_enum("stop_after", None, STAGES, "Leave right after this stage (for a heap profiler).")


def main(argv) -> None:
  del argv
  stages = {"interpreter": round(STARTED_MIB)}

  def reached(stage: str) -> None:
    rss.reset_peak()
    stages[stage] = round(rss.current_mib())
    if stage == _STOP_AFTER.value:
      print(json.dumps(stages), flush=True)
      os._exit(0)  # pylint: disable=protected-access  (nothing freed: the heap profile shows this point)

  bench = common.build_step(_CONFIG.value, _MODE.value, warm_up=False, clear_caches=True, on_stage=reached)
  steps = []
  for _ in range(_STEPS.value + 1):  # the first step warms up
    rss.reset_peak()
    before = rss.current_mib()
    bench.run(1)
    steps.append({"before": round(before), "peak": round(rss.peak_mib())})
  config = bench.config
  print(json.dumps({"preset": config.model.preset, "mode": _MODE.value, "global_batch": config.train.global_batch_size,
                    "malloc_huge_pages": huge_pages.active(), "rss_mib": stages, "steps": steps[1:]}), flush=True)


if __name__ == "__main__":
  huge_pages.reexec_with_huge_pages()
  app.run(main)
