import json
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "vs_pytorch_summary.py"


def line(row: str, kind: str, speedup: float, rss_ratio: float, **extra) -> str:
  return json.dumps({"row": row, "kind": kind, "speedup": speedup, "rss_ratio": rss_ratio,
                     "project_recompute_encoder": False, **extra})


def test_summary_groups_rows_across_runs_and_counts_the_goals(tmp_path):
  first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
  first.write_text("\n".join([line("train_tiny_stage2", "train", 0.98, 1.06), line("sample_tiny", "sample", 3.1, 0.9),
                              line("upsample_tiny", "upsample", 2.0, 0.69)]) + "\n")
  second.write_text("\n".join([line("train_tiny_stage2", "train", 1.07, 0.69),
                               line("train_tiny_stage2", "train", 1.2, 0.5, project_recompute_encoder=True),
                               line("sample_tiny", "sample", 2.9, 0.95, sample_steps=100)]) + "\n")
  out = subprocess.run([sys.executable, str(SCRIPT), str(first), str(second)], capture_output=True, text=True,
                       check=True).stdout
  summaries = {s["row"]: s for s in map(json.loads, out.splitlines())}
  assert list(summaries) == ["train_tiny_stage2", "sample_tiny", "upsample_tiny",
                             "train_tiny_stage2 (recompute_encoder)", "sample_tiny, 100 steps"]
  merged = subprocess.run([sys.executable, str(SCRIPT), "--sample-steps", "100", str(first), str(second)],
                          capture_output=True, text=True, check=True).stdout
  sampler = [s for s in map(json.loads, merged.splitlines()) if s["row"].startswith("sample_tiny")]
  assert [(s["row"], s["runs"], s["speedup_range"]) for s in sampler] == [("sample_tiny, 100 steps", 2, [2.9, 3.1])]
  stage2 = summaries["train_tiny_stage2"]
  assert (stage2["runs"], stage2["latest_file"], stage2["latest_speedup"]) == (2, "second.jsonl", 1.07)
  assert stage2["speedup_range"] == [0.98, 1.07] and stage2["rss_ratio_range"] == [0.69, 1.06]
  assert (stage2["runs_meeting_speedup_goal"], stage2["runs_meeting_rss_goal"]) == (1, 1)
  assert summaries["sample_tiny"]["speedup_goal"] == 3.0 and summaries["sample_tiny"]["runs_meeting_speedup_goal"] == 1
  assert summaries["upsample_tiny"]["speedup_goal"] is None and summaries["upsample_tiny"]["runs_meeting_rss_goal"] == 1

  table = subprocess.run([sys.executable, str(SCRIPT), "--markdown", str(first), str(second)], capture_output=True,
                         text=True, check=True).stdout.splitlines()
  assert len(table) == 2 + 5
  assert table[2] == ("| train_tiny_stage2 | 2 | 1.070x (0.980-1.070) | 1 of 2 (>= 1.0x) | 0.690x (0.690-1.060) | 1 of 2 "
                      "| second.jsonl |")
  assert "no goal" in table[4]
