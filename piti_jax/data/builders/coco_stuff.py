"""COCO-Stuff 2017 (images + stuffthingmaps) from the files in manual_dir (local or gs://).

manual_dir layout (the official downloads, unpacked):
  train2017/<id>.jpg, val2017/<id>.jpg                       COCO 2017 images
  stuffthingmaps_trainval2017/train2017/<id>.png, .../val2017/<id>.png   class-id maps (0..181, 255 unlabelled)
Examples: file_name, image (original file), label (ids), mask (VOC colours at id + 1, 255 black),
for the splits train and validation.
"""

import os

import tensorflow_datasets as tfds

from piti_jax.data.builders.base import LocalFilesBuilder
from piti_jax.data.builders.common import require_files
from piti_jax.data.builders.segmentation import list_pairs, segmentation_example, segmentation_features

NUM_CLASSES = 182
SPLITS = {"train": "train2017", "validation": "val2017"}
LABEL_DIR = "stuffthingmaps_trainval2017"
HOW = ("Put the COCO 2017 images in <manual_dir>/train2017 and <manual_dir>/val2017 and unpack "
       "stuffthingmaps_trainval2017.zip (COCO-Stuff) into <manual_dir>/stuffthingmaps_trainval2017.")


class CocoStuff(LocalFilesBuilder):
  """COCO-Stuff 2017 semantic masks (182 classes) for PITI's mask task."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self._info_with_metadata(description="COCO-Stuff 2017 images with colour-coded class masks.",
                                    features=segmentation_features(tfds))

  def _split_generators(self, dl_manager):
    del dl_manager  # Only the files in manual_dir; nothing is downloaded.
    needed = [d for d in SPLITS.values()] + [os.path.join(LABEL_DIR, d) for d in SPLITS.values()]
    require_files(self.manual_dir, needed, dataset="coco_stuff", how=HOW)
    return {split: self._generate_examples(split, folder) for split, folder in SPLITS.items()}

  def _generate_examples(self, split: str, folder: str):
    start = len(self.bad_inputs.skipped)
    pairs = list_pairs(os.path.join(self.manual_dir, folder), os.path.join(self.manual_dir, LABEL_DIR, folder),
                       how=HOW)
    for image_path, label_path in pairs:
      example = segmentation_example(image_path, label_path, num_classes=NUM_CLASSES, label_offset=0,
                                     bad_inputs=self.bad_inputs)
      if example is not None:
        yield os.path.basename(image_path), example
    self.record_skipped(split, start)


def builder_from_config(config) -> CocoStuff:
  return CocoStuff(data_dir=os.path.expanduser(config.data_dir), manual_dir=config.manual_dir,
                   on_bad_example=config.on_bad_example, file_format="array_record")
