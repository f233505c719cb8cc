"""The diffusion_check runner, in-process for config errors and through `python -m piti_jax.main`."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from piti_jax.diffusion import selfcheck
from piti_jax.errors import PitiError

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "diffusion_check.py")


def run_main(*flags):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  return subprocess.run([sys.executable, "-m", "piti_jax.main", f"--config={CONFIG}", *flags], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def load_config():
  import importlib.util
  spec = importlib.util.spec_from_file_location("diffusion_check_config", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.mark.parametrize("field, value, message", [
    ("samplers", "ddpm,euler", "samplers"),
    ("schedule", "sigmoid", "schedule"),
    ("dpm_solver_spacing", "karras", "spacing"),
    ("num_samples", 1, "num_samples"),
])
def test_bad_config_values_are_user_errors(tmp_path, field, value, message):
  config = load_config()
  config[field] = value
  with pytest.raises(PitiError, match=message):
    selfcheck.run(config, str(tmp_path))
  assert not (tmp_path / selfcheck.RESULT_FILE).exists()


def test_main_runs_diffusion_check(tmp_path):
  result = run_main(f"--workdir={tmp_path}", "--config.num_samples=256", "--config.ddpm_respacing=20",
                    "--config.ddim_respacing=ddim10", "--config.dpm_solver_steps=6")
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads((tmp_path / selfcheck.RESULT_FILE).read_text())
  assert [r["sampler"] for r in report["results"]] == ["ddpm", "ddim", "dpm_solver_pp"]
  assert [r["model_calls"] for r in report["results"]] == [20, 10, 6]
  for r in report["results"]:
    assert 0 <= r["max_mean_error"] < 1 and 0 <= r["max_std_error"] < 1
  assert report["config"]["num_samples"] == 256


def test_main_rejects_unknown_mode_in_one_line(tmp_path):
  result = run_main(f"--workdir={tmp_path}", "--config.mode=no_such_mode")
  assert result.returncode == 2
  assert "Traceback" not in result.stderr
  error_lines = [line for line in result.stderr.splitlines() if "no_such_mode" in line]
  assert len(error_lines) == 1 and error_lines[0].startswith("piti-jax: error:")
  assert "diffusion_check" in error_lines[0]
