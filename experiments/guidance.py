"""What does guidance do? Plain, normalized (both statistics) and rescaled classifier-free
guidance over a range of scales, on the demo's stage-2 model.

  python -m experiments.guidance            # full: 2 seeds, scales 1.5, 3, 5
  python -m experiments.guidance --quick    # under 10 minutes

Base samples with the demo's sampler (DDPM over 50 steps); the unconditional branch is the
encoder's embedding of an all-ones mask (the reference's null condition). Saturation and the
per-channel spread of the samples show what each kind does to colour; the ground truth's are
given for comparison.
"""

import os
import time

import numpy as np

from experiments import common

KINDS = {"plain": {"guidance": "plain"},
         "normalized (empirical stats)": {"guidance": "normalized", "normalized_stats": "empirical"},
         "normalized (analytic stats)": {"guidance": "normalized", "normalized_stats": "analytic"},
         "rescaled (phi 0.7)": {"guidance": "rescaled"}}
FULL = {"scales": (1.5, 3.0, 5.0)}
QUICK = {"scales": (3.0,), "steps": {"prior": 80, "stage1": 20, "stage2": 40}}


def base_sample(scale: float, kind: dict) -> dict:
  """The demo's base sampler with this guidance."""
  demo = common.train_config.load_config_file(common.DEMO_CONFIG).evaluation.base_sample.to_dict()
  return {**demo, "guidance_scale": scale, **(kind if scale != 1.0 else {"guidance": "plain"})}


def main(argv=None) -> None:
  setting = common.parse_args("guidance", __doc__.splitlines()[0], argv)
  cache, started = setting.cache, time.perf_counter()
  plan = QUICK if setting.quick else FULL
  steps = plan.get("steps", {})

  def model(seed: int) -> str:
    recipe = common.demo_recipe(seed, **steps)
    return cache.train(recipe.stage2, recipe.steps["stage2"])

  cells = [("none", 1.0, {})] + [(name, scale, kind) for scale in plan["scales"] for name, kind in KINDS.items()]
  rows, results, folders = [], {}, {}
  for name, scale, kind in cells:
    def measure(seed: int, scale=scale, kind=kind, name=name) -> dict[str, float]:
      folder = cache.sample(model(seed), seed=seed, base_sample=base_sample(scale, kind))
      folders.setdefault((name, scale), folder)
      score = cache.score(folder)
      colour = score["colour"]
      return {"miou": score["miou"], "fid": score["fid"], "saturation": score["saturation"],
              "channel_std": float(np.mean([colour[f"std_{c}"] for c in "rgb"])),
              "truth_saturation": score["saturation_truth"]}

    summary = common.for_seeds(setting, measure)
    results[f"{name}@{scale:g}"] = summary
    rows.append([name, f"{scale:g}", common.show(summary["miou"]), common.show(summary["fid"], 1),
                 common.show(summary["saturation"]), common.show(summary["channel_std"])])
  truth = results["none@1"]["truth_saturation"]["mean"]
  table = {"caption": f"Demo stage-2 model, DDPM 50 steps (ground-truth saturation {truth:.3f}):",
           "columns": ["guidance", "scale", "layout mIoU", "FID", "saturation", "channel std"], "rows": rows}
  grid = _side_by_side(setting.out_dir, folders, max(plan["scales"]))
  common.write_result(setting, "guidance", {
      "title": "Guidance kinds and scales", "question": " ".join(__doc__.split("\n\n")[2].split()),
      "tables": [table], "plots": [grid], "results": results}, started)


def _side_by_side(out_dir: str, folders: dict, scale: float) -> dict:
  """One grid: mask | unguided | each kind at `scale` | ground truth, first seed, 8 masks."""
  from PIL import Image  # pylint: disable=import-outside-toplevel

  from piti_jax import grids  # pylint: disable=import-outside-toplevel
  from piti_jax.evaluation import runner  # pylint: disable=import-outside-toplevel

  chosen = [folders[("none", 1.0)]] + [folders[(name, scale)] for name in KINDS]
  names = runner.read_manifest(chosen[0])["names"][:8]
  read = lambda folder, sub: runner.read_images(os.path.join(folder, sub), names)  # noqa: E731
  columns = [read(chosen[0], "condition")] + [read(f, "base") for f in chosen] + [read(chosen[0], "ground_truth")]
  grid = grids.make_grid(columns, columns[1].shape[1:3])
  file = "guidance_grid.png"
  os.makedirs(out_dir, exist_ok=True)
  Image.fromarray(grid).save(os.path.join(out_dir, file))
  return {"file": file, "caption": f"mask | no guidance | {' | '.join(KINDS)} at scale {scale:g} | ground truth"}


if __name__ == "__main__":
  main()
