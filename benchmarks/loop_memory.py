"""Resident memory of the train loop while it trains, with and without releasing JAX's caches.

  python benchmarks/loop_memory.py --config=configs/bench.py:tiny --config.train.global_batch_size=4 --steps=8 --rounds=2
  python benchmarks/loop_memory.py --config=configs/shapes.py:stage2 --config.data.image_size=16 \
      --config.model.overrides.image_size=16 --steps=20

Each round runs the loop (`piti_jax.train.loop.train`) in two fresh processes, one after the other:
`keep` (the compiled step stays shared through JAX's caches, as in tests and the demo) and
`release` (`release_caches=True`: the step compiled ahead of time, then every JAX cache emptied,
as `python -m piti_jax.main` runs). Each process starts like `python -m piti_jax.main` (huge pages
for malloc, the compilation cache in its fresh workdir) with evaluation, sample grids and the
export off, no `init` entries (random weights: the same memory) and one checkpoint at the end. At the first logged step after --settle steps it hands
freed heap back and restarts the peak counter (`rss.reset_peak()`); at the last step, before the
final save, it reads the peak of the steps in between. One JSON line per process: `caches`
(keep / release), `train_peak_rss_mib` (that peak), `train_rss_mib` (RSS after the last step),
`process_peak_rss_mib` (since the start: the compile usually sets it), `step_ms` (mean wall time
of the measured steps, metrics logging included). `shapes` data is generated in a temporary
folder first; other datasets are read from data.data_dir.
"""

import json
import os
import sys
import tempfile
import time

from absl import app, flags
from ml_collections import config_flags

import child_process
import rss
from piti_jax import huge_pages

_CONFIG = config_flags.DEFINE_config_file("config", "configs/bench.py:tiny", "Job config to run.")
_STEPS = flags.DEFINE_integer("steps", 8, "Steps each run trains.")
_SETTLE = flags.DEFINE_integer("settle", 2, "Steps before the measured ones (compile, first step, allocator warm-up).")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Rounds of (keep, release) processes.")
_CHILD = flags.DEFINE_enum("child", None, ["keep", "release"], "Internal: run one loop in this process.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Internal: the child's workdir.")


def run_loop(release: bool, workdir: str) -> dict:
  """Trains --steps steps of --config in `workdir`; the memory and time of steps settle+1..steps."""
  from piti_jax import compilation_cache  # pylint: disable=import-outside-toplevel
  from piti_jax.train import loop  # pylint: disable=import-outside-toplevel

  config = _CONFIG.value
  config.train.num_steps = _STEPS.value
  config.train.log_every = 1
  config.train.save_every = _STEPS.value
  config.train.eval_every = config.train.sample_every = 0
  config.train.export = False
  config.init = {}
  compilation_cache.enable(workdir)
  marks = {}

  def on_metrics(step: int, _values: dict[str, float]) -> None:
    if step == _SETTLE.value:
      rss.reset_peak()
      marks["start"] = time.perf_counter()
    elif step == _STEPS.value:
      marks.update(end=time.perf_counter(), peak=rss.peak_mib(), current=rss.current_mib())

  loop.train(config, workdir, on_metrics=on_metrics, release_caches=release)
  return {"train_peak_rss_mib": round(marks["peak"]), "train_rss_mib": round(marks["current"]),
          "process_peak_rss_mib": round(rss.process_peak_mib()),
          "step_ms": round((marks["end"] - marks["start"]) / (_STEPS.value - _SETTLE.value) * 1e3, 1)}


def main(argv) -> None:
  del argv
  if _STEPS.value <= _SETTLE.value:
    raise app.UsageError(f"--steps={_STEPS.value} must exceed --settle={_SETTLE.value}.")
  if _CHILD.value:
    huge_pages.reexec_with_huge_pages()  # as `python -m piti_jax.main` runs
    result = run_loop(_CHILD.value == "release", _WORKDIR.value)
    print(json.dumps(dict(caches=_CHILD.value, malloc_huge_pages=huge_pages.active(), **result)), flush=True)
    return
  config = _CONFIG.value
  with tempfile.TemporaryDirectory() as root:
    data_flags = [f"--config.data.data_dir={root}/tfds"] if config.data.name == "shapes" else []
    for round_index in range(_ROUNDS.value):
      for caches in ("keep", "release"):
        workdir = os.path.join(root, f"{caches}_{round_index}")
        command = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], *data_flags, f"--child={caches}",
                   f"--workdir={workdir}"]
        line = child_process.run_json(command, f"the {caches} run of round {round_index}")
        print(json.dumps(dict(command="python benchmarks/loop_memory.py " + " ".join(sys.argv[1:]),
                              round=round_index, steps=_STEPS.value, settle=_SETTLE.value, **line)), flush=True)


if __name__ == "__main__":
  app.run(main)
