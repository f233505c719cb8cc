"""Text-image pairs for text-to-image pretraining, from files (builder configs = source layouts).

  tsv            <manual_dir>/train.tsv (+ optional validation.tsv): lines "image path<TAB>caption"; paths
                 relative to the TSV's folder, absolute or URIs; an optional header line "path<TAB>caption".
  folder         images (.jpg/.jpeg/.png/.webp) anywhere under manual_dir, each with a same-named .txt
                 caption beside it (img2dataset's "files" output).
  webdataset     <manual_dir>/*.tar shards whose members <key>.<jpg|jpeg|png|webp> and <key>.txt (or
                 <key>.json with a "caption") form one sample (img2dataset's "webdataset" output).
  coco_captions  the tfds `coco_captions` dataset already prepared in data_dir (read through tfds), or
                 else COCO caption annotations in manual_dir: annotations/captions_{train,val}2017.json
                 (or 2014) with the images in {train,val}2017/ (or 2014); the first caption of each image.
Without a separate validation source, every 100th pair (positions 0, 100, 200, ...) goes to the
validation split. Unreadable or missing images are skipped and counted (or stop, per on_bad_example).
Examples: file_name, image (original file, or RGB PNG when it is not RGB JPEG/PNG), caption.
"""

import collections
import dataclasses
import io
import json
import os
import tarfile

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, UnidentifiedImageError

from piti_jax import storage
from piti_jax.data.builders.base import LocalFilesBuilder
from piti_jax.data.builders.common import exists, list_names, read_image_bytes, require_files, walk_files
from piti_jax.data.builders.segmentation import image_field
from piti_jax.errors import PitiError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
HOLD_OUT_EVERY = 100
HOW = {
    "tsv": "Write <manual_dir>/train.tsv (and optionally validation.tsv) with lines 'image path<TAB>caption'.",
    "folder": "Put images with same-named .txt captions under <manual_dir> (img2dataset output_format=files).",
    "webdataset": "Put webdataset .tar shards (<key>.jpg + <key>.txt) in <manual_dir> (img2dataset "
                  "output_format=webdataset).",
    "coco_captions": "Prepare the tfds coco_captions dataset in data_dir, or put COCO's "
                     "annotations/captions_train2017.json, captions_val2017.json, train2017/ and val2017/ in "
                     "<manual_dir>.",
}


@dataclasses.dataclass
class TextPairsConfig(tfds.core.BuilderConfig):
  """Which source layout the pairs come from."""

  layout: str = "tsv"


@dataclasses.dataclass(frozen=True)
class _Pair:
  """One sample: where its image is, how to get its bytes, its caption."""

  name: str
  caption: str
  path: str = ""  # a file on disk
  data: bytes | None = None  # bytes already read (tar members, tfds records)


def _split_off_validation(pairs: list) -> dict[str, list]:
  return {"train": [p for i, p in enumerate(pairs) if i % HOLD_OUT_EVERY],
          "validation": pairs[::HOLD_OUT_EVERY]}


def _read_tsv(path: str) -> list[_Pair]:
  folder = os.path.dirname(path)
  pairs = []
  with storage.path(path).open("r", encoding="utf-8") as f:
    for number, line in enumerate(f):
      line = line.rstrip("\n")
      if not line.strip():
        continue
      if "\t" not in line:
        raise PitiError(f"{path}:{number + 1}: expected 'image path<TAB>caption', got {line[:80]!r}.")
      image, caption = line.split("\t", 1)
      if number == 0 and image.strip().lower() in ("path", "image", "image_path", "url", "file"):
        continue  # header
      image_path = image if os.path.isabs(image) or storage.is_remote(image) else os.path.join(folder, image)
      pairs.append(_Pair(name=image, caption=caption.strip(), path=image_path))
  return pairs


def _read_folder(root: str) -> tuple[list[_Pair], list[tuple[str, str]]]:
  pairs, uncaptioned = [], []
  for directory, files in sorted(walk_files(root)):
    for name in sorted(files):
      stem, extension = os.path.splitext(name)
      if extension.lower() not in IMAGE_EXTENSIONS:
        continue
      caption_path = os.path.join(directory, stem + ".txt")
      image_path = os.path.join(directory, name)
      if stem + ".txt" not in files:
        uncaptioned.append((image_path, f"no caption file {caption_path}"))
        continue
      caption = storage.path(caption_path).read_text(encoding="utf-8").strip()
      pairs.append(_Pair(name=os.path.relpath(image_path, root), caption=caption, path=image_path))
  return pairs, uncaptioned


def _read_tar(path: str) -> tuple[list[_Pair], list[tuple[str, str]]]:
  members = collections.defaultdict(dict)
  with storage.path(path).open("rb") as f, tarfile.open(fileobj=f) as tar:
    for member in tar:
      if not member.isfile():
        continue
      base = os.path.basename(member.name)
      key, _, extension = base.partition(".")
      members[os.path.join(os.path.dirname(member.name), key)]["." + extension.lower()] = tar.extractfile(member).read()
  pairs, incomplete = [], []
  for key, files in sorted(members.items()):
    image = next((files[e] for e in IMAGE_EXTENSIONS if e in files), None)
    if image is None:
      continue  # metadata-only entries (img2dataset writes failed downloads as .json only)
    if ".txt" in files:
      caption = files[".txt"].decode("utf-8").strip()
    elif ".json" in files and "caption" in json.loads(files[".json"]):
      caption = str(json.loads(files[".json"])["caption"]).strip()
    else:
      incomplete.append((f"{path}:{key}", "no caption (.txt or .json with 'caption')"))
      continue
    pairs.append(_Pair(name=f"{os.path.basename(path)}:{key}", caption=caption, data=image))
  return pairs, incomplete


def _coco_json_pairs(manual_dir: str, year: str, folder: str) -> list[_Pair]:
  annotation_path = os.path.join(manual_dir, "annotations", f"captions_{folder}{year}.json")
  content = json.loads(storage.path(annotation_path).read_text(encoding="utf-8"))
  first_caption = {}
  for annotation in sorted(content["annotations"], key=lambda a: a["id"]):
    first_caption.setdefault(annotation["image_id"], annotation["caption"])
  pairs = []
  for image in sorted(content["images"], key=lambda i: i["id"]):
    if image["id"] in first_caption:
      path = os.path.join(manual_dir, f"{folder}{year}", image["file_name"])
      pairs.append(_Pair(name=image["file_name"], caption=first_caption[image["id"]].strip(), path=path))
  return pairs


def _tfds_coco_captions_prepared(data_dir: str) -> bool:
  """Whether tfds `coco_captions` was prepared under data_dir (looked up without importing TensorFlow)."""
  root = storage.path(data_dir) / "coco_captions"
  return any(root.glob("*/*/dataset_info.json")) or any(root.glob("*/dataset_info.json"))


def _tfds_coco_captions_pairs(data_dir: str, split: str) -> list[_Pair]:
  """Pairs from a prepared tfds `coco_captions` (images kept encoded, first caption of each image)."""
  builder = tfds.builder("coco_captions", data_dir=data_dir)
  dataset = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
  pairs = []
  for example in tfds.as_numpy(dataset):
    captions = example["captions"]["text"]
    if len(captions):
      name = example["image/filename"].decode()
      pairs.append(_Pair(name=name, caption=captions[0].decode().strip(), data=example["image"]))
  return pairs


class TextPairs(LocalFilesBuilder):
  """Image-caption pairs for text-to-image pretraining."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  BUILDER_CONFIGS = [TextPairsConfig(name=layout, layout=layout, description=HOW[layout]) for layout in HOW]

  def _info(self) -> tfds.core.DatasetInfo:
    return self._info_with_metadata(
        description="Image-caption pairs from local files.",
        features=tfds.features.FeaturesDict({
            "file_name": tfds.features.Text(),
            "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
            "caption": tfds.features.Text(),
        }))

  def _split_generators(self, dl_manager):
    del dl_manager  # Only the files in manual_dir; nothing is downloaded.
    layout = self.builder_config.layout
    pairs, unusable = self._list_pairs(layout)
    for path, reason in unusable:
      self.bad_inputs.report(path, reason)
    self.record_skipped("listing", 0)
    if not pairs.get("train"):
      raise PitiError(f"text_pairs ({layout}): no image-caption pairs found under {self.manual_dir}. {HOW[layout]}")
    return {split: self._generate_examples(split, split_pairs) for split, split_pairs in pairs.items()}

  def _list_pairs(self, layout: str) -> tuple[dict[str, list[_Pair]], list[tuple[str, str]]]:
    how = HOW[layout]
    if layout == "coco_captions":
      return self._coco_pairs(), []
    if layout == "tsv":
      require_files(self.manual_dir, ["train.tsv"], dataset="text_pairs (tsv)", how=how)
      validation = os.path.join(self.manual_dir, "validation.tsv")
      train = _read_tsv(os.path.join(self.manual_dir, "train.tsv"))
      if exists(validation):
        return {"train": train, "validation": _read_tsv(validation)}, []
      return _split_off_validation(train), []
    require_files(self.manual_dir, ["."], dataset=f"text_pairs ({layout})", how=how)
    if layout == "folder":
      pairs, unusable = _read_folder(self.manual_dir)
    else:
      shards = [n for n in list_names(self.manual_dir) if n.endswith(".tar")]
      if not shards:
        raise PitiError(f"text_pairs (webdataset): no .tar shards in {self.manual_dir}. {how}")
      pairs, unusable = [], []
      for shard in shards:
        shard_pairs, shard_unusable = _read_tar(os.path.join(self.manual_dir, shard))
        pairs += shard_pairs
        unusable += shard_unusable
    return _split_off_validation(pairs), unusable

  def _coco_pairs(self) -> dict[str, list[_Pair]]:
    data_dir = os.fspath(self.data_dir_root)
    if _tfds_coco_captions_prepared(data_dir):
      return {"train": _tfds_coco_captions_pairs(data_dir, "train"),
              "validation": _tfds_coco_captions_pairs(data_dir, "val")}
    has_2014 = exists(os.path.join(self.manual_dir or "", "annotations", "captions_train2014.json"))
    has_2017 = exists(os.path.join(self.manual_dir or "", "annotations", "captions_train2017.json"))
    year = "2014" if has_2014 and not has_2017 else "2017"
    required = [f"annotations/captions_{s}{year}.json" for s in ("train", "val")] + [f"{s}{year}" for s in
                                                                                    ("train", "val")]
    require_files(self.manual_dir, required, dataset="text_pairs (coco_captions)", how=HOW["coco_captions"])
    return {"train": _coco_json_pairs(self.manual_dir, year, "train"),
            "validation": _coco_json_pairs(self.manual_dir, year, "val")}

  def _image_bytes(self, pair: _Pair) -> bytes | None:
    if pair.data is None:
      if not exists(pair.path):
        self.bad_inputs.report(pair.path, "image file not found")
        return None
      read = read_image_bytes(pair.path, mode="RGB", bad_inputs=self.bad_inputs)
      return None if read is None else image_field(*read)
    try:
      with Image.open(io.BytesIO(pair.data)) as image:
        image.load()
        rgb = np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
      self.bad_inputs.report(pair.name, f"unreadable or corrupt image ({type(error).__name__}: {error})")
      return None
    return image_field(pair.data, rgb)

  def _generate_examples(self, split: str, pairs: list[_Pair]):
    start = len(self.bad_inputs.skipped)
    for position, pair in enumerate(pairs):
      data = self._image_bytes(pair)
      if data is not None:
        yield f"{position}:{pair.name}", {"file_name": pair.name, "image": data, "caption": pair.caption}
    self.record_skipped(split, start)


def builder_from_config(config) -> TextPairs:
  return TextPairs(data_dir=os.path.expanduser(config.data_dir), config=config.text_format,
                   manual_dir=config.manual_dir, on_bad_example=config.on_bad_example, file_format="array_record")
