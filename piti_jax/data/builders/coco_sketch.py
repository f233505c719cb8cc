"""COCO sketches: edge maps computed from COCO 2017 images in manual_dir (PITI's "coco-edge" data).

manual_dir layout: train2017/*.jpg and val2017/*.jpg (COCO 2017 images).
As PITI's preprocess_sketch: the RGB image is resized to 256x256 (bicubic) and its edges are
detected there; examples hold the 256x256 image (PNG) and the binary sketch (255 on edges).
Edge detectors (builder configs): "hed" (`piti_jax.data.hed`, BSDS500 weights from a local file,
edge probability > 0.6: the reference's sketches, which its released base_edge/upsample_edge weights
were trained on) and "canny" (`piti_jax.data.edges`, no weights). data.edge_detector="auto" (the
default) takes HED when data.hed_weights is given and falls back to Canny with a warning otherwise.

What Canny changes: it marks every strong intensity step one pixel wide, texture and shading
included, where HED draws the thicker object contours that people mark in BSDS500. The sketches
are denser and thinner, so the distance maps the encoder sees differ: a model finetuned on Canny
sketches is not the reference's, does not match its released sketch weights, expects Canny-like
input at sampling time, and its FID is not comparable with the paper's.
"""

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from piti_jax.data import edges
from piti_jax.data.config import edge_detector
from piti_jax.data.builders.base import LocalFilesBuilder
from piti_jax.data.builders.common import encode_png, list_names, read_image_bytes, require_files
from piti_jax.data.builders.segmentation import IMAGE_EXTENSIONS
from piti_jax.errors import PitiError

SIZE = 256
SPLITS = {"train": "train2017", "validation": "val2017"}
HOW = "Put the COCO 2017 images in <manual_dir>/train2017 and <manual_dir>/val2017."


@dataclasses.dataclass
class CocoSketchConfig(tfds.core.BuilderConfig):
  """Which edge detector makes the sketches."""

  detector: str = "hed"


class CocoSketch(LocalFilesBuilder):
  """COCO 2017 images with binary sketches for PITI's sketch task."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  BUILDER_CONFIGS = [CocoSketchConfig(name="hed", detector="hed", description="HED (BSDS500) edges > 0.6"),
                     CocoSketchConfig(name="canny", detector="canny", description="Canny-style edges, no weights")]

  def __init__(self, *, hed_weights: str = "", **kwargs):
    super().__init__(**kwargs)
    self._hed_weights = os.path.expanduser(hed_weights) if hed_weights else ""
    self._detector = None

  def _info(self) -> tfds.core.DatasetInfo:
    return self._info_with_metadata(
        description="COCO 2017 images at 256x256 with binary edge sketches.",
        features=tfds.features.FeaturesDict({
            "file_name": tfds.features.Text(),
            "image": tfds.features.Image(shape=(SIZE, SIZE, 3), dtype=np.uint8),
            "sketch": tfds.features.Image(shape=(SIZE, SIZE, 1), dtype=np.uint8),
        }))

  def _split_generators(self, dl_manager):
    del dl_manager  # Only the files in manual_dir; nothing is downloaded.
    require_files(self.manual_dir, list(SPLITS.values()), dataset="coco_sketch", how=HOW)
    return {split: self._generate_examples(split, folder) for split, folder in SPLITS.items()}

  def _detect(self, image: np.ndarray) -> np.ndarray:
    """uint8 (256, 256, 3) -> binary sketch uint8 (256, 256)."""
    if self.builder_config.detector == "canny":
      return edges.canny_sketch(image)
    if self._detector is None:
      if not self._hed_weights:
        raise PitiError("coco_sketch (hed) needs hed_weights, the path of HED's BSDS500 weights.")
      from piti_jax.data.hed import HedDetector

      self._detector = HedDetector(self._hed_weights)
    return self._detector(image)

  def _generate_examples(self, split: str, folder: str):
    start = len(self.bad_inputs.skipped)
    image_dir = os.path.join(self.manual_dir, folder)
    names = [n for n in list_names(image_dir) if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
    if not names:
      raise PitiError(f"no images (.jpg/.png) in {image_dir}. " + HOW)
    for name in names:
      read = read_image_bytes(os.path.join(image_dir, name), mode="RGB", bad_inputs=self.bad_inputs)
      if read is None:
        continue
      image = np.asarray(Image.fromarray(read[1]).resize((SIZE, SIZE), Image.BICUBIC))
      yield name, {"file_name": os.path.join(image_dir, name), "image": encode_png(image),
                   "sketch": encode_png(self._detect(image))}
    self.record_skipped(split, start)


def builder_from_config(config) -> CocoSketch:
  detector = edge_detector(config)
  if detector == "canny" and config.edge_detector == "auto":
    logging.warning("coco_sketch: no data.hed_weights given, so sketches come from Canny edges, not the reference's "
                    "HED edges (see piti_jax.data.builders.coco_sketch); pass HED's BSDS500 weights to match it.")
  return CocoSketch(data_dir=os.path.expanduser(config.data_dir), config=detector,
                    hed_weights=config.hed_weights, manual_dir=config.manual_dir,
                    on_bad_example=config.on_bad_example, file_format="array_record")
