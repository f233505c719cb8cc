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


def test_ade20k_full_release_keeps_the_seg_png_colours_as_the_reference(tmp_path):
  rng = np.random.default_rng(5)
  root = tmp_path / "raw" / "ADE20K_2021_17_01" / "images" / "ADE"
  segs = {}
  for folder in ("training", "validation"):
    stem = str(root / folder / "urban" / "street" / f"ADE_{folder}_00000001")
    _write_image(stem + ".jpg", rng)
    segs[folder] = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)  # R/10*256+G: class, B: instance
    Image.fromarray(segs[folder]).save(stem + "_seg.png")
  _write_image(str(root / "training" / "urban" / "street" / "no_seg_beside_it.jpg"), rng)
  config = _config("ade20k", tmp_path / "tfds", tmp_path / "raw", ade20k_source="full_release")
  builder = prepare_dataset(config)
  assert builder.info.splits["train"].num_examples == 1 and "label" not in builder.info.features
  example = builder.as_data_source(split="validation")[0]
  np.testing.assert_array_equal(example["mask"], segs["validation"])
  batch = next(pipeline.make_train_iterator(config, global_batch_size=1, seed=0, process_index=0, process_count=1))
  assert batch["condition"].shape == (1, 256, 256, 3)
  with pytest.raises(PitiError, match="_seg.png under a validation/ folder"):
    os.remove(str(root / "validation" / "urban" / "street" / "ADE_validation_00000001_seg.png"))
    prepare_dataset(_config("ade20k", tmp_path / "tfds2", tmp_path / "raw", ade20k_source="full_release"))


def test_coco_sketch_detects_edges_at_256_and_feeds_the_sketch_pipeline(tmp_path):
  rng = np.random.default_rng(4)
  for folder in ("train2017", "val2017"):
    for i in range(2):
      picture = np.zeros((60, 80, 3), np.uint8)
      picture[15:45, 20:60] = rng.integers(100, 255, 3)
      os.makedirs(tmp_path / "raw" / folder, exist_ok=True)
      Image.fromarray(picture).save(tmp_path / "raw" / folder / f"{i}.jpg")
  config = _config("coco_sketch", tmp_path / "tfds", tmp_path / "raw", task="sketch")
  builder = prepare_dataset(config)
  assert builder.builder_config.name == "canny"  # no HED weights given
  example = builder.as_data_source(split="train")[0]
  assert example["image"].shape == (256, 256, 3) and example["sketch"].shape == (256, 256, 1)
  sketch = example["sketch"][..., 0]
  assert set(np.unique(sketch)) == {0, 255}
  rows, cols = np.nonzero(sketch)
  assert 50 <= rows.min() <= 70 and 180 <= rows.max() <= 200  # the rectangle's outline, scaled to 256
  batch = next(pipeline.make_train_iterator(config, global_batch_size=2, seed=0, process_index=0, process_count=1))
  assert batch["condition"].shape == (2, 256, 256, 1) and batch["condition"].min() == -1.0


def _write_diode_sample(stem, rng, size=(48, 36), depth_shape=None):
  os.makedirs(os.path.dirname(stem), exist_ok=True)
  Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(stem + ".png")
  depth = rng.uniform(0.5, 40.0, depth_shape or (size[1], size[0], 1)).astype(np.float32)
  mask = (rng.random((size[1], size[0])) > 0.2).astype(np.float32)
  normal = rng.normal(size=(size[1], size[0], 3)).astype(np.float32)
  normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
  np.save(stem + "_depth.npy", depth)
  np.save(stem + "_depth_mask.npy", mask)
  np.save(stem + "_normal.npy", normal)


def test_diode_renders_depth_and_normals_and_feeds_the_depth_pipeline(tmp_path):
  rng = np.random.default_rng(5)
  for split in ("train", "val"):
    for i in range(2):
      _write_diode_sample(str(tmp_path / "raw" / split / "indoors" / "scene_0" / "scan_0" / f"s_{i}"), rng)
  config = _config("diode", tmp_path / "tfds", tmp_path / "raw", task="depth")
  builder = prepare_dataset(config)
  assert builder.info.splits["train"].num_examples == 2
  example = builder.as_data_source(split="validation")[0]
  for key in ("image", "depth", "normal"):
    assert example[key].shape == (256, 256, 3) and example[key].dtype == np.uint8
  assert (example["depth"].sum(-1) == 0).mean() > 0.1  # invalid pixels are black
  batch = next(pipeline.make_train_iterator(config, global_batch_size=2, seed=0, process_index=0, process_count=1))
  assert batch["condition"].shape == (2, 256, 256, 6)


def test_diode_depth_of_the_wrong_size_names_the_file(tmp_path):
  rng = np.random.default_rng(6)
  _write_diode_sample(str(tmp_path / "raw" / "train" / "a" / "x"), rng)
  _write_diode_sample(str(tmp_path / "raw" / "val" / "a" / "y"), rng, depth_shape=(10, 10, 1))
  with pytest.raises(PitiError, match=r"y_depth\.npy: shape"):
    prepare_dataset(_config("diode", tmp_path / "tfds", tmp_path / "raw", task="depth"))


def _caption_images(folder, count, rng):
  os.makedirs(folder, exist_ok=True)
  names = []
  for i in range(count):
    name = f"{i:05d}.jpg"
    _write_image(os.path.join(folder, name), rng)
    names.append(name)
  return names


def test_text_pairs_from_tsv_folder_and_webdataset(tmp_path):
  import tarfile

  rng = np.random.default_rng(7)
  tsv_dir = tmp_path / "tsv"
  names = _caption_images(str(tsv_dir / "images"), 3, rng)
  (tsv_dir / "train.tsv").write_text("path\tcaption\n" + "".join(f"images/{n}\ta picture number {i}\n"
                                                                  for i, n in enumerate(names)))
  folder_dir = tmp_path / "folder" / "00000"
  for i, name in enumerate(_caption_images(str(folder_dir), 3, rng)):
    (folder_dir / name.replace(".jpg", ".txt")).write_text(f"folder caption {i}")
  (folder_dir / "nocaption.jpg").write_bytes((folder_dir / "00000.jpg").read_bytes())
  shard_dir = tmp_path / "shards"
  shard_dir.mkdir()
  with tarfile.open(shard_dir / "00000.tar", "w") as tar:
    for i, name in enumerate(_caption_images(str(tmp_path / "shard_src"), 3, rng)):
      tar.add(tmp_path / "shard_src" / name, arcname=f"{i:09d}.jpg")
      (tmp_path / "shard_src" / f"{i}.txt").write_text(f"shard caption {i}")
      tar.add(tmp_path / "shard_src" / f"{i}.txt", arcname=f"{i:09d}.txt")
  for layout, manual_dir, prefix in (("tsv", tsv_dir, "a picture number"), ("folder", tmp_path / "folder",
                                                                           "folder caption"),
                                     ("webdataset", shard_dir, "shard caption")):
    config = _config("text_pairs", tmp_path / "tfds", manual_dir, task="text", text_format=layout, max_text_len=16)
    builder = prepare_dataset(config)
    assert builder.info.splits["train"].num_examples == 2 and builder.info.splits["validation"].num_examples == 1
    for split in ("train", "validation"):
      for example in _all(builder.as_data_source(split=split)):
        assert example["caption"].decode().startswith(prefix)
        assert example["image"].shape == (30, 40, 3)
    batch = next(pipeline.make_train_iterator(config, global_batch_size=2, seed=0, process_index=0,
                                              process_count=1))
    assert batch["tokens"].shape == (2, 16) and batch["token_mask"].any(axis=1).all()
    if layout == "folder":
      assert [s["file"] for s in builder.info.metadata["skipped"]["listing"]] == [str(folder_dir / "nocaption.jpg")]


def test_text_pairs_from_coco_caption_annotations(tmp_path):
  import json

  rng = np.random.default_rng(8)
  raw = tmp_path / "raw"
  os.makedirs(raw / "annotations")
  for folder in ("train", "val"):
    names = _caption_images(str(raw / f"{folder}2017"), 2, rng)
    content = {"images": [{"id": i, "file_name": n} for i, n in enumerate(names)],
               "annotations": [{"id": 10 + i, "image_id": i, "caption": f"first {folder} {i}"} for i in range(2)] +
                              [{"id": 20 + i, "image_id": i, "caption": "second"} for i in range(2)]}
    (raw / "annotations" / f"captions_{folder}2017.json").write_text(json.dumps(content))
  builder = prepare_dataset(_config("text_pairs", tmp_path / "tfds", raw, task="text", text_format="coco_captions"))
  captions = sorted(e["caption"].decode() for e in _all(builder.as_data_source(split="validation")))
  assert captions == ["first val 0", "first val 1"]


def test_text_pairs_from_a_prepared_tfds_coco_captions(tmp_path):
  """A tfds `coco_captions` prepared in data_dir (here by the real builder class fed with generated
  records) is read through tfds, keeping the first caption of each image."""
  import io

  import tensorflow_datasets as tfds

  real_builder = type(tfds.builder("coco_captions", data_dir=str(tmp_path / "unused")))

  class GeneratedCocoCaptions(real_builder, skip_registration=True):
    name = "coco_captions"

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._records(3), "val": self._records(2)}

    def _records(self, count):
      for i in range(count):
        buffer = io.BytesIO()
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(buffer, format="jpeg")
        yield i, {"image": buffer.getvalue(), "image/filename": f"f{i}.jpg", "image/id": i, "objects": [],
                  "captions": [{"id": 1, "text": f"caption {i}"}, {"id": 2, "text": "another"}]}

  GeneratedCocoCaptions(data_dir=str(tmp_path / "tfds")).download_and_prepare()
  config = _config("text_pairs", tmp_path / "tfds", "", task="text", text_format="coco_captions")
  builder = prepare_dataset(config)
  examples = _all(builder.as_data_source(split="train"))
  assert sorted(e["caption"].decode() for e in examples) == ["caption 0", "caption 1", "caption 2"]
  assert examples[0]["image"].shape == (20, 30, 3)
  assert builder.info.splits["validation"].num_examples == 2


def _random_hed_npz(path):
  from piti_jax.data import hed

  rng = np.random.default_rng(9)
  weights = {}
  for key, shape in hed.expected_shapes().items():
    fan_in = int(np.prod(shape[1:])) if len(shape) == 4 else 1
    scale = np.sqrt(2.0 / fan_in) if len(shape) == 4 else 0.01
    weights[key.replace("net", "module", 1)] = (rng.normal(size=shape) * scale).astype(np.float32)
  weights["moduleCombine.0.weight"] *= 0.03
  np.savez(path, **weights)
  return weights


def _numpy_hed(weights, image):
  """Direct NumPy HED forward (NCHW, im2col) as an independent reference."""
  from piti_jax.data import hed

  def conv(x, key, pad):
    kernel, bias = weights[key + ".weight"], weights[key + ".bias"]
    size = kernel.shape[-1]
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    height, width = x.shape[1] - size + 1, x.shape[2] - size + 1
    patches = np.stack([x[:, i:i + height, j:j + width] for i in range(size) for j in range(size)], axis=1)
    return np.einsum("cphw,ocp->ohw", patches, kernel.reshape(kernel.shape[0], kernel.shape[1], -1)) + bias[:, None,
                                                                                                             None]

  def upsample(score, height, width):  # bilinear, half-pixel centres, edges clamped
    def axis_weights(out_size, in_size):
      position = np.clip((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0, in_size - 1)
      low = np.floor(position).astype(int)
      high = np.minimum(low + 1, in_size - 1)
      matrix = np.zeros((out_size, in_size))
      matrix[np.arange(out_size), low] += 1 - (position - low)
      matrix[np.arange(out_size), high] += position - low
      return matrix
    return axis_weights(height, score.shape[0]) @ score @ axis_weights(width, score.shape[1]).T

  height, width = image.shape[:2]
  x = image[..., ::-1].astype(np.float64).transpose(2, 0, 1) - np.asarray(hed.CAFFE_MEAN_BGR)[:, None, None]
  scores = []
  for stage, (name, indices, _) in enumerate(hed.STAGES):
    if stage:
      x = x.reshape(x.shape[0], x.shape[1] // 2, 2, x.shape[2] // 2, 2).max(axis=(2, 4))
    for index in indices:
      x = np.maximum(conv(x, f"module{name}.{index}", 1), 0.0)
    scores.append(upsample(conv(x, f"module{hed.SCORES[stage]}", 0)[0], height, width))
  fused = conv(np.stack(scores), "moduleCombine.0", 0)[0]
  return 1.0 / (1.0 + np.exp(-fused))


def test_hed_matches_a_numpy_reference_and_builds_hed_sketches(tmp_path):
  from piti_jax.data import hed

  weights = _random_hed_npz(tmp_path / "hed.npz")
  image = np.random.default_rng(10).integers(0, 255, (32, 48, 3), dtype=np.uint8)
  detector = hed.HedDetector(str(tmp_path / "hed.npz"))
  expected = _numpy_hed(weights, image)
  assert 0.05 < (expected > 0.6).mean() < 0.95  # neither saturated nor empty
  np.testing.assert_allclose(detector.probability(image), expected, atol=2e-4)
  clear = np.abs(expected - 0.6) > 1e-3  # away from the threshold, where round-off cannot flip a pixel
  np.testing.assert_array_equal(detector(image)[clear], np.where(expected > 0.6, 255, 0)[clear])
  with pytest.raises(PitiError, match="not an HED"):
    np.savez(tmp_path / "bad.npz", **{"moduleVggOne.0.weight": np.zeros((3, 3, 3, 3), np.float32)})
    hed.HedDetector(str(tmp_path / "bad.npz"))
  for folder in ("train2017", "val2017"):
    os.makedirs(tmp_path / "raw" / folder)
    Image.fromarray(image).save(tmp_path / "raw" / folder / "0.png")
  config = _config("coco_sketch", tmp_path / "tfds", tmp_path / "raw", task="sketch",
                   hed_weights=str(tmp_path / "hed.npz"))
  builder = prepare_dataset(config)
  assert builder.builder_config.name == "hed"  # the default detector once HED weights are given
  sources = builder.as_data_source()
  sketch = sources["validation"][0]["sketch"][..., 0]
  assert sketch.shape == (256, 256) and set(np.unique(sketch)) == {0, 255}
  np.testing.assert_array_equal(sources["train"][0]["sketch"][..., 0], sketch)  # same picture, same sketch
  with pytest.raises(PitiError, match="needs data.hed_weights"):
    prepare_dataset(_config("coco_sketch", tmp_path / "tfds2", tmp_path / "raw", task="sketch", edge_detector="hed"))


def test_prepare_command_line(tmp_path, capsys):
  import json

  from piti_jax.data.__main__ import main

  assert main(["--name", "shapes", "--data_dir", str(tmp_path), "--train_size", "4", "--val_size", "2"]) == 0
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
  assert {(line["split"], line["examples"]) for line in lines} == {("train", 4), ("validation", 2)}
  assert main(["--name", "coco_stuff", "--data_dir", str(tmp_path), "--manual_dir", str(tmp_path / "nothing")]) == 2
  assert "coco_stuff: missing" in capsys.readouterr().err
