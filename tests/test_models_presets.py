"""Presets: exact parameter counts, the reference's names and shapes, metadata. Abstract shapes only."""

import ast
import hashlib

import numpy as np
import pytest
from flax import nnx

from piti_jax.errors import PitiError
from piti_jax.models import PRESETS, get_config
from piti_jax.models.__main__ import main, parameter_table
from piti_jax.models.presets import abstract_model, param_count

# Exact totals (encoder, decoder). GLIDE's published totals: base 385,030,726, upsampler
# 398,361,286; PITI base: decoder 308,728,902 + mask encoder 29,286,400 (the reference key list).
EXPECTED_COUNTS = {
    "glide_base64": (76_301_824, 308_728_902),
    "glide_upsample256": (76_301_824, 322_059_462),
    "glide_full_base64": (1_312_053_248, 2_242_360_838),
    "piti_base64": (29_286_400, 308_728_902),
    "piti_upsample256": (29_286_400, 322_059_462),
    "bench_tiny": (2_594_176, 2_097_990),
    "bench_small": (5_979_904, 27_128_646),
    "tiny_text64": (3_282_944, 869_958),
    "tiny_piti64": (166_336, 869_958),
    "tiny_text_upsample64": (3_282_944, 870_822),
    "tiny_piti_upsample64": (166_336, 870_822),
}

# sorted "key\t(shape)" lines of ../shared/reference/{tiny,base64}_state_dict_keys.txt
# (the PyTorch reference model's state_dict): entry count, parameter total and SHA-256.
REFERENCE_LISTS = {
    "bench_tiny": (336, 4_692_166, "a5213f09fe0c7152f135a26d4f5284d1f0a35ab0ad426818586289fb0027d11d"),
    "piti_base64": (708, 338_015_302, "10396aebf8ea12e307e5c47e46f8859288f16e79e31aa435f2abc0bbac05e7b9"),
}


def _torch_style_entries(preset: str) -> list[str]:
  """The model's params renamed and reshaped by the documented rule, as reference 'key\\t(shape)' lines.

  kernel (kh, kw, I, O) -> weight (O, I, kh, kw); kernel (I, O) -> weight (O, I), or (O, I, 1) for the
  UNet attention's kernel-1 Conv1d layers (qkv, encoder_kv, proj_out); scale/embedding -> weight.
  """
  lines = []
  for path, leaf in nnx.to_flat_state(nnx.state(abstract_model(get_config(preset)), nnx.Param)):
    *module, name = [str(p) for p in path]
    shape = tuple(leaf.shape)
    if name == "kernel":
      if len(shape) == 4:
        shape = (shape[3], shape[2], shape[0], shape[1])
      else:
        shape = (shape[1], shape[0]) + ((1,) if module[-1] in ("qkv", "encoder_kv", "proj_out") else ())
    if name in ("kernel", "scale", "embedding"):
      name = "weight"
    lines.append(f"{'.'.join(module + [name])}\t{shape}")
  return sorted(lines)


@pytest.mark.parametrize("preset", sorted(EXPECTED_COUNTS))
def test_exact_parameter_counts(preset):
  model = abstract_model(PRESETS[preset])
  encoder = param_count(nnx.state(model.encoder, nnx.Param))
  decoder = param_count(nnx.state(model.decoder, nnx.Param))
  assert (encoder, decoder) == EXPECTED_COUNTS[preset]
  assert param_count(nnx.state(model, nnx.Param)) == sum(EXPECTED_COUNTS[preset])


def test_published_totals():
  assert sum(EXPECTED_COUNTS["glide_base64"]) == 385_030_726
  assert sum(EXPECTED_COUNTS["glide_upsample256"]) == 398_361_286
  assert 3.5e9 < sum(EXPECTED_COUNTS["glide_full_base64"]) < 3.6e9


@pytest.mark.parametrize("preset", sorted(REFERENCE_LISTS))
def test_names_and_shapes_equal_reference_state_dict(preset):
  lines = _torch_style_entries(preset)
  count, total, digest = REFERENCE_LISTS[preset]
  assert len(lines) == count
  assert sum(int(np.prod(ast.literal_eval(line.split("\t")[1]))) for line in lines) == total
  assert hashlib.sha256("\n".join(lines).encode()).hexdigest() == digest, (
      "names/shapes differ from the reference key list; diff _torch_style_entries() against "
      "../shared/reference/*_state_dict_keys.txt")


def test_reference_layout_spot_checks():
  state = dict(nnx.to_flat_state(nnx.state(abstract_model(get_config("bench_tiny")), nnx.Param)))
  shape = lambda *path: tuple(state[path].shape)
  assert shape("decoder", "input_blocks", 5, 1, "qkv", "kernel") == (64, 192)
  assert shape("decoder", "input_blocks", 5, 1, "encoder_kv", "kernel") == (128, 128)
  assert shape("decoder", "output_blocks", 5, 0, "skip_connection", "kernel") == (1, 1, 96, 64)
  assert shape("decoder", "out", 2, "kernel") == (3, 3, 32, 6)
  assert shape("decoder", "transformer_proj", "kernel") == (128, 128)
  assert shape("encoder", "cnn", "conv1", "kernel") == (7, 7, 3, 32)
  assert shape("encoder", "cnn", "conv6", "kernel") == (3, 3, 512, 128)
  assert shape("encoder", "positional_embedding") == (1, 257, 128)
  assert shape("encoder", "cls_token") == (1, 1, 128)


def test_glide_text_side_names():
  state = dict(nnx.to_flat_state(nnx.state(abstract_model(get_config("tiny_text64")), nnx.Param)))
  assert tuple(state[("encoder", "token_embedding", "embedding")].shape) == (50257, 64)
  assert tuple(state[("encoder", "positional_embedding")].shape) == (128, 64)
  assert tuple(state[("encoder", "padding_embedding")].shape) == (128, 64)
  assert tuple(state[("encoder", "transformer", "resblocks", 0, "attn", "c_qkv", "kernel")].shape) == (64, 192)
  assert tuple(state[("encoder", "final_ln", "scale")].shape) == (64,)
  assert tuple(state[("decoder", "transformer_proj", "kernel")].shape) == (64, 128)


@pytest.mark.parametrize("task,channels", [("mask", 3), ("sketch", 1), ("depth", 6)])
def test_task_input_channels(task, channels):
  model = abstract_model(get_config("piti_base64", task=task))
  assert model.encoder.cnn.conv1.kernel.shape == (7, 7, channels, 32)


def test_condition_size_sets_token_count():
  model = abstract_model(get_config("tiny_piti64", cond_size=128))
  assert model.encoder.positional_embedding.shape == (1, (128 // 16) ** 2 + 1, 64)
  tokens, pooled = nnx.eval_shape(lambda m, c: m.encode(c), model, np.zeros((2, 128, 128, 3), np.float32))
  assert tokens.shape == (2, 64, 64) and pooled.shape == (2, 64)


def test_kernels_carry_fsdp_metadata():
  flat = nnx.to_flat_state(nnx.state(abstract_model(get_config("bench_tiny")), nnx.Param))
  for path, variable in flat:
    dims = variable.get_metadata()["fsdp_dims"]
    if path[-1] == "kernel":
      assert dims == ((2, 3) if len(variable.shape) == 4 else (0, 1)), path
    elif path[-1] in ("bias", "scale"):
      assert dims == (), path


def test_bad_preset_and_overrides_raise():
  with pytest.raises(PitiError, match="unknown model preset"):
    get_config("piti_base65")
  with pytest.raises(PitiError, match="unknown model override"):
    get_config("piti_base64", num_channels=3)
  with pytest.raises(PitiError, match="task"):
    get_config("piti_base64", task="segmentation")
  with pytest.raises(PitiError, match="divisible by 32"):
    abstract_model(get_config("tiny_piti64", model_channels=48))
  with pytest.raises(PitiError, match="num_head_channels"):
    abstract_model(get_config("tiny_piti64", num_head_channels=48))


def test_parameter_table_cli(capsys):
  rows = dict(parameter_table("bench_tiny"))
  assert rows["total"] == REFERENCE_LISTS["bench_tiny"][1]
  assert rows["encoder (total)"] + rows["decoder (total)"] == rows["total"]
  assert rows["decoder.transformer_proj"] == 128 * 128 + 128
  assert main(["piti_base64", "task=sketch"]) == 0
  out = capsys.readouterr().out
  assert "308,728,902" in out and "decoder.input_blocks" in out
  assert main(["no_such_preset"]) == 2


def test_partition_rule_shards_kernels_on_a_feature_dimension():
  from piti_jax.train.partition import make_mesh, state_shardings
  state = nnx.state(abstract_model(get_config("bench_tiny")), nnx.Param)
  shardings = dict(nnx.to_flat_state(state_shardings(state, make_mesh(data=4, fsdp=2))))
  spec = lambda *path: tuple(shardings[path].get_value().spec)
  conv = spec("decoder", "input_blocks", 1, 0, "in_layers", 2, "kernel")
  assert conv[:2] == (None, None) and "fsdp" in conv  # never the 3x3 taps
  assert spec("encoder", "cnn", "conv1", "kernel") == (None, None, None, "fsdp")
  assert spec("decoder", "input_blocks", 5, 1, "qkv", "kernel") == (None, "fsdp")
  assert spec("decoder", "input_blocks", 1, 0, "in_layers", 0, "scale") == ()
