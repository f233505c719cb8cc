"""The built-in `shapes` dataset: generator and tfds builder."""

import numpy as np
import pytest
from PIL import Image

from piti_jax.data import conditions, shapes_scenes

TRAIN_SIZE, VAL_SIZE = 12, 5


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
  from piti_jax.data.builders.shapes import make_shapes_builder

  builder = make_shapes_builder(str(tmp_path_factory.mktemp("tfds")), train_size=TRAIN_SIZE, val_size=VAL_SIZE, seed=3)
  builder.download_and_prepare()
  return builder.as_data_source()


def test_splits_have_the_configured_sizes_and_indices(sources):
  assert len(sources["train"]) == TRAIN_SIZE
  assert len(sources["validation"]) == VAL_SIZE
  assert sorted(int(sources["train"][i]["index"]) for i in range(TRAIN_SIZE)) == list(range(TRAIN_SIZE))


def test_every_field_has_its_shape_dtype_and_range(sources):
  for position in range(TRAIN_SIZE):
    example = sources["train"][position]
    shapes = {"image": (256, 256, 3), "image_64": (64, 64, 3), "label": (256, 256, 1), "mask": (256, 256, 3),
              "sketch": (256, 256, 1), "distance": (256, 256, 1), "depth": (256, 256, 3), "normal": (256, 256, 3)}
    for key, shape in shapes.items():
      assert example[key].shape == shape, key
      assert example[key].dtype == np.uint8, key
    labels = example["label"][..., 0]
    assert labels.max() < shapes_scenes.NUM_CLASSES
    assert 0 in labels  # there is always sky
    assert np.any(np.isin(labels, shapes_scenes.THING_IDS))
    np.testing.assert_array_equal(example["mask"], conditions.colorize_labels(labels, num_classes=10))
    assert set(np.unique(example["sketch"])) == {0, 255}
    np.testing.assert_array_equal(example["distance"][..., 0], conditions.sketch_distance_map(example["sketch"]))
    expected_64 = np.asarray(Image.fromarray(example["image"]).resize((64, 64), Image.BICUBIC))
    np.testing.assert_array_equal(example["image_64"], expected_64)
    np.testing.assert_array_equal(example["depth"][labels == 0], 0)  # sky has no valid depth
    assert example["depth"][labels != 0].max() > 0
    caption = example["caption"].decode()
    assert caption.startswith(("a ", "an ")) and " on " in caption
    assert any(c.name in caption for c in shapes_scenes.CLASSES if c.kind == "thing")


def test_stored_examples_equal_the_generator(sources):
  example = sources["validation"][2]
  scene = shapes_scenes.generate_scene(3, 1, int(example["index"]))
  np.testing.assert_array_equal(example["image"], scene.image)
  np.testing.assert_array_equal(example["label"][..., 0], scene.labels)
  assert example["caption"].decode() == scene.caption


def test_scenes_are_deterministic_and_differ_by_index_seed_and_split():
  first = shapes_scenes.generate_scene(0, 0, 7)
  again = shapes_scenes.generate_scene(0, 0, 7)
  np.testing.assert_array_equal(first.image, again.image)
  assert first.caption == again.caption
  for other in (shapes_scenes.generate_scene(0, 0, 8), shapes_scenes.generate_scene(1, 0, 7),
                shapes_scenes.generate_scene(0, 1, 7)):
    assert not np.array_equal(first.image, other.image)


def test_an_oracle_reads_the_layout_back_from_pixels():
  agreement = [np.mean(shapes_scenes.classify_pixels(s.image) == s.labels)
               for s in (shapes_scenes.generate_scene(5, 0, i) for i in range(8))]
  assert min(agreement) > 0.97


def test_classes_cover_stuff_and_things_with_distinct_colours_and_textures():
  things = [c for c in shapes_scenes.CLASSES if c.kind == "thing"]
  assert len(shapes_scenes.CLASSES) >= 8
  assert len({c.colour for c in shapes_scenes.CLASSES}) == len(shapes_scenes.CLASSES)
  assert len({c.texture for c in things}) == len(things)
  assert [c.id for c in shapes_scenes.CLASSES] == list(range(len(shapes_scenes.CLASSES)))


def test_depth_is_valid_and_normals_are_unit_below_the_sky():
  for index in range(10):
    scene = shapes_scenes.generate_scene(2, 0, index)
    things = np.isin(scene.labels, shapes_scenes.THING_IDS)
    assert scene.depth_valid[things].all()
    norms = np.linalg.norm(scene.normals[scene.depth_valid], axis=-1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-4)


def test_caption_describes_the_scene():
  scene = shapes_scenes.generate_scene(0, 0, 0)
  present = {shapes_scenes.CLASSES[i].name for i in np.unique(scene.labels)}
  words = scene.caption.split()
  named = {c.name for c in shapes_scenes.CLASSES if c.name in words}
  assert named <= present
  assert scene.caption.split(" on ")[-1].split(" and ")[0] in present
