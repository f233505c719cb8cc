"""A resumed run with and without the workdir's compilation cache: wall time and peak RSS.

  python benchmarks/resume.py --config=configs/shapes.py:pretrain --steps=3 --rounds=2
  python benchmarks/resume.py --config=configs/bench.py:tiny --steps=2 \
      --flags=--config.train.global_batch_size=4

A first `python -m piti_jax.main` run trains --steps steps in a fresh workdir and saves them
(and, as every run does, keeps its compiled programs in <workdir>/compilation_cache). Each round
then copies that workdir twice and resumes each copy for --steps more steps: once with
`JAX_ENABLE_COMPILATION_CACHE=false` (every program compiled again, as before the cache) and once
as `python -m piti_jax.main` runs by default (programs loaded from the copied cache). One JSON line
per run: `cache` (cold = the first run, off, warm), the process's wall seconds from start to
exit, its peak RSS (`ru_maxrss` of the child) and how many programs it loaded from the cache
(its log lines). Evaluation, sample grids and the export are off, so the runs are start-up,
compile or load, and the steps. Data for `shapes` configs is generated in a temporary folder
first; other configs need their dataset in data.data_dir (pass it with --flags).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags

import common
from piti_jax.compilation_cache import LOADED_MESSAGE

_CONFIG = flags.DEFINE_string("config", "configs/shapes.py:pretrain", "Job config (configs/<job>.py:<job>).")
_STEPS = flags.DEFINE_integer("steps", 3, "Steps of the first run, and steps each resumed run adds.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Rounds of (cache off, cache warm) resumed runs.")
_FLAGS = flags.DEFINE_list("flags", [], "More flags for every run, e.g. --config.train.global_batch_size=4.")


def run_job(workdir: str, data_dir: str, num_steps: int, env: dict[str, str]) -> dict:
  """Runs `python -m piti_jax.main` to `num_steps`; its wall seconds, peak RSS and cache loads."""
  command = [sys.executable, "-m", "piti_jax.main", f"--config={_CONFIG.value}", f"--workdir={workdir}",
             f"--config.train.num_steps={num_steps}", f"--config.train.save_every={_STEPS.value}",
             "--config.train.eval_every=0", "--config.train.sample_every=0", "--config.train.export=False",
             *([f"--config.data.data_dir={data_dir}"] if data_dir else []), *_FLAGS.value]
  start = time.perf_counter()
  with tempfile.TemporaryFile("w+") as log:
    process = subprocess.Popen(command, cwd=common.REPO, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
    _, status, usage = os.wait4(process.pid, 0)  # Popen.wait would not return the child's own rusage
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen
    log.seek(0)
    text = log.read()
  if process.returncode != 0:
    raise SystemExit(f"{' '.join(command)} exited with {process.returncode}:\n{text[-3000:]}")
  return {"wall_s": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024),
          "programs_loaded": text.count(LOADED_MESSAGE)}


def main(argv) -> None:
  del argv
  env = dict(os.environ)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the workdir's cache, as `python -m piti_jax.main` keeps it
  steps = _STEPS.value
  with tempfile.TemporaryDirectory() as root:
    data_dir = os.path.join(root, "tfds") if _CONFIG.value.startswith("configs/shapes.py") else ""
    first = os.path.join(root, "first")
    print(json.dumps(dict(config=_CONFIG.value, flags=_FLAGS.value, steps=steps, cache="cold",
                          **run_job(first, data_dir, steps, env))), flush=True)
    for round_index in range(_ROUNDS.value):
      for cache, extra in (("off", {"JAX_ENABLE_COMPILATION_CACHE": "false"}), ("warm", {})):
        workdir = os.path.join(root, f"{cache}_{round_index}")
        shutil.copytree(first, workdir)
        result = run_job(workdir, data_dir, 2 * steps, dict(env, **extra))
        print(json.dumps(dict(config=_CONFIG.value, flags=_FLAGS.value, steps=steps, cache=cache,
                              round=round_index, **result)), flush=True)
        shutil.rmtree(workdir)


if __name__ == "__main__":
  app.run(main)
