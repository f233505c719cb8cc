"""grain pipelines over the prepared `shapes` data source."""

import os

import numpy as np
import pytest

from piti_jax.data import conditions, pipeline
from piti_jax.data.config import default_data_config
from piti_jax.errors import PitiError

TRAIN_SIZE, VAL_SIZE = 16, 6


@pytest.fixture(scope="module")
def base_config(tmp_path_factory):
  config = default_data_config()
  config.data_dir = str(tmp_path_factory.mktemp("tfds"))
  config.train_size, config.val_size, config.seed = TRAIN_SIZE, VAL_SIZE, 1
  from piti_jax.data.datasets import prepare_dataset

  prepare_dataset(config)
  return config


def _config(base, **overrides):
  config = base.copy_and_resolve_references()
  config.update(overrides)
  return config


def _batches(iterator, count):
  return [next(iterator) for _ in range(count)]


def _assert_batches_equal(first, second):
  assert len(first) == len(second)
  for a, b in zip(first, second):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("task, channels", [("mask", 3), ("sketch", 1), ("depth", 6)])
def test_base_batches_have_the_contract_shapes(base_config, task, channels):
  config = _config(base_config, task=task)
  batch = next(pipeline.make_train_iterator(config, global_batch_size=8, seed=0, process_index=0, process_count=2))
  assert set(batch) == {"image", "condition"}
  assert batch["image"].shape == (4, 64, 64, 3) and batch["image"].dtype == np.float32
  assert batch["condition"].shape == (4, 256, 256, channels) and batch["condition"].dtype == np.float32
  for value in batch.values():
    assert value.min() >= -1.0 and value.max() <= 1.0
  expected = pipeline.batch_shapes(config, 4)
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {k: (s, np.dtype(d)) for k, (s, d) in expected.items()}


def test_upsampler_batches_have_a_degraded_low_res_input(base_config):
  config = _config(base_config, image_size=256, low_res_size=64)
  batch = next(pipeline.make_train_iterator(config, global_batch_size=2, seed=0, process_index=0, process_count=1))
  assert batch["image"].shape == (2, 256, 256, 3)
  assert batch["low_res"].shape == (2, 64, 64, 3) and batch["low_res"].dtype == np.float32
  assert batch["condition"].shape == (2, 256, 256, 3)
  assert batch["low_res"].min() >= -1.0 and batch["low_res"].max() <= 1.0
  # The low-res input shows the same picture as the target.
  target_64 = batch["image"].reshape(2, 64, 4, 64, 4, 3).mean(axis=(2, 4))
  assert np.abs(target_64 - batch["low_res"]).mean() < 0.15


def test_text_batches_have_tokens_and_masks(base_config):
  config = _config(base_config, task="text", max_text_len=32)
  batch = next(pipeline.make_train_iterator(config, global_batch_size=4, seed=0, process_index=0, process_count=1))
  assert set(batch) == {"image", "tokens", "token_mask"}
  assert batch["tokens"].shape == (4, 32) and batch["tokens"].dtype == np.int32
  assert batch["token_mask"].shape == (4, 32) and batch["token_mask"].dtype == np.bool_
  assert batch["token_mask"][:, 0].all()
  assert np.all(batch["tokens"][~batch["token_mask"]] == 256)


def test_same_seed_gives_identical_batches_and_another_seed_differs(base_config):
  make = lambda seed: pipeline.make_train_iterator(base_config, global_batch_size=4, seed=seed, process_index=0,
                                                   process_count=1)
  first, again, other = _batches(make(5), 3), _batches(make(5), 3), _batches(make(6), 3)
  _assert_batches_equal(first, again)
  assert not np.array_equal(first[0]["image"], other[0]["image"])


def test_process_shards_are_disjoint_and_cover_the_split():
  seen = []
  for process_index in range(2):
    sampler = pipeline.make_sampler(TRAIN_SIZE, seed=3, process_index=process_index, process_count=2, shuffle=True,
                                    num_epochs=1)
    # A process reads the sampler's global positions process_index, process_index + 2, ...
    keys = [sampler[position].record_key for position in range(process_index, len(sampler), 2)]
    assert len(keys) == TRAIN_SIZE // 2 and len(set(keys)) == len(keys)
    seen.append(set(keys))
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] == set(range(TRAIN_SIZE))


def test_two_processes_see_different_examples(base_config):
  batches = [next(pipeline.make_train_iterator(base_config, global_batch_size=8, seed=0, process_index=p,
                                               process_count=2)) for p in range(2)]
  images = [tuple(np.round(b["image"].mean(axis=(1, 2, 3)), 5)) for b in batches]
  assert not set(images[0]) & set(images[1])


def test_resuming_from_saved_state_continues_exactly(base_config):
  config = _config(base_config, uncond_p=0.5)
  make = lambda: pipeline.make_train_iterator(config, global_batch_size=4, seed=2, process_index=0, process_count=1)
  uninterrupted = make()
  _batches(uninterrupted, 3)
  state = uninterrupted.get_state()
  expected = _batches(uninterrupted, 6)  # crosses an epoch boundary (16 records / 4)
  resumed = make()
  resumed.set_state(state)
  _assert_batches_equal(_batches(resumed, 6), expected)


def test_eval_iterator_is_one_ordered_pass_without_augmentation(base_config):
  config = _config(base_config, uncond_p=1.0)
  batches = list(pipeline.make_eval_iterator(config, global_batch_size=2, process_index=0, process_count=1))
  assert len(batches) == VAL_SIZE // 2
  assert not np.all(batches[0]["condition"] == 1.0)  # no condition dropout in evaluation
  again = list(pipeline.make_eval_iterator(config, global_batch_size=2, process_index=0, process_count=1))
  _assert_batches_equal(batches, again)


def test_flip_and_condition_dropout_happen_with_the_configured_probabilities(base_config):
  config = _config(base_config, uncond_p=0.3, image_size=256)
  source = pipeline.open_data_source(config, "train")
  element = source[0]
  transform = pipeline.make_transform(config, augment=True)
  plain = pipeline.make_transform(config, augment=False).random_map(element, np.random.default_rng(0))
  flips = drops = 0
  draws = 300
  for seed in range(draws):
    out = transform.random_map(element, np.random.default_rng(seed))
    flipped = np.array_equal(out["image"], plain["image"][:, ::-1])
    assert flipped or np.array_equal(out["image"], plain["image"])
    flips += flipped
    if np.all(out["condition"] == 1.0):
      drops += 1
    else:
      reference = plain["condition"][:, ::-1] if flipped else plain["condition"]
      np.testing.assert_array_equal(out["condition"], reference)  # flip shared by image and condition
  # Binomial standard deviations: flip 0.029, dropout 0.026; allow 4 of them.
  assert abs(flips / draws - 0.5) < 0.12
  assert abs(drops / draws - 0.3) < 0.11


def test_random_crop_keeps_the_sizes(base_config):
  config = _config(base_config, random_crop=True, task="sketch")
  batch = next(pipeline.make_train_iterator(config, global_batch_size=2, seed=0, process_index=0, process_count=1))
  assert batch["image"].shape == (2, 64, 64, 3) and batch["condition"].shape == (2, 256, 256, 1)


def test_null_condition_is_all_ones():
  condition = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
  assert np.all(conditions.null_condition(condition) == 1.0)


def test_config_errors_say_what_to_change(base_config):
  with pytest.raises(PitiError, match="data.task"):
    pipeline.make_transform(_config(base_config, task="segmentation"), augment=True)
  with pytest.raises(PitiError, match="not divisible"):
    pipeline.make_train_iterator(base_config, global_batch_size=5, seed=0, process_index=0, process_count=2)
  with pytest.raises(PitiError, match="no split"):
    pipeline.open_data_source(base_config, "test")


def test_to_global_makes_sharded_jax_arrays(base_config):
  import jax

  from piti_jax.train import partition

  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  batch = next(pipeline.make_train_iterator(base_config, global_batch_size=8, seed=0, process_index=0,
                                            process_count=1))
  global_batch = partition.to_global(batch, sharding)
  assert global_batch["image"].shape == (8, 64, 64, 3)
  assert global_batch["condition"].sharding == sharding
  np.testing.assert_array_equal(np.asarray(global_batch["image"]), batch["image"])


def test_processes_preparing_at_once_build_the_dataset_once(tmp_path):
  import subprocess
  import sys

  code = ("import sys; from piti_jax.data.config import default_data_config; "
          "from piti_jax.data.datasets import prepare_dataset; c = default_data_config(); "
          "c.data_dir = sys.argv[1]; c.train_size, c.val_size = 8, 2; "
          "print(len(prepare_dataset(c).as_data_source(split='train')))")
  processes = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
  outputs = [p.communicate(timeout=120) for p in processes]
  assert [p.returncode for p in processes] == [0, 0], [o[1][-2000:] for o in outputs]
  assert [o[0].strip().splitlines()[-1] for o in outputs] == ["8", "8"]


def test_a_worker_process_resumes_exactly_and_reads_the_same_examples(base_config):
  config = _config(base_config, num_workers=1, uncond_p=0.5)
  make = lambda: pipeline.make_train_iterator(config, global_batch_size=4, seed=4, process_index=0, process_count=1)
  first = make()
  head = _batches(first, 2)
  state = first.get_state()
  tail = _batches(first, 3)
  resumed = make()
  resumed.set_state(state)
  _assert_batches_equal(_batches(resumed, 3), tail)
  in_process = _batches(pipeline.make_train_iterator(_config(config, num_workers=0), global_batch_size=4, seed=4,
                                                     process_index=0, process_count=1), 2)
  _assert_batches_equal(head, in_process)  # one worker groups records exactly as the main process does


def test_text_upsampler_batches_have_tokens_and_low_res(base_config):
  config = _config(base_config, task="text", image_size=256, low_res_size=64, degradation="bicubic", max_text_len=8)
  batch = next(pipeline.make_train_iterator(config, global_batch_size=2, seed=0, process_index=0, process_count=1))
  assert set(batch) == {"image", "tokens", "token_mask", "low_res"}
  assert batch["image"].shape == (2, 256, 256, 3) and batch["low_res"].shape == (2, 64, 64, 3)
  target_64 = batch["image"].reshape(2, 64, 4, 64, 4, 3).mean(axis=(2, 4))
  assert np.abs(target_64 - batch["low_res"]).mean() < 0.05


def test_flipped_captions_swap_left_and_right():
  assert pipeline.swap_left_right("a circle to the left of a star on sand") == (
      "a circle to the right of a star on sand")


def test_train_subset_reads_only_the_first_records(base_config):
  config = _config(base_config, train_subset=4, flip=False, eval_split="train")
  ordered = list(pipeline.make_eval_iterator(config, global_batch_size=2, process_index=0, process_count=1))
  assert len(ordered) == 2  # the subset is one pass of 4 records
  first_four = {image.tobytes() for batch in ordered for image in batch["image"]}
  train = pipeline.make_train_iterator(config, global_batch_size=2, seed=0, process_index=0, process_count=1)
  seen = {image.tobytes() for batch in _batches(train, 8) for image in batch["image"]}
  assert seen == first_four and len(seen) == 4
  with pytest.raises(PitiError, match="train_subset"):
    next(pipeline.make_train_iterator(_config(base_config, train_subset=TRAIN_SIZE + 1), global_batch_size=2, seed=0,
                                      process_index=0, process_count=1))


NO_TENSORFLOW = """
import json, sys
import ml_collections
import numpy as np
from piti_jax import demo, inference, main, sampling
from piti_jax.data import pipeline
from piti_jax.evaluation import runner
from piti_jax.train import loop, metrics
config = ml_collections.ConfigDict(json.loads(sys.argv[1]))
batch = next(pipeline.make_train_iterator(config, global_batch_size=2, seed=0, process_index=0, process_count=1))
next(pipeline.make_eval_iterator(config, global_batch_size=2, process_index=0, process_count=1))
writer = metrics.make_writer(sys.argv[2])
progress = metrics.make_progress(2, writer, 1)
for step in (1, 2):
  progress(step)
  writer.write_scalars(step, {"loss": float(batch["image"].mean())})
writer.write_image(2, "samples", np.zeros((4, 4, 3), np.uint8))
writer.close()
print(sorted(name for name in sys.modules if name.split(".")[0] == "tensorflow")[:3])
"""


def test_training_sampling_and_evaluation_modules_and_reading_data_do_not_load_tensorflow(base_config, tmp_path):
  """The import of TensorFlow costs 0.6-0.8 GiB of resident memory; only dataset preparation may load it."""
  import subprocess
  import sys

  config = _config(base_config, prepare=False)  # read what the fixture prepared, build nothing
  result = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, config.to_json(), str(tmp_path)], capture_output=True,
                          text=True, timeout=300, check=False, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout
  assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1
