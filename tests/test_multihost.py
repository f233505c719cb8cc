"""Two JAX processes on 127.0.0.1 (2 fake CPU devices each) train one global model; one process with
4 devices then restores their checkpoint with the same values."""

import os
import re
import socket
import subprocess
import sys

from tests.train_helpers import REPO, shapes_config, subprocess_env

LOSS_LINE = re.compile(r"\[3\] .*?\bloss=([-+0-9.e]+)")

# Run in a fresh process with 4 devices: restore step 3 onto a data=4 mesh and compare its EMA with the export
# that the two processes wrote from memory, and its parameters with a host read of the checkpoint.
RESTORE = """
import json, sys
import jax, numpy as np
from piti_jax.models import checkpoint as model_checkpoint
from piti_jax.param_paths import flatten
from piti_jax.train import checkpoint, loop, partition
from piti_jax.train.config import load_config_file
workdir, data_dir = sys.argv[1:3]
config = load_config_file("configs/shapes.py", "pretrain")
config.data.data_dir, config.data.train_size, config.data.val_size = data_dir, 64, 16
config.train.global_batch_size = 8
mesh = partition.make_mesh(4, 1)
with jax.set_mesh(mesh):
  trainer = loop.Trainer(config, mesh)
  iterator, _ = loop._data_iterators(config)
  saver = checkpoint.Checkpointer(workdir)
  state = saver.restore(3, trainer.abstract_sharded_state(), iterator, global_batch_size=8)
  saver.close()
assert jax.process_count() == 1 and jax.device_count() == 4
ema = flatten(jax.device_get(loop.merge_trees(state.ema["0.99"], state.frozen)))
exported = flatten(model_checkpoint.load_params(workdir + "/export/ema_0.99"))
assert ema.keys() == exported.keys() and ema
for name, value in ema.items():
  np.testing.assert_array_equal(value, exported[name], err_msg=name)
host = flatten(checkpoint.load_trained_tree(workdir, "params"))
for name, value in flatten(jax.device_get(state.params)).items():
  np.testing.assert_array_equal(value, host[name], err_msg=name)
assert json.loads(iterator.get_state()) == json.loads(checkpoint.position_after(iterator, 3, 8))
print("RESTORED", len(ema))
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_train_in_lockstep_and_one_process_restores_their_checkpoint(tmp_path, compile_cache):
  from piti_jax.data.datasets import prepare_dataset

  data_dir = str(tmp_path / "tfds")
  prepare_dataset(shapes_config("pretrain", data_dir).data)  # once, before both processes read it
  workdir = tmp_path / "run"
  port = _free_port()
  env = subprocess_env(2, compile_cache)
  processes = []
  for index in range(2):
    command = [
        sys.executable, "-m", "piti_jax.main", "--config=configs/shapes.py:pretrain", f"--workdir={workdir}",
        f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={index}",
        f"--config.data.data_dir={data_dir}", "--config.data.train_size=64", "--config.data.val_size=16",
        "--config.train.global_batch_size=8", "--config.train.num_steps=3", "--config.train.save_every=3",
        "--config.train.log_every=1", "--config.train.eval_every=0", "--config.train.sample_every=0",
        "--config.mesh.fsdp=2", "--config.train.export=True",
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

  single = subprocess.run([sys.executable, "-c", RESTORE, str(workdir), data_dir], cwd=REPO, capture_output=True,
                          text=True, timeout=600, check=False,
                          env=dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=4"))
  assert single.returncode == 0 and "RESTORED" in single.stdout, single.stderr[-3000:]
