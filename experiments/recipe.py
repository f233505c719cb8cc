"""Which finetuning recipe? Stage 1 only, stage 1 + stage 2 (the reference), joint from the start,
and joint with separate encoder and decoder learning rates, at one step budget.

  python -m experiments.recipe            # full: 2 seeds
  python -m experiments.recipe --quick    # under 10 minutes

All four start from the demo's prior (600 steps on captions) with a fresh encoder and train for
the same total number of steps on all 2,000 scenes. Stage 1 trains the encoder against the frozen
decoder at the demo's stage-1 rate; stage 2 and the joint recipes train everything at the demo's
stage-2 rate; the separate-rate recipe gives the encoder twice and the decoder half that rate.
"""

import time

from experiments import common

FULL = {"steps": 400, "stage1_share": 150}
QUICK = {"steps": 40, "stage1_share": 20, "prior": 80}


def recipes(seed: int, plan: dict) -> dict[str, tuple[common.Stage, int]]:
  """name -> (final run, its steps) for every recipe."""
  demo = common.demo_recipe(seed, **({"prior": plan["prior"]} if "prior" in plan else {}))
  from_prior = (("prior", demo.prior, demo.steps["prior"]),)
  steps, first = plan["steps"], plan["stage1_share"]
  stage1 = demo.stage1
  return {
      "stage 1 only": (stage1, steps),
      f"stage 1 ({first}) + stage 2 ({steps - first}) (reference)": (common.Stage(
          "stage2", demo.stage2.lr, seed, init=(*from_prior, ("stage1", stage1, first))), steps - first),
      "joint from the start": (common.Stage("stage2", demo.stage2.lr, seed, init=from_prior), steps),
      "joint, encoder 2x / decoder 0.5x rate": (common.Stage(
          "stage2", demo.stage2.lr, seed, init=from_prior,
          settings=(("optim.encoder_lr", 2 * demo.stage2.lr), ("optim.decoder_lr", 0.5 * demo.stage2.lr))), steps),
  }


def main(argv=None) -> None:
  setting = common.parse_args("recipe", __doc__.splitlines()[0], argv)
  cache, started = setting.cache, time.perf_counter()
  plan = QUICK if setting.quick else FULL
  rows, results = [], {}
  for name in recipes(0, plan):
    def measure(seed: int, name=name) -> dict[str, float]:
      stage, steps = recipes(seed, plan)[name]
      score = cache.score(cache.sample(cache.train(stage, steps), seed=seed))
      return {"miou": score["miou"], "fid": score["fid"], "kid": score["kid"]}

    summary = common.for_seeds(setting, measure)
    results[name] = summary
    rows.append([name, common.show(summary["miou"]), common.show(summary["fid"], 1), common.show(summary["kid"])])
  prior_steps = common.demo_recipe(0, **({"prior": plan["prior"]} if "prior" in plan else {})).steps["prior"]
  table = {"caption": f"{plan['steps']} finetuning steps in every recipe, from the same prior ({prior_steps} steps):",
           "columns": ["recipe", "layout mIoU", "FID", "KID"], "rows": rows}
  common.write_result(setting, "recipe", {
      "title": "Finetuning recipes", "question": " ".join(__doc__.split("\n\n")[2].split()),
      "tables": [table], "results": results}, started)


if __name__ == "__main__":
  main()
