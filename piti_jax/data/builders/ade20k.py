"""ADE20K from the files in manual_dir, in two encodings of the condition (builder configs, data.ade20k_source).

"challenge" (the default): the scene-parsing benchmark ADEChallengeData2016, 150 classes. manual_dir
holds the unpacked ADEChallengeData2016.zip, either as <manual_dir>/ADEChallengeData2016/... or with
manual_dir pointing at that folder:
  images/training/*.jpg, images/validation/*.jpg
  annotations/training/*.png, annotations/validation/*.png   (0 = other, 1..150 = classes)
Stored labels are 0-based (class k -> id k - 1; "other" -> 255 unlabelled), colour-coded like
COCO-Stuff (VOC colormap at id + 1, so class k gets colour index k). Fields: file_name, image,
label, mask.

"full_release": what the reference feeds its encoder. Its list files name images of the full ADE20K
release and it reads `<image without .jpg>_seg.png` as RGB, as it is: red and green encode one of
the release's ~3,000 classes (R / 10 * 256 + G), blue the instance, so two objects of one class
get different colours. manual_dir holds an unpacked full release (ADE20K_2016_07_26 or
ADE20K_2021_17_01); every `<name>.jpg` with a `<name>_seg.png` beside it is an example, in split
"train" when its path has a `training` folder and "validation" when it has a `validation` folder.
Fields: file_name, image, mask (the _seg.png colours). There is no `label` field: those class ids do
not fit 8 bits and are not the benchmark's 150 classes.

Why "challenge" is the default: the benchmark's 150 classes are what ADE20K results (FID, mIoU) are
compared on, class colours stay one colour per class, and layout evaluation needs the labels. Use
"full_release" to train exactly as the reference does, or to finetune weights trained that way.
"""

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from piti_jax.data.builders.base import LocalFilesBuilder
from piti_jax import storage
from piti_jax.data.builders.common import (check_same_size, encode_png, read_image_bytes, read_label_image,
                                           require_files, walk_files)
from piti_jax.data.builders.segmentation import (image_field, list_pairs, segmentation_example,
                                                 segmentation_features)
from piti_jax.errors import PitiError

NUM_CLASSES = 150
SPLITS = {"train": "training", "validation": "validation"}
HOW = ("Unpack ADEChallengeData2016.zip (the MIT scene-parsing benchmark) into <manual_dir> so that "
       "<manual_dir>/ADEChallengeData2016/images/training and .../annotations/training exist.")
FULL_RELEASE_HOW = ("Unpack the full ADE20K release (ADE20K_2016_07_26 or ADE20K_2021_17_01) into <manual_dir>; "
                    "every <name>.jpg with a <name>_seg.png beside it under a training/ or validation/ folder "
                    "becomes an example.")
SEG_SUFFIX = "_seg.png"


@dataclasses.dataclass
class Ade20kConfig(tfds.core.BuilderConfig):
  """Which ADE20K files and condition encoding: "challenge" or "full_release" (see the module docstring)."""

  source: str = "challenge"


class Ade20k(LocalFilesBuilder):
  """ADE20K semantic masks for PITI's mask task."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  BUILDER_CONFIGS = [
      Ade20kConfig(name="challenge", source="challenge",
                   description="ADEChallengeData2016: 150 classes, VOC colours"),
      Ade20kConfig(name="full_release", source="full_release",
                   description="full ADE20K release: the _seg.png colours the reference feeds its encoder"),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    if self.builder_config.source == "full_release":
      features = tfds.features.FeaturesDict({
          "file_name": tfds.features.Text(),
          "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
          "mask": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
      })
      return self._info_with_metadata(description="Full-release ADE20K images with their _seg.png colour maps.",
                                      features=features)
    return self._info_with_metadata(description="ADE20K images with colour-coded 150-class masks.",
                                    features=segmentation_features(tfds))

  def _root(self) -> str:
    nested = os.path.join(self.manual_dir, "ADEChallengeData2016")
    return nested if storage.path(nested).is_dir() else self.manual_dir

  def _split_generators(self, dl_manager):
    del dl_manager  # Only the files in manual_dir; nothing is downloaded.
    if self.builder_config.source == "full_release":
      require_files(self.manual_dir, [""], dataset="ade20k (full_release)", how=FULL_RELEASE_HOW)
      pairs = full_release_pairs(self.manual_dir)
      return {split: self._generate_full_release(split, pairs[split]) for split in SPLITS}
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

  def _generate_full_release(self, split: str, pairs: list[tuple[str, str]]):
    start = len(self.bad_inputs.skipped)
    for image_path, seg_path in pairs:
      read = read_image_bytes(image_path, mode="RGB", bad_inputs=self.bad_inputs)
      if read is None:
        continue
      data, rgb = read
      seg = read_label_image(seg_path).convert("RGB")  # as the reference reads it
      check_same_size(seg_path, seg.size, image_path, (rgb.shape[1], rgb.shape[0]))
      yield os.path.basename(image_path), {"file_name": image_path, "image": image_field(data, rgb),
                                           "mask": encode_png(np.asarray(seg))}
    self.record_skipped(split, start)


def full_release_pairs(manual_dir: str) -> dict[str, list[tuple[str, str]]]:
  """{"train": [(image, _seg.png), ...], "validation": [...]} of a full ADE20K release, sorted by path."""
  pairs = {split: [] for split in SPLITS}
  for directory, files in walk_files(manual_dir):
    parts = set(os.path.relpath(directory, manual_dir).split(os.sep))
    split = next((s for s, folder in SPLITS.items() if folder in parts), None)
    if split is None:
      continue
    names = set(files)
    for name in files:
      if name.endswith(SEG_SUFFIX) and name[:-len(SEG_SUFFIX)] + ".jpg" in names:
        pairs[split].append((os.path.join(directory, name[:-len(SEG_SUFFIX)] + ".jpg"), os.path.join(directory, name)))
  for split, found in pairs.items():
    if not found:
      raise PitiError(f"ade20k (full_release): no <name>.jpg with a <name>_seg.png under a {SPLITS[split]}/ folder of "
                      f"{manual_dir}. {FULL_RELEASE_HOW}")
    found.sort()
  return pairs


def builder_from_config(config) -> Ade20k:
  return Ade20k(data_dir=os.path.expanduser(config.data_dir), config=config.ade20k_source,
                manual_dir=config.manual_dir, on_bad_example=config.on_bad_example, file_format="array_record")
