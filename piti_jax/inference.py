"""mode=sample: condition images -> base model (64x64) -> upsampler (256x256) -> PNGs.

Inputs (config.input): condition files (a folder, or a comma-separated list of files;
for the depth task a folder of `<name>_normal.png` + `<name>_depth.png` pairs or a list
of `normal.png+depth.png` pairs) or a prepared dataset split (config.data with
input.split, e.g. the `shapes` validation masks; then the ground truth is written too).

Pipeline (PITI_SPEC.md sections 3 and 7): the base model samples at its resolution with
config.base.sample (default: the reference's DDPM over "250" steps with plain guidance at
1.3); its output is quantised to 8 bits, rounding to the nearest level (the reference
truncates), and given as the low-res input to the upsampler, which samples with
config.upsampler.sample (default: the reference's fast27, temperature 0.997, no guidance).
Either checkpoint is a model checkpoint (converted from the public release, or exported by
a training run) or a training workdir (its export/ is used).

Output (<workdir>/<output_name>/), written under a temporary name and renamed when complete,
so a failed run leaves nothing that looks finished:
  condition/<name>.png     the condition as the encoder saw it (first 3 channels)
  base/<name>.png          base samples (e.g. 64x64)
  upsampled/<name>.png     upsampler samples (e.g. 256x256), when an upsampler is given (and
                           config.upsample_samples, the default)
  ground_truth/<name>.png  dataset input only: the real image at the upsampler's (or base) size
  upsampled_truth/<name>.png  dataset input with an upsampler: the upsampler applied to the
                           real image's 8-bit low-res version (for LPIPS against ground truth)
  grid.png                 condition | base | upsampled [| ground truth], one row per image
  manifest.json            checkpoints, samplers, guidance, seed, names, network evaluations, timings
"""

import dataclasses
import functools
import io
import json
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from PIL import Image

from piti_jax import grids, sampling, storage
from piti_jax.data import conditions
from piti_jax.errors import PitiError
from piti_jax.models import checkpoint as model_checkpoint
from piti_jax.train import partition

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
MANIFEST = "manifest.json"


def palette_classes(dataset: str) -> int | None:
  """Number of classes of a dataset's colour palette (None: do not check mask colours)."""
  if dataset == "shapes":
    from piti_jax.data.shapes_scenes import NUM_CLASSES  # pylint: disable=import-outside-toplevel
  elif dataset == "coco_stuff":
    from piti_jax.data.builders.coco_stuff import NUM_CLASSES  # pylint: disable=import-outside-toplevel
  elif dataset == "ade20k":
    from piti_jax.data.builders.ade20k import NUM_CLASSES  # pylint: disable=import-outside-toplevel
  else:
    return None
  return NUM_CLASSES


@dataclasses.dataclass
class Inputs:
  """The images to sample for.

  names: output file stem per image.
  condition: function size -> float32 (N, size, size, C) in [-1, 1], the condition at a model's cond_size.
  truth: uint8 (N, S, S, 3) real images (dataset input) or None.
  source: description for the manifest.
  """
  names: list[str]
  condition: Callable[[int], np.ndarray]
  truth: np.ndarray | None
  source: str


def _condition_files(spec: str, task: str) -> list[tuple[str, Any]]:
  """(name, path or (normal, depth) paths) per condition named by input.paths."""
  folder = storage.path(spec)
  if folder.is_dir():
    if task == "depth":
      normals = sorted(str(n) for n in folder.glob("*_normal.png"))
      pairs = [(storage.path(n).name[:-len("_normal.png")], (n, n[:-len("_normal.png")] + "_depth.png"))
               for n in normals]
      for _, (_, depth) in pairs:
        if not storage.path(depth).is_file():
          raise PitiError(f"{depth} is missing: the depth task needs <name>_normal.png and <name>_depth.png pairs.")
      files = pairs
    else:
      files = [(f.stem, str(f)) for f in sorted(folder.iterdir()) if f.name.lower().endswith(IMAGE_SUFFIXES)]
    if not files:
      wanted = "<name>_normal.png + <name>_depth.png pairs" if task == "depth" else ", ".join(IMAGE_SUFFIXES)
      raise PitiError(f"input folder {spec} has no condition images ({wanted}); "
                      "put the condition PNGs there or pass input.paths=file1,file2.")
    return files
  files = []
  for item in (p.strip() for p in spec.split(",") if p.strip()):
    if task == "depth":
      parts = item.split("+")
      if len(parts) != 2:
        raise PitiError(f"input {item!r}: the depth task takes normal.png+depth.png pairs.")
      files.append((storage.path(parts[0]).stem, tuple(parts)))
    else:
      if not storage.path(item).exists():
        raise PitiError(f"condition file {item} does not exist; pass existing files or a folder in input.paths.")
      files.append((storage.path(item).stem, item))
  if not files:
    raise PitiError("input.paths is empty; pass a folder or comma-separated condition files, or input.split.")
  return files


def read_file_inputs(spec: str, task: str, num_classes: int | None) -> Inputs:
  """Condition files -> Inputs; a file is read (and checked) when a condition size is first asked for."""
  files = _condition_files(spec, task)
  names = [name for name, _ in files]
  if len(set(names)) != len(names):
    raise PitiError(f"input.paths names two files with the same stem ({', '.join(sorted(names))}); rename one.")

  @functools.cache
  def condition(size: int) -> np.ndarray:
    return np.stack([conditions.read_condition(paths, task, size=size, num_classes=num_classes) for _, paths in files])

  return Inputs(names=names, condition=condition, truth=None, source=spec)


def read_dataset_inputs(data: ml_collections.ConfigDict, split: str, count: int, truth_size: int) -> Inputs:
  """The first `count` examples of a prepared dataset split (0 = all) -> Inputs with ground truth."""
  from piti_jax.data import pipeline  # pylint: disable=import-outside-toplevel

  source = pipeline.open_data_source(data, split)
  total = len(source)
  count = total if count <= 0 else count
  if count > total:
    raise PitiError(f"input.count={count} exceeds the {total} examples of split {split!r}; lower it.")

  @functools.cache
  def examples(size: int) -> dict[str, np.ndarray]:
    cfg = ml_collections.ConfigDict(data.to_dict())
    cfg.low_res_size, cfg.uncond_p = 0, 0.0
    cfg.condition_size, cfg.image_size = size, truth_size
    cfg.load_size = max(cfg.load_size, size, truth_size)
    transform = pipeline.make_transform(cfg, augment=False)
    rows = [transform.random_map(source[i], np.random.default_rng(i)) for i in range(count)]
    return {k: np.stack([row[k] for row in rows]) for k in ("image", "condition")}

  return Inputs(names=[f"{i:06d}" for i in range(count)], condition=lambda size: examples(size)["condition"],
                truth=grids.to_uint8(examples(data.condition_size)["image"]),
                source=f"{data.name}:{split}[:{count}]")


def resolve_checkpoint(path: str, what: str) -> str:
  """A model checkpoint directory: `path` itself, or a training workdir's single export."""
  if not path:
    raise PitiError(f"config.{what}.checkpoint is empty; pass a model checkpoint or a training workdir.")
  directory = storage.path(path)
  if (directory / model_checkpoint.CONFIG_FILE).is_file():
    return path
  exports = sorted(str(e.parent) for e in directory.glob(f"export/*/{model_checkpoint.CONFIG_FILE}"))
  if len(exports) == 1:
    return exports[0]
  if not directory.exists():
    raise PitiError(f"config.{what}.checkpoint={path} does not exist; check the path.")
  if len(exports) > 1:
    raise PitiError(f"{path} has several exports ({', '.join(exports)}); pass one.")
  raise PitiError(f"config.{what}.checkpoint={path} is neither a model checkpoint (no "
                  f"{model_checkpoint.CONFIG_FILE}) nor a finished training workdir (no export/); "
                  "convert the release weights with piti_jax.convert or finish the training run.")


@dataclasses.dataclass
class LoadedModel:
  """A checkpoint ready to sample: its directory, architecture and sampler; params on first use."""
  directory: str
  config: Any
  sampler: sampling.Sampler

  @functools.cached_property
  def params(self) -> Any:
    """The parameters, read from the checkpoint and placed on the sampler's mesh."""
    return jax.device_put(model_checkpoint.load_params(self.directory, self.config), self.sampler.param_shardings)


def load_model(path: str, what: str, group: ml_collections.ConfigDict, mesh, dtype: str) -> LoadedModel:
  """config.<what> (checkpoint, schedule, num_timesteps, sample) on `mesh`; the weights are read when
  first used, so bad inputs are reported before any large file is read."""
  directory = resolve_checkpoint(path, what)
  config = model_checkpoint.load_config(directory)
  sampler = sampling.model_sampler(config, dtype, group.schedule, group.num_timesteps,
                                   sampling.sampling_config(group.sample), mesh)
  return LoadedModel(directory=directory, config=config, sampler=sampler)


def _check_pair(base: LoadedModel, upsampler: LoadedModel | None, task: str) -> None:
  for model, what in ((base, "base"), (upsampler, "upsampler")):
    if model is None:
      continue
    if model.config.family != "piti":
      raise PitiError(f"config.{what}.checkpoint {model.directory} is a {model.config.family} text-to-image model; "
                      "mode=sample needs PITI models (task encoder + decoder).")
    if model.config.task != task:
      raise PitiError(f"config.{what}.checkpoint {model.directory} was trained for task {model.config.task!r}, "
                      f"but config.task={task!r}; use matching checkpoints or change config.task.")
  if base.config.super_res:
    raise PitiError(f"config.base.checkpoint {base.directory} is an upsampler; pass a base model.")
  if upsampler is not None and not upsampler.config.super_res:
    raise PitiError(f"config.upsampler.checkpoint {upsampler.directory} is not an upsampler (no low-res input).")


def _sample_all(model: LoadedModel, cond: np.ndarray, low_res: np.ndarray | None, key: jax.Array,
                batch_size: int) -> np.ndarray:
  """Samples every row of `cond` (image i with key fold_in(key, i)) in padded batches -> uint8 (N, H, W, 3)."""
  sampler, size = model.sampler, model.config.image_size
  batch = sampler.pad_to(min(batch_size, len(cond)))
  out = []
  for start in range(0, len(cond), batch):
    index = np.arange(start, start + batch)
    take = np.minimum(index, len(cond) - 1)  # the padding repeats the last row
    images = sampler(model.params, cond[take], None if low_res is None else low_res[take], key, index,
                     (batch, size, size, 3))
    out.append(grids.to_uint8(multihost_utils.process_allgather(images, tiled=True))[:len(cond) - start])
  return np.concatenate(out)


def _png(image: np.ndarray) -> bytes:
  """uint8 (H, W, C) with C = 1 or 3 -> PNG bytes."""
  buffer = io.BytesIO()
  Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(buffer, format="PNG")
  return buffer.getvalue()


def _save_pngs(directory, names: list[str], images: np.ndarray) -> None:
  directory.mkdir(parents=True, exist_ok=True)
  for name, image in zip(names, images):
    (directory / f"{name}.png").write_bytes(_png(image))


def _unit(images: np.ndarray) -> np.ndarray:
  return images.astype(np.float32) / 127.5 - 1.0


def run_pipeline(config: ml_collections.ConfigDict, out_dir: str) -> dict:
  """Samples config.input and writes `out_dir` (via a temporary folder, process 0 only); returns the manifest.

  Everything that can fail on bad input (checkpoints, condition files, dataset) is checked
  before the first sample is drawn and before anything is written.
  """
  start = time.perf_counter()
  mesh = partition.make_mesh(config.mesh.data, config.mesh.fsdp)
  base = load_model(config.base.checkpoint, "base", config.base, mesh, config.dtype)
  upsampler = (load_model(config.upsampler.checkpoint, "upsampler", config.upsampler, mesh, config.dtype)
               if config.upsampler.checkpoint else None)
  _check_pair(base, upsampler, config.task)
  upsamples_truth = bool(config.input.split) and config.upsample_ground_truth
  if upsampler is not None and not config.upsample_samples and not upsamples_truth:
    raise PitiError("config.upsample_samples=False leaves the upsampler nothing to do: it then upsamples only the "
                    "real low-res images of a dataset split; set config.input.split (and upsample_ground_truth=True), "
                    "or set upsample_samples=True.")
  final_size = (upsampler or base).config.image_size
  if config.input.split:
    inputs = read_dataset_inputs(config.data, config.input.split, config.input.count, final_size)
  else:
    inputs = read_file_inputs(config.input.paths, config.task, palette_classes(config.data.name))
  base_cond = inputs.condition(base.config.cond_size)
  up_cond = inputs.condition(upsampler.config.cond_size) if upsampler else None
  timings = {"load_s": time.perf_counter() - start}
  logging.info("sampling %d images from %s", len(inputs.names), inputs.source)

  key = jax.random.key(config.seed)
  images = {"condition": grids.to_uint8(base_cond[..., :3])}
  t0 = time.perf_counter()
  images["base"] = _sample_all(base, base_cond, None, jax.random.fold_in(key, 0), config.batch_size)
  timings["base_s"] = time.perf_counter() - t0
  if upsampler is not None and config.upsample_samples:
    t0 = time.perf_counter()
    images["upsampled"] = _sample_all(upsampler, up_cond, _unit(images["base"]), jax.random.fold_in(key, 1),
                                      config.batch_size)
    timings["upsample_s"] = time.perf_counter() - t0
  if inputs.truth is not None:
    images["ground_truth"] = inputs.truth
    if upsampler is not None and config.upsample_ground_truth:
      low = np.stack([np.asarray(Image.fromarray(im).resize((base.config.image_size,) * 2, Image.BICUBIC))
                      for im in inputs.truth])
      t0 = time.perf_counter()
      images["upsampled_truth"] = _sample_all(upsampler, up_cond, _unit(low), jax.random.fold_in(key, 2),
                                              config.batch_size)
      timings["upsample_truth_s"] = time.perf_counter() - t0
  timings["total_s"] = time.perf_counter() - start
  timings["images_per_s"] = len(inputs.names) / (timings["base_s"] + timings.get("upsample_s", 0.0))
  grid_columns = [name for name in ("condition", "base", "upsampled", "ground_truth") if name in images]
  manifest = {
      "count": len(inputs.names), "names": inputs.names, "source": inputs.source, "task": config.task,
      "dataset": config.data.name if config.input.split else "", "seed": config.seed,
      "base": _describe(base), "upsampler": _describe(upsampler) if upsampler else None,
      "quantisation": "base output to 8 bits, rounded to the nearest level", "folders": sorted(images),
      "grid_columns": grid_columns, "devices": mesh.size, "timings": timings,
  }
  if jax.process_index() == 0:
    shown = min(len(inputs.names), config.grid_rows)
    grid = grids.make_grid([images[name][:shown] for name in grid_columns], (final_size, final_size))
    _write_folder(out_dir, inputs.names, images, grid, manifest)
  return manifest


def _write_folder(out_dir: str, names: list[str], images: dict[str, np.ndarray], grid: np.ndarray,
                  manifest: dict) -> None:
  """Writes every image set, the grid and the manifest into out_dir.tmp, then renames it to out_dir."""
  out_dir = storage.path(out_dir)
  tmp_dir = out_dir.parent / f"{out_dir.name}.tmp"
  storage.remove_tree(tmp_dir)
  for folder, array in images.items():
    _save_pngs(tmp_dir / folder, names, array)
  (tmp_dir / "grid.png").write_bytes(_png(grid))
  (tmp_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
  storage.remove_tree(out_dir)
  tmp_dir.rename(out_dir)


def _describe(model: LoadedModel) -> dict:
  return {"checkpoint": str(storage.path(model.directory)), "preset": model.config.name,
          "image_size": model.config.image_size, "sampler": model.sampler.config.describe(),
          "network_evaluations_per_image": model.sampler.network_evaluations}


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Runner of mode=sample (see piti_jax/main.py)."""
  out_dir = storage.path(workdir) / config.output_name
  manifest = run_pipeline(config, out_dir)
  logging.info("wrote %d samples to %s in %.1f s (%.2f images/s)", manifest["count"], out_dir,
               manifest["timings"]["total_s"], manifest["timings"]["images_per_s"])
