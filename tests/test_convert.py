"""Checkpoint import: PyTorch state dict -> NNX params -> model checkpoint, without torch.

Synthetic state dicts use the key names and shapes that the official PyTorch code produces
(tests/data/convert_*_keys.txt, written from `state_dict()` of the reference models).
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from piti_jax.convert import mapping, pipeline
from piti_jax.convert.__main__ import main as convert_cli
from piti_jax.errors import PitiError
from piti_jax.models import checkpoint as model_checkpoint
from piti_jax.models import from_checkpoint, get_config
from piti_jax.models.presets import build_model
from piti_jax.param_paths import flatten

DATA = os.path.join(os.path.dirname(__file__), "data")
GLIDE_TINY = dict(model_channels=32, num_res_blocks=1, channel_mult=(1, 2, 2, 2), attention_ds=(4, 8),
                  num_head_channels=32, xf_width=128, xf_layers=2, xf_heads=4, text_ctx=16)


def _read_key_shapes(name: str) -> dict[str, tuple[int, ...]]:
  shapes = {}
  with open(os.path.join(DATA, name)) as f:
    for line in f:
      if line.startswith("#") or not line.strip():
        continue
      key, shape = line.rstrip("\n").split("\t")
      shapes[key] = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
  return shapes


def _synthetic_state_dict(key_shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
  """Distinct random float32 values for every key, in PyTorch layout."""
  rng = np.random.default_rng(seed)
  return {key: rng.standard_normal(shape, dtype=np.float32) for key, shape in key_shapes.items()}


def _to_torch_layout(value: np.ndarray, leaf: str, torch_shape: tuple[int, ...]) -> np.ndarray:
  """Inverse of mapping.to_nnx_layout (used to check the round trip)."""
  if leaf == "kernel" and value.ndim == 2:
    return value.T.reshape(torch_shape)  # Linear (out, in) or Conv1d (out, in, 1)
  if leaf == "kernel" and value.ndim == 4:
    return value.transpose(3, 2, 0, 1)
  return value


@functools.cache
def _piti_keys() -> dict[str, tuple[int, ...]]:
  return _read_key_shapes("convert_piti_bench_tiny_keys.txt")


@functools.cache
def _glide_keys() -> dict[str, tuple[int, ...]]:
  return _read_key_shapes("convert_glide_tiny_keys.txt")


@functools.cache
def _shapes(preset: str, **overrides) -> dict[str, tuple[int, ...]]:
  return model_checkpoint.expected_shapes(get_config(preset, **overrides))


def _glide_tiny_shapes() -> dict[str, tuple[int, ...]]:
  return _shapes("glide_base64", **GLIDE_TINY)


def test_reference_piti_keys_round_trip_every_tensor():
  key_shapes = _piti_keys()
  assert len(key_shapes) == 336
  state_dict = _synthetic_state_dict(key_shapes)
  conversion = mapping.convert_state_dict(state_dict, _shapes("bench_tiny"), preset="bench_tiny", family="piti")
  assert conversion.source_layout == "piti" and not conversion.fresh and not conversion.dropped
  assert set(conversion.params) == set(_shapes("bench_tiny"))
  assert len(conversion.params) == len(state_dict)
  for path, value in conversion.params.items():
    key = mapping.torch_key_for_path(path)
    leaf = path.rsplit(".", 1)[1]
    np.testing.assert_array_equal(_to_torch_layout(value, leaf, key_shapes[key]), state_dict[key], err_msg=key)


def test_layouts_of_each_kind_of_tensor():
  state_dict = _synthetic_state_dict(_piti_keys(), seed=1)
  params = mapping.convert_state_dict(state_dict, _shapes("bench_tiny"), preset="bench_tiny", family="piti").params
  conv = state_dict["decoder.input_blocks.1.0.in_layers.2.weight"]  # (out, in, kh, kw)
  assert params["decoder.input_blocks.1.0.in_layers.2.kernel"][2, 0, 5, 7] == conv[7, 5, 2, 0]
  conv1d = state_dict["decoder.input_blocks.5.1.qkv.weight"]  # (out, in, 1)
  assert conv1d.shape[-1] == 1
  assert params["decoder.input_blocks.5.1.qkv.kernel"][3, 11] == conv1d[11, 3, 0]
  linear = state_dict["encoder.transformer.resblocks.1.mlp.c_fc.weight"]  # (out, in)
  assert params["encoder.transformer.resblocks.1.mlp.c_fc.kernel"][4, 9] == linear[9, 4]
  np.testing.assert_array_equal(params["encoder.cnn.norm3.scale"], state_dict["encoder.cnn.norm3.weight"])
  np.testing.assert_array_equal(params["decoder.out.0.scale"], state_dict["decoder.out.0.weight"])
  np.testing.assert_array_equal(params["encoder.positional_embedding"], state_dict["encoder.positional_embedding"])
  assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in params.values())


def test_reference_glide_keys_convert_to_a_glide_model():
  state_dict = _synthetic_state_dict(_glide_keys())
  conversion = mapping.convert_state_dict(state_dict, _glide_tiny_shapes(), preset="glide_base64", family="glide")
  assert conversion.source_layout == "glide" and not conversion.fresh and not conversion.dropped
  assert len(conversion.params) == len(state_dict) == 315
  params = conversion.params
  np.testing.assert_array_equal(params["encoder.token_embedding.embedding"], state_dict["token_embedding.weight"])
  np.testing.assert_array_equal(params["encoder.final_ln.scale"], state_dict["final_ln.weight"])
  np.testing.assert_array_equal(params["decoder.transformer_proj.kernel"], state_dict["transformer_proj.weight"].T)
  np.testing.assert_array_equal(params["decoder.out.2.bias"], state_dict["out.2.bias"])


def test_glide_checkpoint_initialises_a_piti_model(tmp_path):
  state_dict = _synthetic_state_dict(_glide_keys(), seed=2)
  report = pipeline.convert_to_checkpoint(state_dict, "bench_tiny", str(tmp_path / "ckpt"), seed=3)
  text_side = [k for k in state_dict if mapping.is_text_side_key(k)]
  assert sorted(report.dropped_keys) == sorted(text_side) and len(text_side) == 29
  encoder_paths = {p for p in _shapes("bench_tiny") if p.startswith("encoder.")}
  assert set(report.fresh_paths) == encoder_paths
  assert report.converted_tensors == len(state_dict) - len(text_side)
  assert f"freshly initialised {len(encoder_paths)} tensors" in report.summary()
  assert "encoder.cnn.conv1.kernel" in report.summary()

  flat = flatten(model_checkpoint.load_params(str(tmp_path / "ckpt")))
  assert set(flat) == set(_shapes("bench_tiny"))
  for key, value in state_dict.items():
    if key not in text_side:
      path = next(p for p in flat if mapping.torch_key_for_path(p) == "decoder." + key)
      np.testing.assert_array_equal(_to_torch_layout(flat[path], path.rsplit(".", 1)[1], value.shape), value)
  config = get_config("bench_tiny")
  fresh_model = flatten(nnx.to_pure_dict(nnx.state(build_model(config, rngs=nnx.Rngs(3)), nnx.Param)))
  for path in encoder_paths:
    np.testing.assert_array_equal(flat[path], np.asarray(fresh_model[path]))
  assert float(np.abs(flat["encoder.cnn.conv1.kernel"]).max()) > 0


@pytest.mark.parametrize("key_file, preset, tensors, parameters", [
    ("convert_piti_base64_keys.txt", "piti_base64", 708, 308_728_902 + 29_286_400),
    ("convert_piti_upsample256_keys.txt", "piti_upsample256", 722, 351_345_862),
    ("convert_glide_base64_keys.txt", "glide_base64", 783, 385_030_726),
    ("convert_glide_upsample256_keys.txt", "glide_upsample256", 797, 398_361_286),
])
def test_released_checkpoint_layouts_map_one_to_one(key_file, preset, tensors, parameters):
  """The names and shapes of the public GLIDE and PITI checkpoints fit the presets exactly."""
  key_shapes = _read_key_shapes(key_file)
  config = get_config(preset)
  plan = mapping.plan_conversion(key_shapes, _shapes(preset), preset=preset, family=config.family)
  assert len(key_shapes) == tensors == len(plan.sources)
  assert sorted(plan.sources.values()) == sorted(key_shapes) and not plan.fresh and not plan.dropped
  assert sum(int(np.prod(shape)) for shape in key_shapes.values()) == parameters


@pytest.mark.parametrize("glide_keys, piti_preset", [("convert_glide_base64_keys.txt", "piti_base64"),
                                                     ("convert_glide_upsample256_keys.txt", "piti_upsample256")])
def test_released_glide_checkpoints_initialise_piti_decoders(glide_keys, piti_preset):
  key_shapes = _read_key_shapes(glide_keys)
  plan = mapping.plan_conversion(key_shapes, _shapes(piti_preset), preset=piti_preset, family="piti")
  assert all(path.startswith("decoder.") for path in plan.sources)
  assert {p for p in _shapes(piti_preset) if p.startswith("encoder.")} == set(plan.fresh)
  assert set(plan.dropped) == {k for k in key_shapes if mapping.is_text_side_key(k)}
  assert len(plan.sources) + len(plan.dropped) == len(key_shapes)
  assert plan.sources["decoder.transformer_proj.kernel"] == "transformer_proj.weight"


def _expect_failure(state_dict, out_dir, *names):
  with pytest.raises(PitiError) as error:
    pipeline.convert_to_checkpoint(state_dict, "bench_tiny", str(out_dir))
  for name in names:
    assert name in str(error.value)
  assert not os.path.exists(out_dir) and not os.path.exists(f"{out_dir}.tmp")
  return str(error.value)


def test_bad_checkpoints_name_every_problem_and_write_nothing(tmp_path):
  good = _synthetic_state_dict(_piti_keys())
  out = tmp_path / "ckpt"

  missing = dict(good)
  del missing["decoder.middle_block.1.proj_out.weight"], missing["encoder.cls_token"]
  message = _expect_failure(missing, out, "decoder.middle_block.1.proj_out.weight", "encoder.cls_token",
                            "missing keys")
  assert "unexpected" not in message

  extra = dict(good, **{"decoder.input_blocks.1.0.extra.weight": np.zeros((2, 2), np.float32)})
  _expect_failure(extra, out, "unexpected keys", "decoder.input_blocks.1.0.extra.weight")

  wrong = dict(good)
  wrong["decoder.time_embed.2.weight"] = np.zeros((128, 64), np.float32)
  _expect_failure(wrong, out, "shape mismatches", "decoder.time_embed.2.weight", "(128, 64)", "(128, 128)")

  everything = dict(missing, **{"decoder.extra.bias": np.zeros(3, np.float32)})
  everything["decoder.out.2.bias"] = np.zeros(5, np.float32)
  _expect_failure(everything, out, "encoder.cls_token", "decoder.extra.bias", "decoder.out.2.bias")


def test_layout_and_family_errors(tmp_path):
  piti = _synthetic_state_dict(_piti_keys())
  with pytest.raises(PitiError, match="PITI checkpoint.*GLIDE"):
    mapping.convert_state_dict(piti, _glide_tiny_shapes(), preset="glide_base64", family="glide")
  mixed = dict(piti, **{"time_embed.0.bias": np.zeros(128, np.float32)})
  with pytest.raises(PitiError, match="mixes"):
    mapping.detect_source_layout(list(mixed))
  with pytest.raises(PitiError, match="encoder.cnn.conv1.weight"):  # a mask checkpoint forced to --task sketch
    pipeline.convert_to_checkpoint(piti, "bench_tiny", str(tmp_path / "x"), task="sketch")
  assert not os.path.exists(tmp_path / "x")


def test_task_is_read_from_the_first_conv():
  sketch = dict(_synthetic_state_dict(_piti_keys()))
  sketch["encoder.cnn.conv1.weight"] = np.zeros((32, 1, 7, 7), np.float32)
  assert pipeline.infer_task(sketch) == "sketch"
  assert pipeline.resolve_config("bench_tiny", sketch, None).task == "sketch"
  assert pipeline.infer_task(_synthetic_state_dict(_glide_keys())) is None
  with pytest.raises(PitiError, match="--task applies to PITI presets only"):
    pipeline.resolve_config("glide_base64", sketch, "mask")


def test_cli_reports_errors_without_a_traceback(tmp_path, capsys):
  status = convert_cli(["--src", str(tmp_path / "missing.pt"), "--model", "bench_tiny", "--out", str(tmp_path / "o")])
  assert status == 2
  assert "does not exist" in capsys.readouterr().err
  assert not os.path.exists(tmp_path / "o")
  (tmp_path / "o").mkdir()
  status = convert_cli(["--src", str(tmp_path / "missing.pt"), "--model", "bench_tiny", "--out", str(tmp_path / "o")])
  assert status == 2 and "--overwrite" in capsys.readouterr().err


@functools.cache
def _forward():
  """One compiled forward for every model of the tiny_piti64 architecture."""

  @jax.jit
  def run(graphdef, state, x_t, t, cond):
    return nnx.merge(graphdef, state)(x_t, t, cond)

  return run


def test_converted_checkpoint_reproduces_the_model(tmp_path):
  """Model params -> PyTorch-layout state dict -> checkpoint -> from_checkpoint: identical outputs."""
  model = build_model(get_config("tiny_piti64"), rngs=nnx.Rngs(4))
  # Make the zero-initialised output layers non-zero so that every tensor affects the output.
  state = nnx.state(model, nnx.Param)
  rng = np.random.default_rng(5)
  nnx.replace_by_pure_dict(state, jax.tree.map(
      lambda v: np.asarray(v) + rng.normal(0.0, 0.05, v.shape).astype(np.float32), nnx.to_pure_dict(state)))
  nnx.update(model, state)
  params = flatten(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  state_dict = {}
  for path, value in params.items():
    leaf = path.rsplit(".", 1)[1]
    torch_shape = value.shape[::-1] if leaf == "kernel" and value.ndim == 2 else None
    state_dict[mapping.torch_key_for_path(path)] = _to_torch_layout(np.asarray(value), leaf, torch_shape)

  report = pipeline.convert_to_checkpoint(state_dict, "tiny_piti64", str(tmp_path / "ckpt"))
  assert report.converted_tensors == len(params) and not report.fresh_paths
  restored = from_checkpoint(str(tmp_path / "ckpt"))

  rng = np.random.default_rng(5)
  x_t = jnp.asarray(rng.standard_normal((1, 64, 64, 3), np.float32))
  cond = jnp.asarray(rng.uniform(-1, 1, (1, 256, 256, 3)).astype(np.float32))
  t = jnp.array([321])
  expected = _forward()(*nnx.split(model), x_t, t, cond)
  got = _forward()(*nnx.split(restored), x_t, t, cond)
  assert float(jnp.abs(expected).max()) > 0
  np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
