"""docs/results.md from the experiments' result files (`python -m experiments.report [--out DIR]`).

Every experiment script writes <out>/<name>.json (its tables, plots, command, seeds and wall
time) and calls `write_markdown`, so the page always shows every finished experiment;
running this module regenerates it from those files without training anything. What the
numbers mean is written by hand in <out>/<name>.findings.md and shown under the tables.
"""

import argparse
import glob
import json
import os

ORDER = ("training_length", "pretraining", "recipe", "guidance", "samplers", "upsampler_losses")

HEADER = """# Results of the `shapes` study

Produced on a 2-core CPU by the scripts in `experiments/` (one per question; `--quick` is a
smaller setting, the tables here are the full settings unless marked). Every run is cached under
`runs/experiments`, so running a script again only redoes what is missing, and
`python -m experiments.report` rebuilds this page from `docs/results/*.json`.

Models are the demo's (configs/demo.py): 16x16 base models from 64x64 masks, a 16 -> 32 upsampler,
trained for minutes, so absolute quality is low; compare rows within a table. Layout mIoU: the
colour-family oracle (`shapes_scenes.classify_pixels`) against the input mask, with the oracle's
score on the ground truth as the ceiling. FID: standard FID Inception features of the samples
against the ground truth of the same masks, few images, so biased upwards (KID is unbiased).
A range "m (a-b)" is the mean and the extremes over the seeds.
"""


def _table(table: dict) -> list[str]:
  lines = ["| " + " | ".join(table["columns"]) + " |", "|" + "---|" * len(table["columns"])]
  lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in table["rows"]]
  return lines


def section(record: dict, out_dir: str) -> list[str]:
  """One experiment's part of the page."""
  quick = " (quick setting)" if record["setting"] == "quick" else ""
  lines = [f"## {record['title']}{quick}", "", record.get("question", ""), "",
           f"Command: `{record['command']}`; seeds {', '.join(map(str, record['seeds']))}; "
           f"{record['count']} validation masks; {record['compute_seconds'] / 60:.1f} min of training, sampling "
           f"and scoring in all (cached parts as measured when they ran; the last invocation took "
           f"{record['wall_seconds'] / 60:.1f} min).", ""]
  for table in record.get("tables", []):
    if table.get("caption"):
      lines += [table["caption"], ""]
    lines += _table(table) + [""]
  for plot in record.get("plots", []):
    lines += [f"![{plot['caption']}]({os.path.relpath(os.path.join(out_dir, plot['file']), os.path.dirname(out_dir))})",
              ""]
  findings = os.path.join(out_dir, f"{record['experiment']}.findings.md")
  if os.path.isfile(findings):  # written by a person from the numbers above, kept beside them
    with open(findings) as f:
      lines += [f.read().strip(), ""]
  return lines


def write_markdown(out_dir: str) -> str:
  """<out_dir>/../results.md from every <out_dir>/*.json, in the study's order."""
  records = {}
  for path in glob.glob(os.path.join(out_dir, "*.json")):
    with open(path) as f:
      record = json.load(f)
    records[record["experiment"]] = record
  names = sorted(records, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
  lines = HEADER.splitlines() + [""]
  for name in names:
    lines += section(records[name], out_dir)
  path = os.path.join(os.path.dirname(os.path.abspath(out_dir)), "results.md")
  with open(path, "w") as f:
    f.write("\n".join(lines).rstrip() + "\n")
  return path


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                    "docs", "results"))
  print(write_markdown(parser.parse_args().out))
