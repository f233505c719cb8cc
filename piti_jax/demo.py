"""mode=demo: the PITI story on the built-in `shapes` dataset, on a CPU, ending in numbers.

One command (configs/demo.py) runs, in <workdir>:
  tfds/              the generated `shapes` dataset (train scenes + validation masks)
  prior/             a small text-to-image prior pretrained on shapes captions
  stage1/            PITI stage 1: a mask encoder trained against the frozen prior decoder
  stage2/            PITI stage 2: encoder and decoder finetuned together
  upsampler/         a small mask-conditioned upsampler (degraded low-res inputs)
  fresh/             the prior's decoder with a freshly initialised encoder (no finetuning)
  samples/<model>/   mode=sample output for the validation masks (base, upsampled, truth)
  report.json, report.md   every number, and the comparison table a person reads first
Each finished stage (its export, sample folder or report) is reused when the command runs
again, so an interrupted demo resumes where it stopped (a training stage resumes from its
last checkpoint). Progress lines give the stage, step, loss and ETA.
"""

import json
import time
from typing import Any, Callable

import jax
import ml_collections
from absl import logging

from piti_jax import storage
from piti_jax.errors import PitiError
from piti_jax.evaluation import runner as evaluation
from piti_jax.train import config as train_config
from piti_jax.train import loop

BASE_MODELS = ("fresh", "stage1", "stage2")  # rows of the report, in order


def _say(message: str) -> None:
  """A progress line on stdout (process 0)."""
  if jax.process_index() == 0:
    print(f"[demo] {message}", flush=True)


def _progress_line(stage: str, num_steps: int) -> Callable[[int, dict[str, float]], None]:
  """on_metrics hook of the train loop: one line with stage, step, loss and the loop's rate and ETA."""

  def report(step: int, values: dict[str, float]) -> None:
    speed = (f"  {values['steps_per_sec']:.2f} steps/s  ETA {values['eta_seconds'] / 60:.1f} min"
             if "steps_per_sec" in values else "")
    _say(f"{stage}: step {step}/{num_steps}  loss {values.get('loss', float('nan')):.4f}{speed}")

  return report


def export_dir(workdir: str) -> str | None:
  export = storage.path(workdir) / "export"
  if not export.is_dir():
    return None
  entries = sorted(e.name for e in export.iterdir() if not e.name.endswith(".tmp"))
  return str(export / entries[0]) if entries else None


def _merge(target: ml_collections.ConfigDict, changes: ml_collections.ConfigDict) -> None:
  """Sets every leaf of the nested `changes` in `target` (new keys are added)."""
  for key, value in changes.items():
    if isinstance(value, ml_collections.ConfigDict) and isinstance(target.get(key), ml_collections.ConfigDict):
      _merge(target[key], value)
    else:
      target[key] = value


def stage_config(config: ml_collections.ConfigDict, name: str, workdir: str,
                 init_dirs: dict[str, str] | None = None) -> ml_collections.ConfigDict:
  """The train config of one demo stage: the configs/shapes.py job plus the demo's settings.

  The dataset lives in <workdir>/tfds; init.<name> reads <workdir>/<earlier stage>, or
  init_dirs[<name>] when given (the experiments keep each stage in its own cache folder).
  """
  stage = config.stages[name]
  job = train_config.load_config_file(config.jobs_file, stage.job)
  job.seed = config.seed
  job.data.data_dir = str(storage.path(workdir) / "tfds")
  job.data.train_size, job.data.val_size = config.data.train_size, config.data.val_size
  job.train.num_steps = stage.steps
  job.train.global_batch_size = stage.batch_size
  job.optim.lr = stage.lr
  job.train.log_every = config.log_every
  job.train.save_every = config.save_every
  job.train.eval_every = 0
  job.train.sample_every = stage.steps  # one training grid at the end
  job.train.sample_batch_size = 8
  _merge(job, stage.overrides)
  job_init, job.init = job.init, ml_collections.ConfigDict()
  for init_name, source in stage.init.items():  # the job's init.<name> from an earlier stage's workdir
    if init_name not in job_init:
      raise PitiError(f"demo stage {name}: configs/shapes.py:{stage.job} has no init.{init_name}; "
                      f"it has {', '.join(job_init) or 'none'}.")
    job.init[init_name] = job_init[init_name]
    job.init[init_name].path = (init_dirs or {}).get(init_name) or str(storage.path(workdir) / source)
  return job


def train_stage(config: ml_collections.ConfigDict, name: str, workdir: str, stage_dir: str | None = None,
                init_dirs: dict[str, str] | None = None) -> tuple[str, bool]:
  """Trains (or resumes, or reuses) one stage in stage_dir (default <workdir>/<name>)
  -> (its exported model checkpoint, whether reused)."""
  stage_dir = stage_dir or str(storage.path(workdir) / name)
  export = export_dir(stage_dir)
  if export is not None:
    _say(f"{name}: done before, reusing {export}")
    return export, True
  job = stage_config(config, name, workdir, init_dirs)
  _say(f"{name}: {job.train.num_steps} steps of configs/shapes.py:{config.stages[name].job} "
       f"(batch {job.train.global_batch_size}, lr {job.optim.lr:g})")
  start = time.perf_counter()
  result = loop.train(job, stage_dir, on_metrics=_progress_line(name, job.train.num_steps))
  if result.preempted:
    raise PitiError(f"the demo was stopped during {name} at step {result.step}; run the same command to resume.")
  _say(f"{name}: finished in {(time.perf_counter() - start) / 60:.1f} min")
  return export_dir(stage_dir), False


def fresh_encoder_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> tuple[str, bool]:
  """The prior's decoder with a freshly initialised encoder (what stage 1 starts from), exported
  -> (its directory, whether reused)."""
  directory = str(storage.path(workdir) / "fresh")
  if storage.path(directory).is_dir():
    return directory, True
  from piti_jax.models import checkpoint as model_checkpoint  # pylint: disable=import-outside-toplevel
  from piti_jax.train import partition  # pylint: disable=import-outside-toplevel

  job = stage_config(config, "stage1", workdir)
  mesh = partition.make_mesh(job.mesh.data, job.mesh.fsdp)
  with jax.set_mesh(mesh):
    trainer = loop.Trainer(job, mesh)
    state = trainer.create_state_for(job.seed, job.init)
    params = jax.device_get(trainer.sample_params(state))
  model_checkpoint.save_checkpoint(directory, params, preset=job.model.preset, overrides=dict(job.model.overrides))
  return directory, False


def sample_config(config: ml_collections.ConfigDict, workdir: str, base: str, upsampler: str | None,
                  name: str) -> ml_collections.ConfigDict:
  """configs/sample.py settings for the demo's validation masks."""
  sample = train_config.load_config_file(config.sample_file, "")
  sample.seed = config.seed
  sample.input.split = "validation"
  sample.input.count = config.evaluation.count
  sample.data = stage_config(config, "stage2", workdir).data
  sample.base.checkpoint = base
  sample.base.sample = config.evaluation.base_sample
  sample.upsampler.checkpoint = upsampler or ""
  sample.upsampler.sample = config.evaluation.upsampler_sample
  sample.output_name = f"samples/{name}"
  sample.batch_size = config.evaluation.batch_size
  return sample


def sample_stage(config: ml_collections.ConfigDict, workdir: str, name: str, base: str,
                 upsampler: str | None) -> tuple[str, bool]:
  """Samples the validation masks with one base model (and the upsampler) -> (folder, whether reused)."""
  from piti_jax import inference  # pylint: disable=import-outside-toplevel

  folder = str(storage.path(workdir) / "samples" / name)
  if (storage.path(folder) / inference.MANIFEST).is_file():
    _say(f"samples/{name}: done before")
    return folder, True
  _say(f"samples/{name}: {config.evaluation.count} validation masks")
  manifest = inference.run_pipeline(sample_config(config, workdir, base, upsampler, name), folder)
  _say(f"samples/{name}: {manifest['timings']['total_s']:.0f} s ({manifest['timings']['images_per_s']:.2f} images/s)")
  return folder, False


def _earlier_timings(workdir: str) -> dict[str, dict]:
  """The timings of the report an earlier run wrote in `workdir` ({} if there is none)."""
  path = storage.path(workdir) / "report.json"
  if not path.is_file():
    return {}
  return json.loads(path.read_text()).get("timings", {})


def _number(value: Any, digits: int = 3) -> str:
  return "n/a" if value is None else f"{value:.{digits}f}"


def write_report(workdir: str, report: dict) -> str:
  """report.json (everything) and report.md (the comparison a person reads first)."""
  evaluation.write_json(storage.path(workdir) / "report.json", report)
  rows = report["models"]
  base_size = rows["stage2"]["manifest"]["base"]["image_size"]
  ceiling = rows["stage2"]["layout"]["ceiling_ground_truth"]
  lines = [
      "# piti-jax demo report",
      "",
      f"{rows['stage2']['count']} validation masks of the generated `shapes` dataset, one sample each "
      f"(seed {report['seed']}). Base samples are {base_size}x{base_size}; the upsampler takes stage 2's.",
      "",
      "| model | layout mIoU (base) | FID-style distance (base) | KID (base) | saturation |",
      "|---|---|---|---|---|",
  ]
  labels = {"fresh": "prior + fresh encoder (no finetuning)", "stage1": "stage 1 (encoder only)",
            "stage2": "stage 2 (encoder + decoder)"}
  for name in BASE_MODELS:
    row = rows[name]
    distance = row.get("fid_base", row.get("fid", {}))
    lines.append(f"| {labels[name]} | {_number(row['layout']['base']['miou'])} | {_number(distance.get('fid'), 1)} | "
                 f"{_number(distance.get('kid'), 4)} | {_number(row['colour']['base']['saturation'])} |")
  truth_colour = rows["stage2"]["colour"].get("ground_truth", {})
  lines.append(f"| ground truth (oracle ceiling) | {_number(ceiling[f'{base_size}px']['miou'])} | 0 | 0 | "
               f"{_number(truth_colour.get('saturation'))} |")
  final = rows["stage2"]
  if final["final"] == "upsampled":
    up_size = final["manifest"]["upsampler"]["image_size"]
    lines += ["", f"Upsampler ({base_size} -> {up_size}) on stage 2's samples: layout mIoU "
              f"{_number(final['layout']['upsampled']['miou'])} (ceiling {_number(ceiling[f'{up_size}px']['miou'])}), "
              f"FID-style distance {_number(final['fid']['fid'], 1)}"
              + (f", LPIPS against ground truth {_number(final['lpips_upsampler']['mean'])}"
                 if "lpips_upsampler" in final else "") + "."]
  lines += [
      "",
      "Layout mIoU: the colour-family oracle (`shapes_scenes.classify_pixels`) reads a label map from each sample;",
      "mIoU over the classes in the input masks. FID-style distance: Frechet distance of Inception pool features",
      f"(standard FID network, 256x256 bicubic) over only {final['count']} images, so it is biased upwards and only",
      "comparable within this table; KID is unbiased. Times and settings are in report.json.",
      "",
      "Grids (condition | base | upsampled | ground truth): " + ", ".join(
          f"[{name}](samples/{name}/grid.png)" for name in BASE_MODELS),
      "",
      "| stage | steps | minutes |", "|---|---|---|",
  ]
  for name, entry in report["timings"].items():
    lines.append(f"| {name} | {entry.get('steps', '')} | {entry['seconds'] / 60:.1f} |")
  path = storage.path(workdir) / "report.md"
  if storage.is_leader():
    storage.write_text(path, "\n".join(lines) + "\n")
  return str(path)


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Runner of mode=demo (see the module docstring)."""
  storage.prepare_workdir(workdir, create=storage.is_leader())
  start = time.perf_counter()
  timings: dict[str, dict] = {}
  earlier = _earlier_timings(workdir)

  def timed(name: str, function, *args, steps: int | None = None):
    """Runs one part; a part reused from an earlier run keeps the time that run measured."""
    t0 = time.perf_counter()
    value, reused = function(*args)
    timings[name] = {"seconds": time.perf_counter() - t0, **({"steps": steps} if steps else {})}
    if reused and name in earlier:
      timings[name] = dict(earlier[name], reused=True)
    return value

  exports = {name: timed(name, train_stage, config, name, workdir, steps=config.stages[name].steps)
             for name in config.stages}
  exports["fresh"] = timed("fresh encoder", fresh_encoder_checkpoint, config, workdir)
  folders = {name: timed(f"sample {name}", sample_stage, config, workdir, name, exports[name],
                         exports.get("upsampler") if name == "stage2" else None) for name in BASE_MODELS}
  _say("evaluating (FID network, layout oracle, colour statistics)")
  t0 = time.perf_counter()
  evaluator = evaluation.Evaluator(config.evaluation.inception_weights, batch_size=config.evaluation.fid_batch_size)
  models = {name: evaluator.evaluate_folder(folder) for name, folder in folders.items()}
  timings["evaluate"] = {"seconds": time.perf_counter() - t0}
  timings["total"] = {"seconds": sum(entry["seconds"] for entry in timings.values()),
                      "this_run_seconds": time.perf_counter() - start}
  report = {"seed": config.seed, "models": models, "timings": timings, "config": json.loads(config.to_json())}
  if jax.process_index() == 0:
    path = write_report(workdir, report)
    stage2 = models["stage2"]["layout"]["base"]["miou"]
    _say(f"done in {timings['total']['this_run_seconds'] / 60:.1f} min (all stages: "
         f"{timings['total']['seconds'] / 60:.1f} min); stage 2 layout mIoU {stage2:.3f}; see {path}")
  logging.info("demo finished")
