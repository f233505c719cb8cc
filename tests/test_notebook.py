"""The Colab notebook's code cells run, in order, in its tiny setting (2 steps per demo stage)."""

import json
import os

import matplotlib
import pytest

from tests.train_helpers import REPO

NOTEBOOK = os.path.join(REPO, "notebooks", "piti_jax_demo.ipynb")


def code_cells() -> list[str]:
  with open(NOTEBOOK) as f:
    notebook = json.load(f)
  return ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]


def test_notebook_runs_end_to_end_in_the_tiny_setting(tmp_path, monkeypatch):
  matplotlib.use("Agg")
  monkeypatch.chdir(REPO)
  monkeypatch.setenv("PITI_JAX_NOTEBOOK_SETTING", "tiny")
  monkeypatch.setenv("PITI_JAX_NOTEBOOK_WORKDIR", str(tmp_path / "colab"))
  namespace: dict = {"__name__": "__notebook__"}
  for index, source in enumerate(code_cells()):
    try:
      exec(compile(source, f"{NOTEBOOK}[cell {index}]", "exec"), namespace)  # pylint: disable=exec-used
    except Exception as error:  # name the failing cell
      pytest.fail(f"notebook code cell {index} failed: {type(error).__name__}: {error}")
  workdir = tmp_path / "colab"
  assert (workdir / "report.md").is_file()
  samples = workdir / "my_samples"
  assert sorted(os.listdir(samples / "base")) == ["drawn.png"] and (samples / "upsampled" / "drawn.png").is_file()
  assert namespace["manifest"]["count"] == 1
  # Running the demo again reuses every finished stage: nothing is trained, sampled or evaluated anew.
  stamps = {path: os.path.getmtime(path) for path in (workdir / "stage2" / "export").rglob("*")}
  stamps[workdir / "samples" / "stage2" / "manifest.json"] = os.path.getmtime(
      workdir / "samples" / "stage2" / "manifest.json")
  first = json.loads((workdir / "report.json").read_text())["timings"]
  namespace["demo"].run(namespace["demo_config"], str(workdir))
  assert stamps == {path: os.path.getmtime(path) for path in stamps}
  again = json.loads((workdir / "report.json").read_text())["timings"]  # the report keeps the first run's times
  assert again["stage2"] == dict(first["stage2"], reused=True)
  assert again["total"]["seconds"] >= first["total"]["seconds"] - first["evaluate"]["seconds"]
