"""The command-line failures of the error table: one line on stderr and a documented exit status.

Every case fails before a model is built, so each subprocess costs an interpreter start and imports.
"""

import json
import os
import pathlib
import subprocess
import sys

from piti_jax.workdir_lock import LOCK_FILE
from tests.train_helpers import run_on_tmpfs

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHAPES = ["--config=configs/shapes.py:pretrain", "--config.train.num_steps=1"]


RUN = {"cwd": ROOT, "capture_output": True, "text": True, "timeout": 300, "env": dict(os.environ, JAX_PLATFORMS="cpu")}


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", module, *args], check=False, **RUN)


def one_error_line(result: subprocess.CompletedProcess, prefix: str = "piti-jax: error:") -> str:
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  lines = [line for line in result.stderr.splitlines() if prefix in line]
  assert len(lines) == 1, result.stderr[-3000:]
  return lines[0][lines[0].index(prefix):]


def test_config_file_that_does_not_exist(tmp_path):
  result = run_module("piti_jax.main", "--config=configs/nope.py", f"--workdir={tmp_path / 'run'}")
  assert result.returncode == 2
  assert one_error_line(result) == ("piti-jax: error: config file configs/nope.py does not exist; pass the path "
                                    "of a configs/<job>.py file.")


def test_misspelled_override_keeps_the_hint(tmp_path):
  result = run_module("piti_jax.main", *SHAPES, "--config.train.num_step=5", f"--workdir={tmp_path / 'run'}")
  assert result.returncode == 2
  assert 'Did you mean "num_steps" instead of "num_step"?' in one_error_line(result)


def test_non_positive_batch_size_is_refused_before_anything_is_written(tmp_path):
  size = 0  # the check is `<= 0`
  workdir = tmp_path / "run"
  result = run_module("piti_jax.main", *SHAPES, f"--config.train.global_batch_size={size}", f"--workdir={workdir}")
  assert result.returncode == 2
  assert f"config.train.global_batch_size={size} must be positive" in one_error_line(result)
  assert not workdir.exists()


def test_workdir_that_is_a_file_or_under_a_file(tmp_path):
  file = tmp_path / "file"
  file.write_text("")
  for workdir, words in ((file, "is a file"), (file / "run", f"lies under the file {file}")):
    result = run_module("piti_jax.main", *SHAPES, f"--workdir={workdir}")
    assert result.returncode == 2
    assert f"workdir {workdir} {words}" in one_error_line(result)


def test_read_only_workdir(tmp_path):
  mount = tmp_path / "ro"
  result = run_on_tmpfs(str(mount), "ro,size=1m",
                        [sys.executable, "-m", "piti_jax.main", *SHAPES, f"--workdir={mount / 'run'}"], **RUN)
  assert result.returncode == 2, result.stderr[-3000:]
  assert f"cannot write to workdir {mount / 'run'} (Read-only file system)" in one_error_line(result)


def test_second_run_on_a_live_workdir_is_refused(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  import socket  # pylint: disable=import-outside-toplevel

  (workdir / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "heartbeat": 0}))
  result = run_module("piti_jax.main", *SHAPES, f"--workdir={workdir}")
  assert result.returncode == 2
  assert f"workdir {workdir} is in use by another run (process {os.getpid()}" in one_error_line(result)
  assert sorted(os.listdir(workdir)) == [LOCK_FILE]


def test_prepare_with_only_corrupt_images_says_no_readable_example(tmp_path):
  source = tmp_path / "src"
  source.mkdir()
  for index in range(3):
    (source / f"img{index}.jpg").write_text("not an image")
    (source / f"img{index}.txt").write_text(f"caption {index}")
  result = run_module("piti_jax.data", "--name=text_pairs", "--task=text", "--text_format=folder",
                      f"--manual_dir={source}", f"--data_dir={tmp_path / 'tfds'}")
  assert result.returncode == 2
  assert f"no readable example was found for split 'train' of dataset 'text_pairs' in {source}" in (
      one_error_line(result))


def test_convert_of_an_empty_file_says_it_is_empty(tmp_path):
  empty = tmp_path / "empty.pt"
  empty.write_bytes(b"")
  result = run_module("piti_jax.convert", f"--src={empty}", "--model=glide_base64", f"--out={tmp_path / 'out'}")
  assert result.returncode == 2
  assert "is empty (0 bytes)" in one_error_line(result, "piti-jax convert: error:")
