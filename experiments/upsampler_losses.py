"""Which upsampler losses matter? The demo's upsampler with and without the perceptual term and
the adversarial term.

  python -m experiments.upsampler_losses            # full: 2 seeds
  python -m experiments.upsampler_losses --quick    # under 10 minutes

All four are the demo's upsampler run (16 -> 32, from scratch, the same steps and rate); the
terms switch on at the job's adversarial start step with the reference's weights (perceptual
0.004, adversarial 0.01) or are set to zero; "diffusion loss only" trains without either term and with no
critic. Scored on the real 16x16 images: LPIPS and FID of the 32x32 outputs against the ground
truth, with the reference's upsampler sampler (fast27, temperature 0.997).
"""

import dataclasses
import time

from experiments import common

VARIANTS = {"diffusion + perceptual + adversarial (reference)": (),
            "without perceptual": (("adversarial.perceptual_weight", 0.0),),
            "without adversarial": (("adversarial.adversarial_weight", 0.0),),
            "diffusion loss only": (("adversarial.enabled", False),)}
QUICK = {"upsampler": 40, "base": {"prior": 80, "stage1": 20, "stage2": 40}}


def main(argv=None) -> None:
  setting = common.parse_args("upsampler_losses", __doc__.splitlines()[0], argv)
  cache, started = setting.cache, time.perf_counter()
  base_steps = QUICK["base"] if setting.quick else {}
  rows, results = [], {}
  for name, settings in VARIANTS.items():
    def measure(seed: int, settings=settings) -> dict[str, float]:
      recipe = common.demo_recipe(seed, **base_steps)
      upsampler = dataclasses.replace(recipe.upsampler, settings=settings)
      steps = QUICK["upsampler"] if setting.quick else recipe.steps["upsampler"]
      base = cache.train(recipe.stage2, recipe.steps["stage2"])
      score = cache.score(cache.sample(base, cache.train(upsampler, steps), seed=seed))
      return {"lpips": score["lpips"], "fid": score["fid_upsampled_truth"], "miou": score["miou"]}

    summary = common.for_seeds(setting, measure)
    results[name] = summary
    rows.append([name, common.show(summary["lpips"]), common.show(summary["fid"], 1),
                 common.show(summary["miou"])])
  table = {"caption": "Upsampler 16 -> 32 on real low-res inputs (LPIPS, FID) and on stage-2 samples "
                      "(layout mIoU at 32 px):", "columns": ["losses", "LPIPS", "FID", "layout mIoU"], "rows": rows}
  common.write_result(setting, "upsampler_losses", {
      "title": "Upsampler losses", "question": " ".join(__doc__.split("\n\n")[2].split()),
      "tables": [table], "results": results}, started)


if __name__ == "__main__":
  main()
