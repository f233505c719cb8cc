"""kill -9 in the middle of an asynchronous save, a resume whose run turns non-finite, then a damaged
newest checkpoint (subprocesses).

One uninterrupted run (A) is killed while a checkpoint is being written. The next run (B) in the
same workdir removes the interrupted save, resumes from the newest complete checkpoint, and, with
a learning rate that makes its second step non-finite, stops without that step becoming a checkpoint.
A third run (C), after B's newest checkpoint has had an array file cut in half, warns with the step
and the file and resumes from the checkpoint before it. The runs keep their compiled programs in the
workdir (`python -m piti_jax.main`'s default); A starts from a copy of the session's compile cache (so
its train step is usually not compiled again), and C, which runs A's step, loads it from there.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from piti_jax.compilation_cache import LOADED_MESSAGE
from piti_jax.train import checkpoint
from tests.train_helpers import REPO, read_until_step, subprocess_env

RESUME_LINE = re.compile(r"resuming \S+ from step (\d+)")
DAMAGED_LINE = re.compile(r"checkpoint step (\d+) is damaged")
TMP = ".orbax-checkpoint-tmp"


def _command(workdir, data_dir, *overrides):
  return [sys.executable, "-m", "piti_jax.main", "--config=configs/shapes.py:pretrain", f"--workdir={workdir}",
          f"--config.data.data_dir={data_dir}", "--config.data.train_size=64", "--config.data.val_size=16",
          "--config.train.global_batch_size=8", "--config.train.save_every=1", "--config.train.log_every=1",
          "--config.train.eval_every=0", "--config.train.sample_every=0", "--config.train.keep_checkpoints=20",
          "--config.train.export=False", *overrides]


def _steps(directory):
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def test_kill_during_a_save_then_resume_and_nan_is_never_saved(tmp_path, compile_cache):
  workdir, data_dir = tmp_path / "run", tmp_path / "tfds"
  checkpoints = workdir / "checkpoints"
  cache = workdir / "compilation_cache"
  shutil.copytree(compile_cache, cache)
  env = subprocess_env(8, None)
  command = _command(workdir, data_dir, "--config.train.num_steps=100000")
  first = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE,  # pylint: disable=R1732
                           stdout=subprocess.DEVNULL, text=True)
  deadline = time.time() + 600
  interrupted = []
  try:
    read_until_step(first, 3, deadline)
    while not interrupted and time.time() < deadline:  # a save is under way: kill now
      interrupted = [d for d in os.listdir(checkpoints) if TMP in d]
      if not interrupted:
        time.sleep(0.005)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
  finally:
    if first.poll() is None:
      first.kill()
  assert interrupted, "no save was caught in progress"
  complete = _steps(checkpoints)
  assert complete and any(TMP in d for d in os.listdir(checkpoints))
  newest = complete[-1]

  # lr 1e30: the first resumed step is finite, the update makes the next one non-finite.
  resume = _command(workdir, data_dir, f"--config.train.num_steps={newest + 5}", "--config.optim.lr=1e30")
  second = subprocess.run(resume, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
  log = second.stderr
  assert [int(m) for m in RESUME_LINE.findall(log)] == [newest], log[-3000:]
  assert not any(TMP in d for d in os.listdir(checkpoints)), os.listdir(checkpoints)
  assert second.returncode == 2, log[-3000:]
  errors = [line for line in log.splitlines() if line.startswith("piti-jax: error: non-finite loss at step")]
  assert len(errors) == 1, log[-3000:]
  bad_step = int(re.search(r"at step (\d+)", errors[0]).group(1))
  assert bad_step > newest
  saved = _steps(checkpoints)
  assert saved[-1] == bad_step and f"still the last good one (step {bad_step})" in errors[0]
  params = checkpoint.load_trained_tree(str(workdir), "params")
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params))

  # Run C: the newest checkpoint loses half of its largest array file.
  array_files = [os.path.join(root, name) for root, _, names in os.walk(checkpoints / str(saved[-1]) / "state")
                 for name in names if os.sep + "d" + os.sep in os.path.join(root, name)]
  damaged = max(array_files, key=os.path.getsize)
  with open(damaged, "r+b") as f:
    f.truncate(os.path.getsize(damaged) // 2)
  third = subprocess.run(_command(workdir, data_dir, f"--config.train.num_steps={saved[-1] + 1}"), cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=600, check=False)
  log = third.stderr
  assert third.returncode == 0, log[-3000:]
  assert LOADED_MESSAGE in log and any(name.startswith("jit_train_step-") for name in os.listdir(cache)), log[-3000:]
  warnings = [line for line in log.splitlines() if DAMAGED_LINE.search(line)]
  assert len(warnings) == 1 and f"step {saved[-1]} is damaged" in warnings[0], log[-3000:]
  assert os.path.basename(damaged) in warnings[0], warnings[0]
  assert [int(m) for m in RESUME_LINE.findall(log)] == [saved[-2]], log[-3000:]
