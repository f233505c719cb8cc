"""Dataset registry: data config -> tfds builder -> prepared ArrayRecord data source.

TensorFlow Datasets and the builder modules are imported only when a builder is made.
"""

import importlib
import os

import ml_collections

from piti_jax.data.config import check_data_config
from piti_jax.errors import PitiError

# name -> "module:function"; the function maps a data config to a tfds builder.
BUILDERS = {
    "shapes": "piti_jax.data.builders.shapes:builder_from_config",
    "coco_stuff": "piti_jax.data.builders.coco_stuff:builder_from_config",
    "ade20k": "piti_jax.data.builders.ade20k:builder_from_config",
    "coco_sketch": "piti_jax.data.builders.coco_sketch:builder_from_config",
    "diode": "piti_jax.data.builders.diode:builder_from_config",
    "text_pairs": "piti_jax.data.builders.text_pairs:builder_from_config",
}


def make_builder(config: ml_collections.ConfigDict):
  """The tfds builder (ArrayRecord format) for `config.name`, writing under config.data_dir."""
  check_data_config(config)
  module_name, function_name = BUILDERS[config.name].split(":")
  return getattr(importlib.import_module(module_name), function_name)(config)


def prepare_dataset(config: ml_collections.ConfigDict):
  """Builds the dataset into data_dir unless it is already there; returns the builder.

  Safe when several processes on one machine (or sharing a file system with working `flock`)
  call it at once: one prepares under an exclusive lock file in data_dir, the others wait and
  then read what it wrote. A remote data_dir (gs://...) has no lock: prepare it once beforehand
  (`python -m piti_jax.data ...`) before a multi-process job reads it.
  """
  builder = make_builder(config)
  if builder.is_prepared():
    return builder
  if not config.prepare:
    raise PitiError(f"dataset {config.name!r} is not prepared under {builder.data_dir}; set data.prepare=True "
                    "(or run the preparation once) so it is built there.")
  import fcntl

  import tensorflow_datasets as tfds

  manual_dir = os.path.expanduser(config.manual_dir) if config.manual_dir else None
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  data_dir = expanded_data_dir(config)
  if "://" in data_dir:  # a remote file system (gs://...) has no flock: prepare there from one process
    _download_and_prepare(builder, config, download_config)
    return make_builder(config)
  os.makedirs(data_dir, exist_ok=True)
  with open(os.path.join(data_dir, f".{config.name}.prepare.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      builder = make_builder(config)  # another process may have finished while this one waited
      if not builder.is_prepared():
        _download_and_prepare(builder, config, download_config)
        builder = make_builder(config)
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  return builder


def _download_and_prepare(builder, config: ml_collections.ConfigDict, download_config) -> None:
  """builder.download_and_prepare, with a split of no readable example reported as a PitiError."""
  try:
    builder.download_and_prepare(download_config=download_config)
  except AssertionError as error:  # tfds's writer asserts that a split yielded something
    if "No examples were yielded" not in str(error):
      raise
    skipped = getattr(getattr(builder, "bad_inputs", None), "skipped", [])
    first = f"; the first unreadable input: {skipped[0]['file']} ({skipped[0]['reason']})" if skipped else ""
    split = str(error).split('"')[1] if '"' in str(error) else "?"
    raise PitiError(f"no readable example was found for split {split!r} of dataset {config.name!r} in "
                    f"{config.manual_dir or builder.data_dir} ({len(skipped)} inputs skipped as unreadable{first}); "
                    "check or replace those files.") from error


def expanded_data_dir(config: ml_collections.ConfigDict) -> str:
  return os.path.expanduser(config.data_dir)
