"""Does pretraining help? A prior pretrained on shapes captions against random initialisation.

  python -m experiments.pretraining            # full: 3 training-set sizes, 2 seeds
  python -m experiments.pretraining --quick    # a few minutes (run end to end by tests/test_experiments.py)

The same finetuning budget for both: PITI's stage-2 job (encoder and decoder trained
together, the demo's stage-2 rate) for the same number of steps on the first N training
scenes, with the decoder either loaded from the demo's prior (600 steps on captions) or
randomly initialised; the encoder starts fresh in both. Layout mIoU and FID on the
validation masks.
"""

import time

from experiments import common

FULL = {"sizes": (100, 1000, 2000), "steps": 300}
QUICK = {"sizes": (100,), "steps": 10, "prior": 20}


def finetune(seed: int, size: int, pretrained: bool, prior_steps: int | None = None) -> common.Stage:
  """The stage-2 job on the first `size` scenes, from the prior (pretrained) or from random weights."""
  recipe = common.demo_recipe(seed, **({"prior": prior_steps} if prior_steps else {}))
  init = (("prior", recipe.prior, recipe.steps["prior"]),) if pretrained else ()
  return common.Stage("stage2", recipe.stage2.lr, seed, init=init, settings=(("data.train_subset", size),))


def main(argv=None) -> None:
  setting = common.parse_args("pretraining", __doc__.splitlines()[0], argv)
  cache, started = setting.cache, time.perf_counter()
  plan = QUICK if setting.quick else FULL
  rows, results = [], {}
  for size in plan["sizes"]:
    for pretrained in (True, False):
      def measure(seed: int, size=size, pretrained=pretrained) -> dict[str, float]:
        model = cache.train(finetune(seed, size, pretrained, plan.get("prior")), plan["steps"])
        score = cache.score(cache.sample(model, seed=seed))
        return {"miou": score["miou"], "fid": score["fid"], "kid": score["kid"]}

      summary = common.for_seeds(setting, measure)
      name = "pretrained prior" if pretrained else "random init"
      results[f"{size}/{name}"] = summary
      rows.append([size, name, common.show(summary["miou"]), common.show(summary["fid"], 1),
                   common.show(summary["kid"])])
  prior_steps = common.demo_recipe(0, **({"prior": plan["prior"]} if "prior" in plan else {})).steps["prior"]
  table = {"caption": f"Stage-2 finetuning for {plan['steps']} steps on the first N training scenes "
                      f"(the pretrained prior: {prior_steps} steps):",
           "columns": ["training scenes", "decoder init", "layout mIoU", "FID", "KID"], "rows": rows}
  common.write_result(setting, "pretraining", {
      "title": "Pretraining against training from scratch", "question": " ".join(__doc__.split("\n\n")[2].split()),
      "tables": [table], "results": results}, started)


if __name__ == "__main__":
  main()
