"""Condition images: colour coding, sketch distance, depth/normal rendering, null condition."""

import itertools
import sys

import numpy as np
import pytest

from piti_jax.data import conditions
from piti_jax.errors import PitiError


def test_importing_conditions_does_not_import_tensorflow():
  import subprocess

  code = "import sys, piti_jax.data.conditions; print('tensorflow' in sys.modules)"
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert result.stdout.strip() == "False"


def test_voc_colormap_known_entries():
  colors = conditions.voc_colormap(256)
  assert colors[0].tolist() == [0, 0, 0]
  assert colors[1].tolist() == [128, 0, 0]
  assert colors[2].tolist() == [0, 128, 0]
  assert colors[3].tolist() == [128, 128, 0]
  assert colors[8].tolist() == [64, 0, 0]
  assert colors[15].tolist() == [192, 128, 128]  # VOC "person"
  assert len({tuple(c) for c in colors.tolist()}) == 256  # injective


def test_colour_coding_uses_id_plus_one_and_black_for_unlabelled():
  labels = np.array([[0, 1], [181, 255]], np.uint8)
  mask = conditions.colorize_labels(labels, num_classes=182)
  colors = conditions.voc_colormap(256)
  assert mask[0, 0].tolist() == [128, 0, 0]  # COCO-Stuff label 0 "person"
  assert mask[0, 1].tolist() == colors[2].tolist()
  assert mask[1, 0].tolist() == colors[182].tolist()
  assert mask[1, 1].tolist() == [0, 0, 0]


@pytest.mark.parametrize("num_classes", [10, 150, 182])
def test_colour_coding_round_trip_is_exact(num_classes):
  rng = np.random.default_rng(num_classes)
  labels = rng.integers(0, num_classes, size=(40, 30)).astype(np.uint8)
  labels[rng.random(labels.shape) < 0.1] = 255
  mask = conditions.colorize_labels(labels[..., None], num_classes=num_classes)
  np.testing.assert_array_equal(conditions.labels_from_colors(mask, num_classes=num_classes), labels)


def test_labels_out_of_range_name_the_file():
  with pytest.raises(PitiError, match=r"labels/x\.png.*\[12\]"):
    conditions.colorize_labels(np.array([[3, 12]], np.uint8), num_classes=10, source="labels/x.png")


def test_unknown_mask_colours_are_reported_with_the_file():
  mask = conditions.colorize_labels(np.zeros((4, 4), np.uint8), num_classes=10)
  mask[1, 1] = (1, 2, 3)
  mask[2, 2] = (250, 250, 250)
  with pytest.raises(PitiError, match=r"masks/a\.png: 2 colour\(s\).*\(1, 2, 3\).*\(250, 250, 250\)"):
    conditions.labels_from_colors(mask, num_classes=10, source="masks/a.png")
  with pytest.raises(PitiError, match="RGB"):
    conditions.labels_from_colors(np.zeros((4, 4), np.uint8), num_classes=10, source="masks/b.png")


def _brute_force_taxicab(edges: np.ndarray) -> np.ndarray:
  points = np.argwhere(edges)
  result = np.zeros(edges.shape, np.int64)
  for r, c in itertools.product(range(edges.shape[0]), range(edges.shape[1])):
    result[r, c] = np.min(np.abs(points[:, 0] - r) + np.abs(points[:, 1] - c))
  return np.minimum(result, 255)


@pytest.mark.parametrize("seed", range(4))
def test_distance_transform_equals_brute_force(seed):
  rng = np.random.default_rng(seed)
  sketch = np.where(rng.random((13, 17)) < 0.05 * (seed + 1), 255, 0).astype(np.uint8)
  sketch[rng.integers(13), rng.integers(17)] = 255
  np.testing.assert_array_equal(conditions.sketch_distance_map(sketch), _brute_force_taxicab(sketch > 0))


def test_distance_is_clipped_at_255_and_scaled_to_unit_range():
  sketch = np.zeros((300, 300), np.uint8)
  sketch[0, 0] = 255
  distance = conditions.sketch_distance_map(sketch)
  assert distance[0, 0] == 0 and distance[0, 1] == 1 and distance[299, 299] == 255
  condition = conditions.sketch_condition(sketch)
  assert condition.shape == (300, 300, 1) and condition.dtype == np.float32
  assert condition[0, 0, 0] == -1.0 and condition[299, 299, 0] == 1.0
  np.testing.assert_allclose(condition[0, 1, 0], -1.0 + 2.0 / 255.0, rtol=1e-6)
  empty = conditions.sketch_distance_map(np.zeros((5, 5), np.uint8))
  np.testing.assert_array_equal(empty, 255)


def test_jet_colormap_end_points():
  np.testing.assert_allclose(conditions.JET[0], [0.0, 0.0, 0.5])
  np.testing.assert_allclose(conditions.JET[-1], [0.5, 0.0, 0.0])
  assert conditions.JET[len(conditions.JET) // 2, 1] == 1.0  # green peak in the middle


def test_depth_rendering():
  depth = np.linspace(0.1, 50.0, 64 * 64, dtype=np.float32).reshape(64, 64)
  valid = np.ones((64, 64), bool)
  valid[:4] = False
  rgb = conditions.render_depth(depth, valid)
  assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
  np.testing.assert_array_equal(rgb[:4], 0)
  assert rgb[4:].max() > 0
  # Near pixels are blue-ish, far pixels red-ish (jet of log depth).
  assert rgb[4, 0, 2] > rgb[4, 0, 0] and rgb[-1, -1, 0] > rgb[-1, -1, 2]


def test_normal_rendering():
  normals = np.zeros((8, 8, 3), np.float32)
  normals[..., 2] = 1.0
  normals[0, 0] = (-1.0, 0.0, 0.0)
  normals[1, 1] = 0.0  # unknown
  rgb = conditions.render_normals(normals)
  assert rgb.dtype == np.uint8 and rgb.shape == (8, 8, 3)
  assert rgb[2, 2].tolist() == [127, 127, 255]  # (n + 1) / 2 when the minimum is -1
  assert rgb[1, 1].tolist() == [0, 0, 0]


def test_null_condition_and_unit_range():
  condition = np.zeros((2, 4, 4, 6), np.float32)
  null = conditions.null_condition(condition)
  assert null.shape == condition.shape and null.dtype == np.float32 and np.all(null == 1.0)
  text = {"tokens": np.array([[5, 6, 256]], np.int32), "mask": np.array([[True, True, False]])}
  empty = conditions.null_condition(text)
  assert not empty["mask"].any() and np.array_equal(empty["tokens"], text["tokens"])
  np.testing.assert_allclose(conditions.to_unit_range(np.array([0, 255], np.uint8)), [-1.0, 1.0])


def test_read_condition_files(tmp_path):
  from PIL import Image

  labels = np.zeros((64, 48), np.uint8)
  labels[10:30, 5:20] = 7
  Image.fromarray(conditions.colorize_labels(labels, num_classes=10)).save(tmp_path / "mask.png")
  mask = conditions.read_condition(str(tmp_path / "mask.png"), "mask", num_classes=10)
  assert mask.shape == (256, 256, 3) and mask.dtype == np.float32
  assert {tuple(c) for c in ((mask.reshape(-1, 3) + 1) * 127.5).round().astype(int).tolist()} == {
      (128, 0, 0), tuple(conditions.voc_colormap()[8].tolist())}
  sketch = np.zeros((32, 32), np.uint8)
  sketch[16, :] = 200
  Image.fromarray(sketch).save(tmp_path / "sketch.png")
  condition = conditions.read_condition(str(tmp_path / "sketch.png"), "sketch", size=32)
  assert condition.shape == (32, 32, 1) and condition[16, 0, 0] == -1.0
  np.testing.assert_allclose(condition[0, 0, 0], -1.0 + 16 * 2.0 / 255.0, rtol=1e-6)
  Image.new("RGB", (40, 40), (10, 200, 30)).save(tmp_path / "normal.png")
  Image.new("RGB", (40, 40), (0, 0, 128)).save(tmp_path / "depth.png")
  both = conditions.read_condition([str(tmp_path / "normal.png"), str(tmp_path / "depth.png")], "depth")
  assert both.shape == (256, 256, 6)


def test_read_condition_errors_name_the_file(tmp_path):
  from PIL import Image

  Image.new("L", (8, 8)).save(tmp_path / "ids.png")
  with pytest.raises(PitiError, match=r"ids\.png: a colour mask must be an RGB image.*class-id map"):
    conditions.read_condition(str(tmp_path / "ids.png"), "mask")
  Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "odd.png")
  with pytest.raises(PitiError, match=r"odd\.png: 1 colour"):
    conditions.read_condition(str(tmp_path / "odd.png"), "mask", num_classes=10)
  with pytest.raises(PitiError, match="does not exist"):
    conditions.read_condition(str(tmp_path / "none.png"), "sketch")
  (tmp_path / "broken.png").write_bytes(b"junk")
  with pytest.raises(PitiError, match=r"broken\.png: cannot read"):
    conditions.read_condition(str(tmp_path / "broken.png"), "sketch")
  Image.new("RGB", (8, 8)).save(tmp_path / "n.png")
  Image.new("RGB", (9, 8)).save(tmp_path / "d.png")
  with pytest.raises(PitiError, match=r"d\.png: size 9x8 differs"):
    conditions.read_condition([str(tmp_path / "n.png"), str(tmp_path / "d.png")], "depth")
