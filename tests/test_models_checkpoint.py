"""Model checkpoints: round trip, format, and errors that name every mismatch."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from piti_jax.errors import PitiError
from piti_jax.models import (create_model, from_checkpoint, get_config, load_into, load_params, save_checkpoint,
                             save_model)
from piti_jax.models.checkpoint import expected_shapes


@functools.cache
def _sketch_model():
  return create_model("tiny_piti64", rngs=nnx.Rngs(3), task="sketch", dropout=0.0)


def _flat_params(model) -> dict:
  return {path: np.asarray(v[...]) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_round_trip_keeps_params_and_architecture(tmp_path):
  model = _sketch_model()
  directory = str(tmp_path / "ckpt")
  save_model(model, directory)
  with open(os.path.join(directory, "model_config.json")) as f:
    meta = json.load(f)
  assert meta == {"format": "piti_jax.model", "version": 1, "preset": "tiny_piti64",
                  "overrides": {"task": "sketch", "dropout": 0.0}}
  assert not os.path.exists(directory + ".tmp")
  restored = from_checkpoint(directory)
  assert restored.config == model.config
  assert nnx.graphdef(restored) == nnx.graphdef(model)
  original, loaded = _flat_params(model), _flat_params(restored)
  assert original.keys() == loaded.keys()
  assert all(np.array_equal(original[k], loaded[k]) for k in original)
  bf16 = from_checkpoint(directory, dtype=jnp.bfloat16)
  assert bf16.decoder.dtype == jnp.bfloat16
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(nnx.state(bf16, nnx.Param)))


def test_pure_dict_with_integer_keys_is_accepted(tmp_path):
  model = _sketch_model()
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  assert 0 in params["decoder"]["input_blocks"]
  directory = str(tmp_path / "from_dict")
  save_checkpoint(directory, params, preset="tiny_piti64", overrides={"task": "sketch", "dropout": 0.0})
  loaded = load_params(directory)
  kernel = loaded["decoder"]["input_blocks"]["1"]["0"]["in_layers"]["2"]["kernel"]
  np.testing.assert_array_equal(kernel, np.asarray(model.decoder.input_blocks[1][0].in_layers[2].kernel[...]))
  assert set(expected_shapes(get_config("tiny_piti64", task="sketch"))) == set(
      ".".join(map(str, p)) for p in _flat_params(model))


def test_mismatching_params_name_each_problem_and_write_nothing(tmp_path):
  params = nnx.to_pure_dict(nnx.state(_sketch_model(), nnx.Param))
  del params["decoder"]["out"][2]["bias"]
  params["decoder"]["extra_layer"] = {"kernel": np.zeros((2, 2), np.float32)}
  params["encoder"]["cnn"]["conv1"]["kernel"] = np.zeros((7, 7, 3, 8), np.float32)
  directory = str(tmp_path / "bad")
  with pytest.raises(PitiError) as error:
    save_checkpoint(directory, params, preset="tiny_piti64", overrides={"task": "sketch", "dropout": 0.0})
  message = str(error.value)
  assert "missing: decoder.out.2.bias" in message
  assert "unexpected: decoder.extra_layer.kernel" in message
  assert "shape mismatch: encoder.cnn.conv1.kernel: got (7, 7, 3, 8), expected (7, 7, 1, 8)" in message
  assert not os.path.exists(directory) and not os.path.exists(directory + ".tmp")


def test_loading_into_another_architecture_names_the_mismatch(tmp_path):
  directory = str(tmp_path / "sketch")
  save_model(_sketch_model(), directory)
  with pytest.raises(PitiError, match=r"shape mismatch: encoder\.cnn\.conv1\.kernel"):
    load_params(directory, get_config("tiny_piti64", task="depth"))
  with pytest.raises(PitiError, match=r"shape mismatch: encoder\.cnn\.conv1\.kernel"):
    load_into(create_model("tiny_piti64", rngs=nnx.Rngs(0)), directory)


def test_load_into_a_model_with_other_non_parameter_settings(tmp_path):
  directory = str(tmp_path / "sketch")
  save_model(_sketch_model(), directory)
  model = create_model("tiny_piti64", rngs=nnx.Rngs(9), task="sketch", dropout=0.3)
  load_into(model, directory)
  assert model.config.dropout == 0.3
  loaded, expected = _flat_params(model), _flat_params(_sketch_model())
  assert all(np.array_equal(loaded[k], expected[k]) for k in expected)


def test_missing_or_foreign_directories_raise(tmp_path):
  with pytest.raises(PitiError, match="does not exist"):
    from_checkpoint(str(tmp_path / "nowhere"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(PitiError, match="not a model checkpoint"):
    from_checkpoint(str(tmp_path / "empty"))
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "model_config.json").write_text(json.dumps({"format": "something", "version": 7}))
  with pytest.raises(PitiError, match="format"):
    from_checkpoint(str(tmp_path / "other"))
  (tmp_path / "no_params").mkdir()
  (tmp_path / "no_params" / "model_config.json").write_text(
      json.dumps({"format": "piti_jax.model", "version": 1, "preset": "tiny_piti64", "overrides": {}}))
  with pytest.raises(PitiError, match="incomplete"):
    from_checkpoint(str(tmp_path / "no_params"))


def test_existing_directory_needs_overwrite(tmp_path):
  directory = str(tmp_path / "ckpt")
  save_model(_sketch_model(), directory)
  with pytest.raises(PitiError, match="already exists"):
    save_model(_sketch_model(), directory)
  other = create_model("tiny_piti64", rngs=nnx.Rngs(4), task="sketch", dropout=0.0)
  save_model(other, directory, overwrite=True)
  restored = _flat_params(from_checkpoint(directory))
  expected = _flat_params(other)
  assert all(np.array_equal(restored[k], expected[k]) for k in expected)
