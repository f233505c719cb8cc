"""ADE20K scene parsing (ADEChallengeData2016, 150 classes) from local files.

manual_dir layout: the unpacked ADEChallengeData2016.zip, either as <manual_dir>/ADEChallengeData2016/...
or with manual_dir pointing at that folder:
  images/training/*.jpg, images/validation/*.jpg
  annotations/training/*.png, annotations/validation/*.png   (0 = other, 1..150 = classes)
Stored labels are 0-based (class k -> id k - 1; "other" -> 255 unlabelled), colour-coded like
COCO-Stuff (VOC colormap at id + 1, so class k gets colour index k).
"""

import os

import tensorflow_datasets as tfds

from piti_jax.data.builders.base import LocalFilesBuilder
from piti_jax.data.builders.common import require_files
from piti_jax.data.builders.segmentation import list_pairs, segmentation_example, segmentation_features

NUM_CLASSES = 150
SPLITS = {"train": "training", "validation": "validation"}
HOW = ("Unpack ADEChallengeData2016.zip (the MIT scene-parsing benchmark) into <manual_dir> so that "
       "<manual_dir>/ADEChallengeData2016/images/training and .../annotations/training exist.")


class Ade20k(LocalFilesBuilder):
  """ADE20K (SceneParsing150) semantic masks for PITI's mask task."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self._info_with_metadata(description="ADE20K images with colour-coded 150-class masks.",
                                    features=segmentation_features(tfds))

  def _root(self) -> str:
    nested = os.path.join(self.manual_dir, "ADEChallengeData2016")
    return nested if os.path.isdir(nested) else self.manual_dir

  def _split_generators(self, dl_manager):
    del dl_manager  # Local files only.
    root = self._root()
    needed = [os.path.join(kind, folder) for kind in ("images", "annotations") for folder in SPLITS.values()]
    if root == self.manual_dir:
      require_files(self.manual_dir, needed, dataset="ade20k", how=HOW)
    else:
      require_files(self.manual_dir, [os.path.join("ADEChallengeData2016", p) for p in needed], dataset="ade20k",
                    how=HOW)
    return {split: self._generate_examples(split, folder) for split, folder in SPLITS.items()}

  def _generate_examples(self, split: str, folder: str):
    start = len(self.bad_inputs.skipped)
    root = self._root()
    pairs = list_pairs(os.path.join(root, "images", folder), os.path.join(root, "annotations", folder), how=HOW)
    for image_path, label_path in pairs:
      example = segmentation_example(image_path, label_path, num_classes=NUM_CLASSES, label_offset=1,
                                     bad_inputs=self.bad_inputs)
      if example is not None:
        yield os.path.basename(image_path), example
    self.record_skipped(split, start)


def builder_from_config(config) -> Ade20k:
  return Ade20k(data_dir=os.path.expanduser(config.data_dir), manual_dir=config.manual_dir,
                on_bad_example=config.on_bad_example, file_format="array_record")
