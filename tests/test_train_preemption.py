"""SIGTERM during a run: the loop saves the step it reached and exits with status 75 (subprocess)."""

import os
import re
import signal
import subprocess
import sys
import time

from piti_jax.errors import EXIT_PREEMPTED
from tests.train_helpers import REPO, read_until_step, subprocess_env

STOP_LINE = re.compile(r"preemption notice: saving step (\d+) and stopping")


def test_sigterm_leaves_a_checkpoint_of_the_step_it_stopped_at(tmp_path, compile_cache):
  workdir, data_dir = tmp_path / "run", tmp_path / "tfds"
  command = [
      sys.executable, "-m", "piti_jax.main", "--config=configs/shapes.py:pretrain", f"--workdir={workdir}",
      f"--config.data.data_dir={data_dir}", "--config.data.train_size=64", "--config.data.val_size=16",
      "--config.train.global_batch_size=8", "--config.train.num_steps=100000", "--config.train.save_every=100000",
      "--config.train.log_every=1", "--config.train.eval_every=0", "--config.train.sample_every=0",
  ]
  env = subprocess_env(8, compile_cache)
  process = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             text=True)
  try:
    read_until_step(process, 2, time.time() + 600)
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=300)
  finally:
    if process.poll() is None:
      process.kill()
  assert process.returncode == EXIT_PREEMPTED == 75, rest[-3000:]
  assert len([line for line in rest.splitlines() if line.startswith("piti-jax: preempted:")]) == 1, rest[-3000:]
  stopped = [int(m.group(1)) for m in STOP_LINE.finditer(rest)]
  assert len(stopped) == 1, rest[-3000:]
  saved = sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())
  assert saved == stopped and stopped[0] >= 2
  assert "process_0-of-1.json" in os.listdir(workdir / "checkpoints" / str(stopped[0]) / "data")
