"""How few sampling steps suffice? DDPM-250 (the reference's base sampler), DDIM-50, DDIM-25 and
DPM-Solver++ at 20 and 10 steps, for the base model and for the upsampler.

  python -m experiments.samplers            # full: 2 seeds
  python -m experiments.samplers --quick    # under 10 minutes

Base rows: the demo's stage-2 model with the demo's guidance (plain, 1.5), scored by layout mIoU
and FID. Upsampler rows: the demo's upsampler on the real 16x16 images (so only the upsampler
varies), scored by LPIPS and FID against the 32x32 ground truth; its reference sampler is DDPM
over the 27 "fast27" steps at temperature 0.997, which is added as a row.
"""

import time

from experiments import common

SAMPLERS = {"DDPM-250": {"sampler": "ddpm", "respacing": "250"},
            "DDIM-50": {"sampler": "ddim", "respacing": "50"},
            "DDIM-25": {"sampler": "ddim", "respacing": "25"},
            "DPM-Solver++ 20": {"sampler": "dpm_solver_pp", "steps": 20},
            "DPM-Solver++ 10": {"sampler": "dpm_solver_pp", "steps": 10}}
# Upsampler rows: the upsampler runs only on the real low-res images; the base samples these
# rows also draw are not scored, so they use the cheapest sampler.
UNSCORED_BASE_SAMPLER = {"sampler": "dpm_solver_pp", "steps": 10}
UPSAMPLER_REFERENCE = {"DDPM fast27, T 0.997 (reference)": {"sampler": "ddpm", "respacing": "fast27",
                                                           "temperature": 0.997}}
QUICK = {"samplers": ("DDIM-25", "DPM-Solver++ 10"), "steps": {"prior": 80, "stage1": 20, "stage2": 40,
                                                               "upsampler": 40}}


def main(argv=None) -> None:
  setting = common.parse_args("samplers", __doc__.splitlines()[0], argv)
  cache, started = setting.cache, time.perf_counter()
  chosen = QUICK["samplers"] if setting.quick else tuple(SAMPLERS)
  steps = QUICK["steps"] if setting.quick else {}
  demo = common.train_config.load_config_file(common.DEMO_CONFIG).evaluation

  def models(seed: int) -> tuple[str, str]:
    recipe = common.demo_recipe(seed, **steps)
    return (cache.train(recipe.stage2, recipe.steps["stage2"]),
            cache.train(recipe.upsampler, recipe.steps["upsampler"]))

  base_rows, up_rows, results = [], [], {"base": {}, "upsampler": {}}
  for name in chosen:
    def base(seed: int, name=name) -> dict[str, float]:
      sampler = {**demo.base_sample.to_dict(), **SAMPLERS[name]}
      score = cache.score(cache.sample(models(seed)[0], seed=seed, base_sample=sampler))
      return {"miou": score["miou"], "fid": score["fid"], "nfe": score["network_evaluations"]["base"],
              "seconds": score["sample_seconds"]}

    summary = common.for_seeds(setting, base)
    results["base"][name] = summary
    base_rows.append([name, int(summary["nfe"]["mean"]), common.show(summary["miou"]),
                      common.show(summary["fid"], 1), common.show(summary["seconds"], 0)])
  for name, sampler in {**UPSAMPLER_REFERENCE, **{n: SAMPLERS[n] for n in chosen}}.items():
    def upsample(seed: int, sampler=sampler) -> dict[str, float]:
      base_model, upsampler = models(seed)
      score = cache.score(cache.sample(base_model, upsampler, seed=seed,
                                       base_sample={**demo.base_sample.to_dict(), **UNSCORED_BASE_SAMPLER},
                                       upsampler_sample={**demo.upsampler_sample.to_dict(), **sampler},
                                       upsample_samples=False))
      return {"lpips": score["lpips"], "fid": score["fid_upsampled_truth"],
              "nfe": score["network_evaluations"]["upsampler"]}

    summary = common.for_seeds(setting, upsample)
    results["upsampler"][name] = summary
    up_rows.append([name, int(summary["nfe"]["mean"]), common.show(summary["lpips"]),
                    common.show(summary["fid"], 1)])
  tables = [
      {"caption": "Base model (demo stage 2, guidance 1.5; network evaluations per image count both guidance "
                  "branches):", "columns": ["sampler", "network evaluations", "layout mIoU", "FID",
                                            "sampling seconds"], "rows": base_rows},
      {"caption": "Upsampler on real 16x16 inputs:", "columns": ["sampler", "network evaluations", "LPIPS", "FID"],
       "rows": up_rows}]
  plot = _plot(setting.out_dir, results)
  common.write_result(setting, "samplers", {
      "title": "Samplers and step counts", "question": " ".join(__doc__.split("\n\n")[2].split()),
      "tables": tables, "plots": [plot], "results": results}, started)


def _spaced_ticks(values: set[int], min_ratio: float = 1.25) -> list[int]:
  """The sorted values, leaving out any within `min_ratio` of the last one kept (their labels would overlap on a log axis)."""
  kept: list[int] = []
  for value in sorted(values):
    if not kept or value >= kept[-1] * min_ratio:
      kept.append(value)
  return kept


def _plot(out_dir: str, results: dict) -> dict:
  from matplotlib import ticker  # pylint: disable=import-outside-toplevel

  figure, axes = common.pyplot().subplots(1, 2, figsize=(9, 3.5))
  for axis, part, metric, label in ((axes[0], "base", "miou", "layout mIoU (base)"),
                                    (axes[1], "upsampler", "lpips", "LPIPS (upsampler)")):
    for name, summary in results[part].items():
      axis.errorbar(summary["nfe"]["mean"], summary[metric]["mean"], fmt="o",
                    yerr=[[summary[metric]["mean"] - summary[metric]["min"]],
                          [summary[metric]["max"] - summary[metric]["mean"]]], label=name, capsize=3)
    axis.set_xscale("log")
    axis.set_xticks(_spaced_ticks({int(summary["nfe"]["mean"]) for summary in results[part].values()}))
    axis.xaxis.set_major_formatter(ticker.ScalarFormatter())
    axis.xaxis.set_minor_formatter(ticker.NullFormatter())
    axis.set_xlabel("network evaluations per image")
    axis.set_ylabel(label)
    axis.legend(fontsize=7)
  return common.save_figure(figure, out_dir, "samplers.png", "quality against network evaluations per image")


if __name__ == "__main__":
  main()
