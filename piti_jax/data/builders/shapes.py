"""The built-in `shapes` dataset: procedural scenes generated locally (no download).

Fields of every example (see `piti_jax.data.shapes_scenes` for the classes and palette):
  index     int64            scene index within its split (the scene is a pure function of (seed, split, index))
  image     uint8 (256,256,3) RGB
  image_64  uint8 (64,64,3)  `image` bicubic-resized to 64x64
  label     uint8 (256,256,1) class ids 0..9 (`shapes_scenes.CLASSES`)
  mask      uint8 (256,256,3) PITI colour-coded label map (VOC colormap at id + 1)
  sketch    uint8 (256,256,1) 255 on region, object and texture edges, 0 elsewhere
  distance  uint8 (256,256,1) taxicab distance to the nearest sketch edge, clipped at 255
  depth     uint8 (256,256,3) jet-rendered log depth (sky invalid, black), as PITI's DIODE preprocessing
  normal    uint8 (256,256,3) rendered normals ((n - min) / 2), sky black
  caption   text             e.g. "a red striped circle above a small blue checkered square on grass"

Sizes and seed are builder-config fields; `make_shapes_builder` names the config after them so
differently sized versions live side by side in one data_dir.
"""

import concurrent.futures
import dataclasses
import multiprocessing
import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from piti_jax.data import conditions, shapes_scenes
from piti_jax.data.builders.base import LocalBuilder
from piti_jax.data.builders.common import encode_png

SPLIT_IDS = {"train": 0, "validation": 1}
_CHUNK = 32


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
  """Sizes and seed of a `shapes` version."""

  train_size: int = 2000
  val_size: int = 200
  seed: int = 0


def shapes_config_name(train_size: int, val_size: int, seed: int) -> str:
  return f"train{train_size}_val{val_size}_seed{seed}"


def encode_scene(seed: int, split: int, index: int) -> dict:
  """Generates one scene and returns its tfds example (images as PNG bytes)."""
  scene = shapes_scenes.generate_scene(seed, split, index)
  image_64 = np.asarray(Image.fromarray(scene.image).resize((64, 64), Image.BICUBIC))
  return {
      "index": index,
      "image": encode_png(scene.image),
      "image_64": encode_png(image_64),
      "label": encode_png(scene.labels),
      "mask": encode_png(conditions.colorize_labels(scene.labels, num_classes=shapes_scenes.NUM_CLASSES)),
      "sketch": encode_png(scene.sketch),
      "distance": encode_png(conditions.sketch_distance_map(scene.sketch)),
      "depth": encode_png(conditions.render_depth(scene.depth, scene.depth_valid)),
      "normal": encode_png(conditions.render_normals(scene.normals)),
      "caption": scene.caption,
  }


def _encode_chunk(seed: int, split: int, indices: list[int]) -> list[dict]:
  return [encode_scene(seed, split, i) for i in indices]


class Shapes(LocalBuilder):
  """Procedural shape scenes with masks, sketches, depth/normal maps and captions."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  BUILDER_CONFIGS = [ShapesConfig(name=shapes_config_name(2000, 200, 0), description="2000 train / 200 validation")]

  def _info(self) -> tfds.core.DatasetInfo:
    image = lambda size, channels: tfds.features.Image(shape=(size, size, channels), dtype=np.uint8)
    return self.dataset_info_from_configs(
        description="Procedural scenes of textured shapes on sky/grass/water/sand, for PITI tests and demos.",
        features=tfds.features.FeaturesDict({
            "index": np.int64,
            "image": image(256, 3),
            "image_64": image(64, 3),
            "label": image(256, 1),
            "mask": image(256, 3),
            "sketch": image(256, 1),
            "distance": image(256, 1),
            "depth": image(256, 3),
            "normal": image(256, 3),
            "caption": tfds.features.Text(),
        }),
        supervised_keys=None,
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is generated.
    sizes = {"train": self.builder_config.train_size, "validation": self.builder_config.val_size}
    chunks = sum(-(-size // _CHUNK) for size in sizes.values())
    workers = min(os.cpu_count() or 1, 2, chunks)
    pool = None
    if workers > 1:  # spawned (not forked) workers are safe next to JAX and TensorFlow threads
      pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    remaining = [len(sizes)]

    def generate(split_name: str):
      try:
        yield from self._generate_examples(SPLIT_IDS[split_name], sizes[split_name], pool)
      finally:
        remaining[0] -= 1
        if pool is not None and remaining[0] == 0:
          pool.shutdown()

    return {split_name: generate(split_name) for split_name in sizes}

  def _generate_examples(self, split: int, size: int, pool):
    """Generates scenes in chunks of 32, on the worker pool when there is one."""
    seed = self.builder_config.seed
    chunks = [list(range(start, min(start + _CHUNK, size))) for start in range(0, size, _CHUNK)]
    if pool is None:
      results = (_encode_chunk(seed, split, chunk) for chunk in chunks)
    else:
      results = pool.map(_encode_chunk, [seed] * len(chunks), [split] * len(chunks), chunks)
    for examples in results:
      for example in examples:
        yield example["index"], example


def make_shapes_builder(data_dir: str, *, train_size: int = 2000, val_size: int = 200, seed: int = 0) -> Shapes:
  """A `Shapes` builder for the given sizes and seed, writing ArrayRecord files under data_dir."""
  name = shapes_config_name(train_size, val_size, seed)
  if name in Shapes.builder_configs:
    return Shapes(data_dir=data_dir, config=name, file_format="array_record")
  config = ShapesConfig(name=name, train_size=train_size, val_size=val_size, seed=seed,
                        description=f"{train_size} train / {val_size} validation")
  return Shapes(data_dir=data_dir, config=config, file_format="array_record")


def builder_from_config(config) -> Shapes:
  """The `shapes` builder for a data config (fields data_dir, train_size, val_size, seed)."""
  return make_shapes_builder(os.path.expanduser(config.data_dir), train_size=config.train_size,
                             val_size=config.val_size, seed=config.seed)
