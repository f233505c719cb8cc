"""The shapes study's shared machinery: training stages, samples and scores, cached by their settings.

Everything lives under one cache folder (`--cache`, default runs/experiments):
  tfds/                        the generated `shapes` dataset, shared by every run
  stages/<job>-<key>/          one training run; <key> hashes its settings, seed and init sources
  stages/<job>-<key>/at/<N>/   its averaged model after N steps (a run trained further keeps them)
  samples/<key>/               mode=sample output of one model under one sampler setting
  scores/<key>.json            the evaluation of one sample folder
  quick/                       the same for the --quick settings, on a smaller training set
A stopped experiment continues where it stopped: finished snapshots and scores are read
back, and an interrupted run resumes from its last checkpoint. The learning rate is
constant in these jobs, so a run trained to N steps and then on to M > N steps is the same
run as one trained to M directly (exact resume); the snapshots at N give the curves.

Sizes are the demo's (configs/demo.py): 16x16 base models from 64x64 masks (16 condition
tokens), a 16 -> 32 upsampler, batch 16 (upsampler 8), 2,000 training scenes, 64 validation masks.
"""

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import ml_collections

from piti_jax import demo, inference, param_paths
from piti_jax.errors import PitiError
from piti_jax.sampling import sample_config
from piti_jax.train import config as train_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEMO_CONFIG = os.path.join(ROOT, "configs", "demo.py")
DEFAULT_CACHE = os.path.join("runs", "experiments")
QUICK_TRAIN_SCENES = 256  # the --quick settings' training set (the full settings use the demo's 2,000)
RESULTS_DIR = os.path.join(ROOT, "docs", "results")


@dataclasses.dataclass(frozen=True)
class Stage:
  """One training run: a configs/shapes.py job at the demo's sizes.

  Attributes:
    job: the configs/shapes.py job ("pretrain", "stage1", "stage2", "upsample", ...).
    lr: peak (constant) learning rate.
    seed: model init, data order and step keys.
    init: (init name, earlier Stage, its steps) triples: the job's init.<name> reads that snapshot.
    settings: flattened job-config fields set last, e.g. (("data.train_subset", 100),).
  """

  job: str
  lr: float
  seed: int = 0
  batch_size: int = 16
  image_size: int = 16
  low_res_size: int = 0
  init: tuple[tuple[str, "Stage", int], ...] = ()
  settings: tuple[tuple[str, Any], ...] = ()

  def describe(self) -> dict[str, Any]:
    """Every setting, with init sources described recursively (what the cache key hashes)."""
    fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("init", "settings")}
    fields["init"] = {name: {"stage": source.describe(), "steps": steps} for name, source, steps in self.init}
    fields["settings"] = {name: value for name, value in self.settings}
    return fields

  @property
  def key(self) -> str:
    return f"{self.job}-{digest(self.describe())}"


def digest(value: Any) -> str:
  """A short stable hash of a JSON-able value."""
  return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _log(message: str) -> None:
  print(f"[experiments] {message}", flush=True)


class Cache:
  """Trains, samples and scores on demand; every result is stored under `root` and read back when asked again."""

  def __init__(self, root: str, count: int = 64, train_scenes: int = 0):
    """train_scenes: the generated training set's size (0: the demo's); keep one cache root per size."""
    self.root = os.path.abspath(root)
    self.count = count
    self.train_scenes = train_scenes
    self.seconds: dict[str, float] = {}  # measured compute of every part used so far, cached parts included
    self._evaluator = None
    os.makedirs(self.root, exist_ok=True)

  def demo_config(self, seed: int) -> ml_collections.ConfigDict:
    config = train_config.load_config_file(DEMO_CONFIG)
    config.seed = seed
    if self.train_scenes:
      config.data.train_size = self.train_scenes
    config.evaluation.count = self.count
    config.evaluation.batch_size = min(self.count, config.evaluation.batch_size)
    return config

  def train(self, stage: Stage, steps: int) -> str:
    """The averaged model of `stage` after `steps` steps (a model checkpoint directory); trains what is missing.

    A run is continued to later steps in its folder; steps earlier than its newest snapshot
    are trained in a folder of their own (<job>-<key>@<steps>).
    """
    run_dir = os.path.join(self.root, "stages", stage.key)
    done = sorted(int(n) for n in os.listdir(os.path.join(run_dir, "at"))) if os.path.isdir(
        os.path.join(run_dir, "at")) else []
    if done and done[-1] > steps and steps not in done:
      run_dir = f"{run_dir}@{steps}"
    snapshot = os.path.join(run_dir, "at", str(steps))
    if os.path.isdir(snapshot):
      self._used(snapshot, os.path.join(snapshot, "experiment_timing.json"), "seconds_since_last_snapshot")
      return snapshot
    init_dirs = {name: self.train(source, source_steps) for name, source, source_steps in stage.init}
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "stage.json"), "w") as f:
      json.dump(stage.describe(), f, indent=1, sort_keys=True, default=str)
    config = self.demo_config(stage.seed)
    config.stages[stage.job] = ml_collections.ConfigDict({
        "job": stage.job, "steps": steps, "batch_size": stage.batch_size, "lr": stage.lr,
        "init": {name: name for name, _, _ in stage.init},
        "overrides": param_paths.unflatten({"data.image_size": stage.image_size, "model.overrides.image_size": stage.image_size,
                              **({"data.low_res_size": stage.low_res_size} if stage.low_res_size else {}),
                              **dict(stage.settings)})})
    start = time.perf_counter()
    export, _ = demo.train_stage(config, stage.job, self.root, run_dir, init_dirs)
    seconds = time.perf_counter() - start
    os.makedirs(os.path.dirname(snapshot), exist_ok=True)
    shutil.move(export, snapshot)
    shutil.rmtree(os.path.join(run_dir, "export"), ignore_errors=True)
    with open(os.path.join(snapshot, "experiment_timing.json"), "w") as f:
      json.dump({"steps": steps, "seconds_since_last_snapshot": seconds}, f)
    self._used(snapshot, os.path.join(snapshot, "experiment_timing.json"), "seconds_since_last_snapshot")
    return snapshot

  def _used(self, name: str, record: str, field: str) -> None:
    with open(record) as f:
      self.seconds[name] = json.load(f).get(field, 0.0)

  def sample(self, base: str, upsampler: str | None = None, seed: int = 0, base_sample: dict | None = None,
             upsampler_sample: dict | None = None, upsample_samples: bool = True) -> str:
    """mode=sample on the validation masks -> the sample folder (base, upsampled, condition, ground truth).

    upsample_samples=False: the upsampler runs only on the real low-res images (upsampled_truth),
    for scoring the upsampler alone.
    """
    config = self.demo_config(seed)
    if base_sample is not None:
      config.evaluation.base_sample = sample_config(**base_sample)
    if upsampler_sample is not None:
      config.evaluation.upsampler_sample = sample_config(**upsampler_sample)
    key = digest({"base": base, "upsampler": upsampler, "seed": seed, "count": self.count,
                  "base_sample": config.evaluation.base_sample.to_dict(),
                  "upsampler_sample": config.evaluation.upsampler_sample.to_dict() if upsampler else None,
                  "upsample_samples": upsample_samples})
    folder = os.path.join(self.root, "samples", key)
    if not os.path.isfile(os.path.join(folder, inference.MANIFEST)):
      _log(f"sampling {self.count} masks with {os.path.relpath(base, self.root)} -> samples/{key}")
      sample = demo.sample_config(config, self.root, base, upsampler, key)
      sample.upsample_samples = upsample_samples
      inference.run_pipeline(sample, folder)
    with open(os.path.join(folder, inference.MANIFEST)) as f:
      self.seconds[folder] = json.load(f)["timings"]["total_s"]
    return folder

  def score(self, folder: str) -> dict[str, Any]:
    """The numbers of one sample folder (cached): layout mIoU, FID/KID, saturation, LPIPS, timings."""
    path = os.path.join(self.root, "scores", os.path.basename(folder) + ".json")
    if os.path.isfile(path):
      self._used(path, path, "score_seconds")
      with open(path) as f:
        return json.load(f)
    start = time.perf_counter()
    if self._evaluator is None:
      from piti_jax.evaluation import runner  # pylint: disable=import-outside-toplevel

      self._evaluator = runner.Evaluator(batch_size=32)
    result = self._evaluator.evaluate_folder(folder)
    final = result["final"]
    manifest = result["manifest"]
    score = {
        "miou": result["layout"][final]["miou"], "miou_base": result["layout"]["base"]["miou"],
        "fid": result["fid"]["fid"], "kid": result["fid"]["kid"],
        "fid_base": result.get("fid_base", result["fid"])["fid"],
        "saturation": result["colour"][final]["saturation"], "colour": result["colour"][final],
        "saturation_truth": result["colour"]["ground_truth"]["saturation"],
        "ceiling": result["layout"]["ceiling_ground_truth"],
        "lpips": result.get("lpips_upsampler", {}).get("mean"),
        "sample_seconds": manifest["timings"]["total_s"],
        "network_evaluations": {name: manifest[name]["network_evaluations_per_image"]
                                for name in ("base", "upsampler") if manifest.get(name)},
        "count": result["count"],
    }
    if "upsampled_truth" in manifest["folders"]:  # the upsampler on real low-res inputs, against the truth
      from piti_jax.evaluation import runner  # pylint: disable=import-outside-toplevel

      names = manifest["names"]
      score["fid_upsampled_truth"] = self._evaluator.distances(
          runner.read_images(os.path.join(folder, "upsampled_truth"), names),
          runner.read_images(os.path.join(folder, "ground_truth"), names))["fid"]
    score["score_seconds"] = time.perf_counter() - start
    self.seconds[path] = score["score_seconds"]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      json.dump(score, f, indent=1)
    return score


def spread(values: Sequence[float]) -> dict[str, Any]:
  """Mean, min, max and the values themselves (one per seed)."""
  values = [float(v) for v in values]
  return {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "values": values}


def show(summary: dict[str, Any], digits: int = 3) -> str:
  """'0.123 (0.110-0.140)' for a spread over seeds, '0.123' for one seed."""
  mean = f"{summary['mean']:.{digits}f}"
  if len(summary["values"]) < 2:
    return mean
  return f"{mean} ({summary['min']:.{digits}f}-{summary['max']:.{digits}f})"


@dataclasses.dataclass
class Setting:
  """What one invocation runs: quick or full, seeds, image count, cache and output folders."""

  quick: bool
  seeds: tuple[int, ...]
  count: int
  cache: Cache
  out_dir: str
  command: str


def parse_args(name: str, description: str, argv: Sequence[str] | None = None) -> Setting:
  """--quick / --seeds / --count / --cache / --out, shared by every experiment script."""
  parser = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=description)
  parser.add_argument("--quick", action="store_true", help="the small setting (under 10 minutes on 2 CPU cores)")
  parser.add_argument("--seeds", default="", help="comma-separated seeds (default: 0,1; --quick: 0)")
  parser.add_argument("--count", type=int, default=0, help="validation masks sampled (default 64; --quick 16)")
  parser.add_argument("--cache", default=DEFAULT_CACHE, help="where runs, samples and scores are kept")
  parser.add_argument("--out", default="", help="where the result JSON and plots go (default docs/results, "
                      "--quick: <cache>/quick/results)")
  args = parser.parse_args(argv)
  seeds = tuple(int(s) for s in args.seeds.split(",") if s) or ((0,) if args.quick else (0, 1))
  count = args.count or (16 if args.quick else 64)
  out_dir = args.out or (os.path.join(args.cache, "quick", "results") if args.quick else RESULTS_DIR)
  command = " ".join(["python -m", f"experiments.{name}", *(argv if argv is not None else sys.argv[1:])])
  cache = (Cache(os.path.join(args.cache, "quick"), count, QUICK_TRAIN_SCENES) if args.quick
           else Cache(args.cache, count))
  return Setting(quick=args.quick, seeds=seeds, count=count, cache=cache, out_dir=out_dir, command=command)


def write_result(setting: Setting, name: str, result: dict[str, Any], started: float) -> str:
  """<out>/<name>.json with the command, setting, seeds and wall time beside the result; then
  regenerates <out>/../results.md when out is docs/results."""
  record = {"experiment": name, "command": setting.command, "setting": "quick" if setting.quick else "full",
            "seeds": list(setting.seeds), "count": setting.count,
            "wall_seconds": time.perf_counter() - started,
            "compute_seconds": sum(setting.cache.seconds.values()), **result}
  os.makedirs(setting.out_dir, exist_ok=True)
  path = os.path.join(setting.out_dir, f"{name}.json")
  with open(path, "w") as f:
    json.dump(record, f, indent=1)
  from experiments import report  # pylint: disable=import-outside-toplevel

  report.write_markdown(setting.out_dir)
  _log(f"wrote {path} ({record['wall_seconds'] / 60:.1f} min)")
  return path


def for_seeds(setting: Setting, measure: Callable[[int], dict[str, float]]) -> dict[str, dict[str, Any]]:
  """Runs measure(seed) for every seed -> {metric: spread over seeds}."""
  per_seed = [measure(seed) for seed in setting.seeds]
  return {metric: spread([values[metric] for values in per_seed]) for metric in per_seed[0]}


@dataclasses.dataclass(frozen=True)
class Recipe:
  """The demo's runs (configs/demo.py's stages: jobs, rates, batch sizes, image sizes, step counts)."""

  seed: int
  steps: dict[str, int]
  prior: Stage
  stage1: Stage
  stage2: Stage
  upsampler: Stage


def demo_recipe(seed: int, **steps: int) -> Recipe:
  """configs/demo.py's prior -> stage 1 -> stage 2 chain and upsampler for `seed`; `steps` overrides
  the step counts (prior=, stage1=, stage2=, upsampler=) of the runs the later ones start from."""
  stages = train_config.load_config_file(DEMO_CONFIG).stages

  def stage(name: str, init: tuple = ()) -> Stage:
    entry = stages[name]
    data = entry.overrides.data
    return Stage(entry.job, entry.lr, seed, batch_size=entry.batch_size, image_size=data.image_size,
                 low_res_size=data.get("low_res_size", 0), init=init)

  counts = {name: steps.get(name, stages[name].steps) for name in stages}
  prior = stage("prior")
  stage1 = stage("stage1", (("prior", prior, counts["prior"]),))
  stage2 = stage("stage2", (("prior", prior, counts["prior"]), ("stage1", stage1, counts["stage1"])))
  return Recipe(seed=seed, steps=counts, prior=prior, stage1=stage1, stage2=stage2, upsampler=stage("upsampler"))


def pyplot():
  """matplotlib's pyplot on the file-only Agg backend."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

  return plt


def save_figure(figure: Any, out_dir: str, file: str, caption: str) -> dict[str, str]:
  """Writes <out_dir>/<file> and closes the figure -> the plot entry of a result."""
  figure.tight_layout()
  os.makedirs(out_dir, exist_ok=True)
  figure.savefig(os.path.join(out_dir, file), dpi=100)
  pyplot().close(figure)
  return {"file": file, "caption": caption}
