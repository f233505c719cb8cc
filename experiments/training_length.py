"""Layout mIoU against training steps: how far the demo's recipe is from its quality goal.

  python -m experiments.training_length         # full: about 45 minutes on 2 CPU cores
  python -m experiments.training_length --quick    # under 10 minutes

Two curves, with the demo's recipe and sizes (configs/demo.py): stage 2 trained for longer
and longer from the demo's prior (600 steps) and stage 1 (200 steps); and the prior trained
for longer, each followed by the demo's stage 1 (200) and stage 2 (500). Beside mIoU it
reports two diagnostics of the model's noise predictions on noised validation images (cosine
schedule, 1000 steps): the colour error at high noise, the RMS over images of the error of the
mean colour of its x0 prediction at t = 900, which sets a sample's overall colour; and the mask
use, how much worse it predicts the noise when given another validation image's mask,
(MSE_other - MSE_own) / MSE_own at t = 300, 500, 700: 0 means the mask is ignored.
"""

import time

import numpy as np

from experiments import common

FULL = {"stage2_steps": (250, 500, 1000, 2000, 3000), "prior_steps": (300, 600, 1200)}
QUICK = {"stage2_steps": (40, 80), "prior_steps": (40, 80), "prior": 80, "stage1": 20, "stage2": 40}
HIGH_NOISE_T = 900
MASK_USE_T = (300, 500, 700)


def diagnostics(cache: common.Cache, model_dir: str, count: int, seed: int) -> dict[str, float]:
  """Two numbers from the model's noise predictions on `count` noised validation images:

  colour_error: RMS over images of the error of the mean colour of x0_hat(x_t, t) at t = 900;
  mask_use: how much worse eps is predicted with another image's mask than with its own,
    (MSE_other - MSE_own) / MSE_own, at t = 300, 500 and 700 together (0: the mask is ignored).
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from piti_jax.diffusion.gaussian import make_diffusion  # pylint: disable=import-outside-toplevel
  from piti_jax.models import checkpoint as model_checkpoint  # pylint: disable=import-outside-toplevel

  model = model_checkpoint.from_checkpoint(model_dir)
  data = common.demo.stage_config(cache.demo_config(seed), "stage2", cache.root).data
  inputs = common.inference.read_dataset_inputs(data, "validation", count, model.config.image_size)
  x0 = jnp.asarray(inputs.truth, jnp.float32) / 127.5 - 1.0
  cond = jnp.asarray(inputs.condition(data.condition_size))
  encoded = {"own": model.encode(cond), "other": model.encode(jnp.roll(cond, 1, axis=0))}
  diffusion = make_diffusion("cosine", 1000)
  key = jax.random.key(seed)

  def eps_at(step: int, which: str) -> tuple[jax.Array, jax.Array, jax.Array]:
    noise = jax.random.normal(jax.random.fold_in(key, step), x0.shape)
    t = jnp.full((count,), step)
    x_t = diffusion.q_sample(x0, t, noise)
    return x_t, noise, model(x_t, t, encoded=encoded[which])[..., :3]

  x_t, _, eps = eps_at(HIGH_NOISE_T, "own")
  abar = float(diffusion.alphas_cumprod[HIGH_NOISE_T])
  x0_hat = jnp.clip((x_t - np.sqrt(1 - abar) * eps) / np.sqrt(abar), -1, 1)
  colour_error = float(jnp.sqrt(jnp.mean(jnp.mean(x0_hat - x0, axis=(1, 2)) ** 2)))
  def mse(which: str) -> float:
    total = 0.0
    for step in MASK_USE_T:
      _, noise, predicted = eps_at(step, which)
      total += float(jnp.mean((predicted - noise) ** 2))
    return total

  own, other = mse("own"), mse("other")
  return {"colour_error": colour_error, "mask_use": (other - own) / own}


def main(argv=None) -> None:
  setting = common.parse_args("training_length", __doc__.splitlines()[0], argv)
  cache, started = setting.cache, time.perf_counter()
  plan = QUICK if setting.quick else FULL
  demo_steps = common.demo_recipe(0).steps
  prior_steps, stage1_steps, stage2_steps = (plan.get(name, demo_steps[name]) for name in ("prior", "stage1", "stage2"))

  def measure(model_dir: str, seed: int) -> dict[str, float]:
    score = cache.score(cache.sample(model_dir, seed=seed))
    return {"miou": score["miou"], "kid": score["kid"], "ceiling": score["ceiling"]["16px"]["miou"],
            **diagnostics(cache, model_dir, setting.count, seed)}

  def stage2_after(seed: int, prior: int, stage2: int) -> dict[str, float]:
    recipe = common.demo_recipe(seed, prior=prior, stage1=stage1_steps)
    return measure(cache.train(recipe.stage2, stage2), seed)

  prior_curve = [(steps, common.for_seeds(setting, lambda seed, steps=steps: stage2_after(seed, steps, stage2_steps)))
                 for steps in plan["prior_steps"]]
  stage2_curve = [(steps, common.for_seeds(setting, lambda seed, steps=steps: stage2_after(seed, prior_steps, steps)))
                  for steps in plan["stage2_steps"]]

  columns = ["layout mIoU", "KID", "colour error at t=900", "mask use", "ceiling (ground truth)"]
  cells = lambda m: [common.show(m["miou"]), common.show(m["kid"]), common.show(m["colour_error"]),  # noqa: E731
                     common.show(m["mask_use"]), common.show(m["ceiling"])]
  tables = [
      {"caption": f"Stage 2 trained longer (prior {prior_steps} steps, stage 1 {stage1_steps} steps; "
                  "the demo runs 500):",
       "columns": ["stage-2 steps", *columns], "rows": [[s, *cells(m)] for s, m in stage2_curve]},
      {"caption": f"Prior trained longer (then stage 1 {stage1_steps} and stage 2 {stage2_steps} steps; "
                  "the demo's prior runs 600):",
       "columns": ["prior steps", *columns], "rows": [[s, *cells(m)] for s, m in prior_curve]},
  ]
  plot = _plot(setting.out_dir, stage2_curve, prior_curve)
  result = {"title": "Layout mIoU against training steps", "question": " ".join(__doc__.split("\n\n")[2].split()),
            "tables": tables, "plots": [plot],
            "curves": {"stage2": stage2_curve, "prior": prior_curve}}
  common.write_result(setting, "training_length", result, started)


def _plot(out_dir: str, stage2_curve, prior_curve) -> dict:
  figure, axes = common.pyplot().subplots(1, 2, figsize=(9, 3.5))
  for axis, curve, label in ((axes[0], stage2_curve, "stage-2 steps"), (axes[1], prior_curve, "prior steps")):
    steps = [s for s, _ in curve]
    for metric, name in (("miou", "layout mIoU"), ("colour_error", "colour error at t=900"),
                         ("mask_use", "mask use")):
      mean = [m[metric]["mean"] for _, m in curve]
      low = [m[metric]["min"] for _, m in curve]
      high = [m[metric]["max"] for _, m in curve]
      axis.plot(steps, mean, marker="o", label=name)
      axis.fill_between(steps, low, high, alpha=0.2)
    axis.axhline(curve[0][1]["ceiling"]["mean"], color="grey", linestyle="--", label="mIoU ceiling")
    axis.set_xlabel(label)
    axis.set_xscale("log")
    axis.set_xticks(steps, [str(s) for s in steps])
    axis.minorticks_off()
  axes[0].legend(fontsize=8)
  return common.save_figure(figure, out_dir, "training_length.png", "layout mIoU, high-noise colour error and mask use against training steps")


if __name__ == "__main__":
  main()
