"""Real-dataset builders on tiny fixture files written by the tests."""

import os

import numpy as np
import pytest
from PIL import Image

from piti_jax.data import conditions, pipeline
from piti_jax.data.config import default_data_config
from piti_jax.data.datasets import make_builder, prepare_dataset
from piti_jax.errors import PitiError


def _write_image(path, rng, size=(40, 30)):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def _write_label(path, values, size=(40, 30)):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rows = np.arange(size[1])[:, None] * len(values) // size[1]
  Image.fromarray(np.broadcast_to(np.asarray(values, np.uint8)[rows], (size[1], size[0])).copy()).save(path)


def _coco_stuff_tree(root, rng, train=3, val=2):
  for folder, count in (("train2017", train), ("val2017", val)):
    for i in range(count):
      _write_image(os.path.join(root, folder, f"{i:012d}.jpg"), rng)
      _write_label(os.path.join(root, "stuffthingmaps_trainval2017", folder, f"{i:012d}.png"), [0, 181, 255, i])


def _config(name, data_dir, manual_dir, **overrides):
  config = default_data_config()
  config.name, config.data_dir, config.manual_dir = name, str(data_dir), str(manual_dir)
  config.update(overrides)
  return config


def _all(source):
  return [source[i] for i in range(len(source))]


def test_coco_stuff_builds_every_field_and_feeds_the_pipeline(tmp_path):
  _coco_stuff_tree(tmp_path / "raw", np.random.default_rng(0))
  config = _config("coco_stuff", tmp_path / "tfds", tmp_path / "raw")
  builder = prepare_dataset(config)
  assert builder.info.splits["train"].num_examples == 3 and builder.info.splits["validation"].num_examples == 2
  for example in _all(builder.as_data_source(split="train")):
    assert example["image"].shape == (30, 40, 3) and example["image"].dtype == np.uint8
    labels = example["label"][..., 0]
    assert set(np.unique(labels)) <= {0, 1, 2, 181, 255}
    np.testing.assert_array_equal(example["mask"], conditions.colorize_labels(labels, num_classes=182))
    assert example["mask"][labels == 0][0].tolist() == [128, 0, 0]
  batch = next(pipeline.make_train_iterator(config, global_batch_size=2, seed=0, process_index=0, process_count=1))
  assert batch["image"].shape == (2, 64, 64, 3) and batch["condition"].shape == (2, 256, 256, 3)
  assert batch["condition"].min() >= -1.0 and batch["condition"].max() <= 1.0


def test_corrupt_images_are_skipped_and_counted_or_stop_the_run(tmp_path):
  _coco_stuff_tree(tmp_path / "raw", np.random.default_rng(1))
  broken = tmp_path / "raw" / "train2017" / f"{1:012d}.jpg"
  broken.write_bytes(b"not a jpeg at all")
  config = _config("coco_stuff", tmp_path / "tfds", tmp_path / "raw")
  builder = prepare_dataset(config)
  assert builder.info.splits["train"].num_examples == 2
  assert [s["file"] for s in builder.info.metadata["skipped"]["train"]] == [str(broken)]
  reloaded = make_builder(config)  # the count is stored with the prepared dataset
  assert [s["file"] for s in reloaded.info.metadata["skipped"]["train"]] == [str(broken)]
  assert reloaded.info.metadata["skipped"]["validation"] == []
  with pytest.raises(PitiError, match=f"{broken}.*unreadable"):
    prepare_dataset(_config("coco_stuff", tmp_path / "tfds_raise", tmp_path / "raw", on_bad_example="raise"))


@pytest.mark.parametrize("problem, message", [
    ("out_of_range", r"values \[200\] are not class ids"),
    ("rgb_label", "single-channel"),
    ("wrong_size", "differs from its image"),
    ("missing_label", "missing label map"),
])
def test_bad_labels_stop_with_the_file_named(tmp_path, problem, message):
  raw = tmp_path / "raw"
  _coco_stuff_tree(raw, np.random.default_rng(2))
  label = raw / "stuffthingmaps_trainval2017" / "val2017" / f"{1:012d}.png"
  if problem == "out_of_range":
    _write_label(str(label), [3, 200])
  elif problem == "rgb_label":
    Image.new("RGB", (40, 30)).save(label)
  elif problem == "wrong_size":
    _write_label(str(label), [3], size=(20, 20))
  else:
    os.remove(label)
  with pytest.raises(PitiError, match=f"{label}.*{message}|{message}.*{label}"):
    prepare_dataset(_config("coco_stuff", tmp_path / "tfds", raw))


def test_missing_folders_are_listed_with_where_they_go(tmp_path):
  (tmp_path / "raw" / "train2017").mkdir(parents=True)
  with pytest.raises(PitiError) as error:
    prepare_dataset(_config("coco_stuff", tmp_path / "tfds", tmp_path / "raw"))
  text = str(error.value)
  assert str(tmp_path / "raw" / "val2017") in text
  assert str(tmp_path / "raw" / "stuffthingmaps_trainval2017" / "train2017") in text
  assert str(tmp_path / "raw" / "train2017,") not in text
  with pytest.raises(PitiError, match="no manual_dir"):
    prepare_dataset(_config("ade20k", tmp_path / "tfds", ""))


def test_ade20k_shifts_ids_and_maps_other_to_unlabelled(tmp_path):
  rng = np.random.default_rng(3)
  root = tmp_path / "raw" / "ADEChallengeData2016"
  for folder in ("training", "validation"):
    for i in range(2):
      _write_image(str(root / "images" / folder / f"ADE_{folder}_{i}.jpg"), rng)
      _write_label(str(root / "annotations" / folder / f"ADE_{folder}_{i}.png"), [0, 1, 150])
  builder = prepare_dataset(_config("ade20k", tmp_path / "tfds", tmp_path / "raw"))
  example = builder.as_data_source(split="validation")[0]
  labels = example["label"][..., 0]
  assert set(np.unique(labels)) == {255, 0, 149}
  colours = conditions.voc_colormap(256)
  assert example["mask"][labels == 149][0].tolist() == colours[150].tolist()
  assert example["mask"][labels == 255][0].tolist() == [0, 0, 0]
