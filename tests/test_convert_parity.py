"""The parity check's own machinery, without a reference checkout (the comparison itself needs one)."""

import math
import os

import numpy as np
import pytest

from piti_jax.convert import parity
from piti_jax.errors import PitiError

SHAPES = {
    "decoder.out.2.weight": (6, 192, 3, 3),  # zero-initialised in the reference
    "decoder.out.2.bias": (6,),
    "decoder.input_blocks.4.1.qkv.weight": (1152, 384, 1),
    "encoder.final_ln.weight": (512,),
    "encoder.positional_embedding": (1, 257, 512),
    "token_embedding.weight": (100, 16),
}


def test_random_state_dict_is_non_zero_deterministic_and_scaled_like_pytorch():
  values = parity.random_state_dict(SHAPES, seed=3)
  assert list(values) == list(SHAPES)
  for key, shape in SHAPES.items():
    assert values[key].shape == shape and values[key].dtype == np.float32 and np.all(values[key] != 0), key
  for key in ("decoder.out.2.weight", "decoder.input_blocks.4.1.qkv.weight"):
    bound = 1 / math.sqrt(math.prod(SHAPES[key][1:]))
    assert 0.9 * bound < np.abs(values[key]).max() <= bound, key
  assert 0.5 <= values["encoder.final_ln.weight"].min() and values["encoder.final_ln.weight"].max() <= 1.5
  assert np.abs(values["encoder.positional_embedding"]).max() > 0.9  # tables ~ U(-1, 1)
  again, other = parity.random_state_dict(SHAPES, seed=3), parity.random_state_dict(SHAPES, seed=4)
  assert all(np.array_equal(values[k], again[k]) and not np.array_equal(values[k], other[k]) for k in SHAPES)


def test_relative_error_is_relative_to_the_largest_reference_value():
  reference = np.array([[4.0, -2.0], [0.0, 1.0]])
  assert parity.relative_error(reference + np.array([[0, 0], [1e-3, 0]]), reference) == pytest.approx(2.5e-4)
  with pytest.raises(PitiError, match="shapes differ"):
    parity.relative_error(reference[0], reference)


def test_checkouts_are_recognised_and_wrong_ones_named(tmp_path, capsys):
  for layout, module in parity.REFERENCE_MODULES.items():
    path = tmp_path / layout / (module.replace(".", os.sep) + ".py")
    path.parent.mkdir(parents=True)
    path.write_text("")
    assert parity.reference_layout(str(tmp_path / layout)) == layout
  assert parity.main(["--piti-repo", str(tmp_path), "--model", "piti_base64"]) == 2
  assert "neither a PITI-Synthesis/PITI checkout" in capsys.readouterr().err
  assert parity.main(["--piti-repo", str(tmp_path / "glide"), "--model", "piti_base64"]) == 2
  assert "pass a PITI-Synthesis/PITI checkout" in capsys.readouterr().err
  assert parity.main(["--piti-repo", str(tmp_path / "glide"), "--model", "glide_base64", "--task", "mask"]) == 2
  assert "--task applies to PITI presets only" in capsys.readouterr().err
