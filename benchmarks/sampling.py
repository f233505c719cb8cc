"""Sampling speed against quality: one JSON line per sampler setting, base + upsampler pipeline.

  python benchmarks/sampling.py --workdir=runs/demo [--count=64] [--settings=reference,ddim50,dpm25,dpm20,dpm10]

Uses the demo's trained models (run configs/demo.py first): stage 2 as the base model and the
demo upsampler, on the first `count` validation masks of the demo's `shapes` dataset. For
each setting it samples the base model (the setting's sampler, guidance scale as the demo's)
and then the upsampler (the reference's fast27, temperature 0.997, unguided), and reports:
images/s of the whole pipeline (base + upsampler, after compilation; the first pass also
compiles and is not timed), decoder evaluations per image for each model, the oracle's layout
mIoU of the base samples, and the FID-style distance of the final samples against the real
images (standard FID Inception, 256x256 bicubic; `count` images only, so compare rows, not
papers). Device: every local device of this process.
"""

import json
import os
import time

import jax
from absl import app, flags, logging

from piti_jax import demo, huge_pages, inference
from piti_jax.evaluation import runner as evaluation
from piti_jax.sampling import sample_config
from piti_jax.train.config import load_config_file

_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "A finished demo's workdir (configs/demo.py).")
_COUNT = flags.DEFINE_integer("count", 64, "Validation masks to sample.")
_SETTINGS = flags.DEFINE_list("settings", ["reference", "ddim50", "dpm25", "dpm20", "dpm10"], "Sampler settings.")
_DEMO_CONFIG = flags.DEFINE_string("demo_config", os.path.join(os.path.dirname(__file__), "..", "configs", "demo.py"),
                                   "The demo config the workdir was made with.")

SETTINGS = {  # name -> base sampler fields (guidance scale: the demo's)
    "reference": dict(sampler="ddpm", respacing="250"),
    "ddim50": dict(sampler="ddim", respacing="ddim50"),
    "ddim25": dict(sampler="ddim", respacing="ddim25"),
    "dpm25": dict(sampler="dpm_solver_pp", steps=25),
    "dpm20": dict(sampler="dpm_solver_pp", steps=20),
    "dpm10": dict(sampler="dpm_solver_pp", steps=10),
}


def measure(config, workdir: str, name: str, evaluator: evaluation.Evaluator) -> dict:
  """Samples with one setting twice (compile, then timed) and evaluates the timed run."""
  scale = config.evaluation.base_sample.guidance_scale
  config.evaluation.base_sample = sample_config(guidance_scale=scale, **SETTINGS[name])
  config.evaluation.count = _COUNT.value
  sample = demo.sample_config(config, workdir, demo.export_dir(os.path.join(workdir, "stage2")),
                              demo.export_dir(os.path.join(workdir, "upsampler")), f"benchmark_{name}")
  sample.upsample_ground_truth = False
  out = os.path.join(workdir, "samples", f"benchmark_{name}")
  inference.run_pipeline(sample, out)  # compiles
  start = time.perf_counter()
  manifest = inference.run_pipeline(sample, out)
  seconds = time.perf_counter() - start
  result = evaluator.evaluate_folder(out)
  timings = manifest["timings"]
  return {
      "setting": name, "base_sampler": manifest["base"]["sampler"], "upsampler_sampler": manifest["upsampler"]["sampler"],
      "images": manifest["count"], "devices": jax.local_device_count(), "backend": jax.default_backend(),
      "base_size": manifest["base"]["image_size"], "upsampled_size": manifest["upsampler"]["image_size"],
      "base_evaluations_per_image": manifest["base"]["network_evaluations_per_image"],
      "upsampler_evaluations_per_image": manifest["upsampler"]["network_evaluations_per_image"],
      "pipeline_images_per_s": round(manifest["count"] / (timings["base_s"] + timings["upsample_s"]), 3),
      "run_s": round(seconds, 1), "layout_miou_base": round(result["layout"]["base"]["miou"], 4),
      "fid": round(result["fid"]["fid"], 2), "kid": round(result["fid"]["kid"], 5),
  }


def main(argv) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  config = load_config_file(_DEMO_CONFIG.value)
  evaluator = evaluation.Evaluator(config.evaluation.inception_weights, lpips=False)
  for name in _SETTINGS.value:
    if name not in SETTINGS:
      raise app.UsageError(f"unknown setting {name!r}; use {', '.join(SETTINGS)}")
    print(json.dumps(measure(config, _WORKDIR.value, name, evaluator)), flush=True)


if __name__ == "__main__":
  huge_pages.reexec_with_huge_pages()  # as `python -m piti_jax.main` runs
  app.run(main)
