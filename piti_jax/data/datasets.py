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

  In a multi-process job call this on one process per file system before the others read.
  """
  import tensorflow_datasets as tfds

  builder = make_builder(config)
  if builder.is_prepared():
    return builder
  if not config.prepare:
    raise PitiError(f"dataset {config.name!r} is not prepared under {builder.data_dir}; set data.prepare=True "
                    "(or run the preparation once) so it is built there.")
  manual_dir = os.path.expanduser(config.manual_dir) if config.manual_dir else None
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def expanded_data_dir(config: ml_collections.ConfigDict) -> str:
  return os.path.expanduser(config.data_dir)
