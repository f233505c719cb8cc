"""Two JAX processes on 127.0.0.1 (4 fake CPU devices each) train the same global model."""

import os
import re
import socket
import subprocess
import sys

from tests.train_helpers import REPO, shapes_config

LOSS_LINE = re.compile(r"\[3\] .*?\bloss=([-+0-9.e]+)")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_train_in_lockstep(tmp_path):
  from piti_jax.data.datasets import prepare_dataset

  data_dir = str(tmp_path / "tfds")
  prepare_dataset(shapes_config("pretrain", data_dir).data)  # once, before both processes read it
  workdir = tmp_path / "run"
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
  processes = []
  for index in range(2):
    command = [
        sys.executable, "-m", "piti_jax.main", "--config=configs/shapes.py:pretrain", f"--workdir={workdir}",
        f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={index}",
        f"--config.data.data_dir={data_dir}", "--config.data.train_size=64", "--config.data.val_size=16",
        "--config.train.global_batch_size=8", "--config.train.num_steps=3", "--config.train.save_every=3",
        "--config.train.log_every=1", "--config.train.eval_every=0", "--config.train.sample_every=0",
        "--config.mesh.fsdp=2",
    ]
    processes.append(subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE,
                                      stdout=subprocess.DEVNULL, text=True))
  logs = []
  try:
    for process in processes:
      logs.append(process.communicate(timeout=600)[1])
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
  for process, log in zip(processes, logs):
    assert process.returncode == 0, log[-3000:]
  losses = [LOSS_LINE.search(log) for log in logs]
  assert all(losses), [log[-2000:] for log in logs]
  assert losses[0].group(1) == losses[1].group(1)
  data_files = sorted(os.listdir(workdir / "checkpoints" / "3" / "data"))
  assert {"process_0-of-2.json", "process_1-of-2.json"} <= set(data_files)
