"""The entry point reports project errors in one line with exit status 2, also while reading the config."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_main(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "piti_jax.main", *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=300, check=False)


def test_bad_config_argument_is_one_line_with_exit_2(tmp_path):
  result = run_main("--config=configs/coco_stuff_mask.py:stage9", f"--workdir={tmp_path}")
  assert result.returncode == 2 and "Traceback" not in result.stderr
  error_lines = [line for line in result.stderr.splitlines() if line.startswith("piti-jax: error:")]
  assert len(error_lines) == 1 and "stage1_cont" in error_lines[0]


def test_missing_workdir_is_one_line_with_exit_2():
  result = run_main("--config=configs/diffusion_check.py")
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert [line for line in result.stderr.splitlines() if line.startswith("piti-jax: error:")] == [
      "piti-jax: error: no --workdir given; pass --workdir=DIR for checkpoints, logs and samples."]
