"""Checkpoint recovery without a model: damaged steps, leftovers, the data position, full disks, the lock.

Real orbax checkpoints of a small state and a real grain iterator; nothing here compiles a step.
"""

import json
import logging
import os
import socket
import subprocess
import sys
import time

import grain.python as grain
import jax
import numpy as np
import pytest

from piti_jax import storage
from piti_jax.errors import PitiError
from piti_jax.train import checkpoint
from piti_jax.workdir_lock import LOCK_FILE, STALE_S, WorkdirLock
from tests.train_helpers import REPO, run_on_tmpfs

BATCH = 4


def _iterator(shard_index: int = 0, shard_count: int = 1, workers: int = 0):
  """A grain DataLoader iterator over the records 0..63 in shuffled batches of BATCH."""
  sampler = grain.IndexSampler(num_records=64, shard_options=grain.ShardOptions(shard_index, shard_count, True),
                               shuffle=True, num_epochs=None, seed=3)
  loader = grain.DataLoader(data_source=grain.RangeDataSource(0, 64, 1), sampler=sampler,
                            operations=[grain.Batch(BATCH, drop_remainder=True)], worker_count=workers)
  return iter(loader)


def _state(step: int, size: int = 1000) -> dict:
  """float32 (size,) random values (incompressible), the first one equal to `step`."""
  values = np.random.default_rng(step).standard_normal(size).astype(np.float32)
  values[0] = step
  return {"params": {"w": jax.numpy.asarray(values)}, "step": jax.numpy.int32(step)}


def _save_steps(workdir, steps, size=1000):
  """Checkpoints `steps` of a run; returns the iterator (advanced one batch per step)."""
  saver = checkpoint.Checkpointer(str(workdir), keep=10)
  iterator = _iterator()
  for step in steps:
    next(iterator)
    saver.save(step, _state(step, size), iterator, global_batch_size=BATCH)
  saver.wait()
  saver.close()
  return iterator


def _restore_latest(workdir, caplog, batch=BATCH):
  reader = checkpoint.Checkpointer(str(workdir), keep=10)
  iterator = _iterator()
  with caplog.at_level(logging.WARNING):
    restored = reader.restore_latest(jax.eval_shape(lambda: _state(0)), iterator, global_batch_size=batch)
  reader.close()
  return restored, iterator


def _largest_array_file(step_dir):
  files = [os.path.join(root, f) for root, _, names in os.walk(step_dir / "state") for f in names
           if os.sep + "d" + os.sep in os.path.join(root, f)]
  return max(files, key=os.path.getsize)


def _truncate(step_dir):
  path = _largest_array_file(step_dir)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  return os.path.relpath(path, step_dir)


def _remove(relative):
  def damage(step_dir):
    os.remove(step_dir / relative)
    return relative
  return damage


def _empty(step_dir):
  for entry in os.listdir(step_dir):
    storage.remove_tree(step_dir / entry)
  return str(step_dir)


@pytest.mark.parametrize("damage", [_truncate, _remove("state/_METADATA"), _remove("data/process_0-of-1.json"),
                                    _empty], ids=["truncated_array", "no_metadata", "no_data_file", "empty_step"])
def test_damaged_newest_checkpoint_is_reported_and_the_previous_one_restored(tmp_path, caplog, damage):
  expected_iterator = _save_steps(tmp_path, [1, 2])
  damaged = damage(tmp_path / "checkpoints" / "2")
  (state, step), iterator = _restore_latest(tmp_path, caplog)
  assert step == 1 and float(state["params"]["w"][0]) == 1.0
  warnings = [r.getMessage() for r in caplog.records if "checkpoint step 2 is damaged" in r.getMessage()]
  assert len(warnings) == 1 and damaged.split(os.sep)[-1] in warnings[0], caplog.text
  del expected_iterator
  reference = _iterator()
  next(reference)
  assert iterator.get_state() == reference.get_state()  # the data position of step 1
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2.damaged"]  # step 2 can be saved again


def test_no_usable_checkpoint_stops_naming_every_step_and_file(tmp_path, caplog):
  _save_steps(tmp_path, [1, 2])
  os.remove(tmp_path / "checkpoints" / "1" / "state" / "_METADATA")
  relative = _truncate(tmp_path / "checkpoints" / "2")
  with pytest.raises(PitiError, match=r"no usable checkpoint .*step 2: .*" + os.path.basename(relative) +
                     r".* truncated .*step 1: .*_METADATA is missing"):
    _restore_latest(tmp_path, caplog)


def test_changed_global_batch_size_is_refused(tmp_path, caplog):
  _save_steps(tmp_path, [1])
  with pytest.raises(PitiError, match=r"written with train.global_batch_size=4, but this run has 8"):
    _restore_latest(tmp_path, caplog, batch=8)


def test_interrupted_save_is_cleaned_up_on_the_next_start(tmp_path):
  _save_steps(tmp_path, [1])
  leftover = tmp_path / "checkpoints" / "2.orbax-checkpoint-tmp-1733130000"
  (leftover / "state").mkdir(parents=True)
  (leftover / "state" / "partial").write_bytes(b"x" * 100)
  saver = checkpoint.Checkpointer(str(tmp_path), keep=10)
  saver.close()
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]


def test_data_position_from_the_step_matches_the_iterator():
  """The position used when the process count changed equals the one the iterator itself reports.

  (Also true with grain worker processes, workers=2; not in the suite: spawning them takes a minute.)
  """
  workers = 0
  for shard_index in (0, 1):
    moved = _iterator(shard_index, 2, workers)
    for _ in range(5):
      next(moved)
    fresh = _iterator(shard_index, 2, workers)
    assert json.loads(checkpoint.position_after(fresh, 5, BATCH)) == json.loads(moved.get_state())
    fresh.set_state(checkpoint.position_after(fresh, 5, BATCH))
    np.testing.assert_array_equal(next(fresh), next(moved))


def small_disk_scenarios(disk: str) -> dict:
  """Runs on a 2 MiB disk mounted at `disk` (in a subprocess, see `small_disk`): in <disk>/checked a 4 kB
  checkpoint, then a 4 MB one that the free-space check refuses; in <disk>/writing the same, with the check
  bypassed so that the asynchronous write itself meets the full disk (a real ENOSPC). Returns per scenario
  the error message, the checkpoint folders left and the step and first weight that a restart restores."""
  results = {}
  for name in ("checked", "writing"):
    workdir = os.path.join(disk, name)
    saver = checkpoint.Checkpointer(workdir, keep=10)
    iterator = _iterator()
    saver.save(1, _state(1, 1000), iterator, global_batch_size=BATCH)  # 4 kB
    saver.wait()
    measured_free_bytes = storage.free_bytes
    if name == "writing":
      storage.free_bytes = lambda _: 2**40
    message = None
    try:
      saver.save(2, _state(2, 1_000_000), iterator, global_batch_size=BATCH)  # 4 MB
      saver.wait()
    except PitiError as error:
      message = str(error)
    finally:
      storage.free_bytes = measured_free_bytes
    saver.close()
    reader = checkpoint.Checkpointer(workdir, keep=10)
    state, step = reader.restore_latest(jax.eval_shape(lambda: _state(0)), _iterator(), global_batch_size=BATCH)
    reader.close()
    results[name] = {"message": message, "left": sorted(os.listdir(os.path.join(workdir, "checkpoints"))),
                     "restored_step": int(step), "restored_w0": float(state["params"]["w"][0])}
  return results


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory):
  """small_disk_scenarios' results, from one subprocess that has a 2 MiB tmpfs of its own."""
  disk = tmp_path_factory.mktemp("small") / "disk"
  code = ("import json, sys; from tests.test_checkpoint_recovery import small_disk_scenarios; "
          "print(json.dumps(small_disk_scenarios(sys.argv[1])))")
  result = run_on_tmpfs(str(disk), "size=2m", [sys.executable, "-c", code, str(disk)], cwd=REPO,
                        capture_output=True, text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode == 0, result.stderr[-3000:]
  return disk, json.loads(result.stdout.strip().splitlines()[-1])


def test_full_disk_is_one_message_and_the_previous_checkpoint_stays(small_disk):
  disk, results = small_disk
  checked = results["checked"]
  message = checked["message"]
  assert message and "\n" not in message and f"{disk}/checked/checkpoints" in message, message
  assert "needs about 4 MiB" in message, message
  assert (checked["restored_step"], checked["restored_w0"]) == (1, 1.0)


def test_disk_filling_up_during_an_asynchronous_write_is_one_message_too(small_disk):
  _, results = small_disk
  writing = results["writing"]
  message = writing["message"]
  assert message and "\n" not in message and "no space to save checkpoint step 2" in message, message
  assert "needs about 4 MiB" in message, message
  assert writing["left"] == ["1"]
  assert (writing["restored_step"], writing["restored_w0"]) == (1, 1.0)


def test_workdir_that_is_a_file_or_under_a_file_is_refused(tmp_path):
  """(A read-only workdir: tests/test_cli_errors.py::test_read_only_workdir, through the command line.)"""
  file = tmp_path / "file"
  file.write_text("")
  with pytest.raises(PitiError, match=f"workdir {file} is a file"):
    storage.prepare_workdir(str(file), create=True)
  with pytest.raises(PitiError, match=f"workdir {file}/run lies under the file {file}"):
    storage.prepare_workdir(str(file / "run"), create=True)


def test_live_lock_refuses_and_stale_locks_do_not_block(tmp_path):
  sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # pylint: disable=R1732
  try:
    lock_path = tmp_path / LOCK_FILE
    lock_path.write_text(json.dumps({"host": socket.gethostname(), "pid": sleeper.pid, "heartbeat": 0.0}))
    with pytest.raises(PitiError, match=f"workdir {tmp_path} is in use by another run \\(process {sleeper.pid}"):
      WorkdirLock(str(tmp_path))
  finally:
    sleeper.kill()
    sleeper.wait()
  lock = WorkdirLock(str(tmp_path))  # the holder died: its lock is stale
  assert json.loads(lock_path.read_text())["pid"] == os.getpid()
  lock.release()
  assert not lock_path.exists()
  lock_path.write_text(json.dumps({"host": "another-host", "pid": 1, "heartbeat": time.time()}))
  with pytest.raises(PitiError, match="in use by another run"):
    WorkdirLock(str(tmp_path))
  lock_path.write_text(json.dumps({"host": "another-host", "pid": 1, "heartbeat": time.time() - STALE_S - 1}))
  WorkdirLock(str(tmp_path)).release()
