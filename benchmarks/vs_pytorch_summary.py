"""Rows of several `benchmarks/vs_pytorch.py` runs summed up, one line per row, for the README's table.

  python benchmarks/vs_pytorch_summary.py benchmarks/results/vs_pytorch_tiny_repeats3_2026-12-07.jsonl ...
  python benchmarks/vs_pytorch_summary.py --markdown FILE ...

FILEs are vs_pytorch.py outputs (JSON lines), given oldest first. Lines of the same row (and the same
sampler step count; --sample-steps N gives it to sampler lines that do not record it) are one group. Per
group, one JSON line: how many runs, the latest run's file, speed-up (project images/s over the
reference's) and step peak RSS ratio (project over reference), the range of both over the runs, and in
how many runs each goal of the performance issue held: speed-up >= 1.0 for train rows and >= 3.0 for the
guided base sampler (no goal for the upsampler), peak RSS ratio <= 0.7 for every row. `--markdown`
prints the same as a table.
"""

import argparse
import json
import os

SPEEDUP_GOALS = {"train": 1.0, "sample": 3.0}  # by the line's "kind"; "upsample" has none
RSS_RATIO_GOAL = 0.7


def group_key(line: dict, sample_steps: int | None) -> str:
  """The row name, with `model.overrides.recompute_encoder` and a sampler row's step count (the line's, or
  `sample_steps` for lines that do not record it)."""
  key = line["row"]
  if line.get("project_recompute_encoder"):
    key += " (recompute_encoder)"
  steps = line.get("sample_steps") if line.get("sample_steps") is not None else sample_steps
  if line["kind"] == "sample" and steps is not None:
    key += f", {steps} steps"
  return key


def summarize(paths: list[str], sample_steps: int | None = None) -> list[dict]:
  """One dict per group, in the order the groups first appear; `sample_steps` as in `group_key`."""
  groups: dict[str, list[tuple[str, dict]]] = {}
  for path in paths:
    with open(path) as f:
      for text in f:
        if text.strip():
          line = json.loads(text)
          groups.setdefault(group_key(line, sample_steps), []).append((os.path.basename(path), line))
  summaries = []
  for key, runs in groups.items():
    speedups = [line["speedup"] for _, line in runs]
    ratios = [line["rss_ratio"] for _, line in runs]
    latest_file, latest = runs[-1]
    goal = SPEEDUP_GOALS.get(latest["kind"])
    summaries.append({
        "row": key, "runs": len(runs), "latest_file": latest_file,
        "latest_speedup": latest["speedup"], "latest_rss_ratio": latest["rss_ratio"],
        "speedup_range": [min(speedups), max(speedups)], "rss_ratio_range": [min(ratios), max(ratios)],
        "speedup_goal": goal, "runs_meeting_speedup_goal": None if goal is None else sum(s >= goal for s in speedups),
        "rss_ratio_goal": RSS_RATIO_GOAL, "runs_meeting_rss_goal": sum(r <= RSS_RATIO_GOAL for r in ratios)})
  return summaries


def markdown(summaries: list[dict]) -> str:
  rows = ["| row | runs | speed-up: latest (range) | speed-up goal met in | step peak RSS ratio: latest (range) "
          f"| RSS goal (<= {RSS_RATIO_GOAL}x) met in | latest run |",
          "|---|---|---|---|---|---|---|"]
  for s in summaries:
    goal = "no goal" if s["speedup_goal"] is None else (
        f"{s['runs_meeting_speedup_goal']} of {s['runs']} (>= {s['speedup_goal']:.1f}x)")
    rows.append(f"| {s['row']} | {s['runs']} | {s['latest_speedup']:.3f}x ({s['speedup_range'][0]:.3f}-"
                f"{s['speedup_range'][1]:.3f}) | {goal} | {s['latest_rss_ratio']:.3f}x ({s['rss_ratio_range'][0]:.3f}-"
                f"{s['rss_ratio_range'][1]:.3f}) | {s['runs_meeting_rss_goal']} of {s['runs']} | {s['latest_file']} |")
  return "\n".join(rows)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("files", nargs="+", help="vs_pytorch.py output files, oldest first")
  parser.add_argument("--markdown", action="store_true", help="print a markdown table instead of JSON lines")
  parser.add_argument("--sample-steps", type=int,
                      help="sampler steps of the sample_* lines that do not record theirs (runs before 2026-12-08)")
  args = parser.parse_args()
  summaries = summarize(args.files, args.sample_steps)
  if args.markdown:
    print(markdown(summaries))
  else:
    for summary in summaries:
      print(json.dumps(summary))


if __name__ == "__main__":
  main()
