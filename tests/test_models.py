"""Forward behaviour of the tiny presets (shapes, zero init, encoder reuse, dtypes, dropout) and of the
layers, with their custom gradients and what those keep for the backward pass."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from piti_jax.errors import PitiError
from piti_jax.models import create_model, dropout, layers, target
from piti_jax.models.layers import (Conv2d, Dense, GroupNorm32, Init, LayerNorm, avg_pool_2x, exact_gelu, qkv_attention,
                                   resize_bilinear, timestep_embedding)
from piti_jax.models.task_encoder import CNN, TaskEncoder
from piti_jax.models.text_encoder import ResidualAttentionBlock
from piti_jax.models.unet import AttentionBlock, ResBlock

BATCH = 2


def _perturbed(model, seed: int):
  """The model with every parameter moved by N(0, 0.02^2), so zero-initialised layers act too."""
  graphdef, state = nnx.split(model)
  rng = np.random.default_rng(seed)
  state = jax.tree.map(lambda x: x + jnp.asarray(0.02 * rng.standard_normal(x.shape), jnp.float32), state)
  return nnx.merge(graphdef, state)


@nnx.jit
def _run_both_ways(model, x, t, cond):
  """(output from cond, output from encode(cond) passed as encoded, the encoding)."""
  encoded = model.encode(cond)
  return model(x, t, cond), model(x, t, encoded=encoded), encoded


@nnx.jit
def _encode(model, cond):
  return model.encode(cond)


@nnx.jit
def _run_train(model, x, t, cond, key):
  return model(x, t, cond, train=True, rngs=nnx.Rngs(dropout=key))


@nnx.jit
def _run_upsampler(model, x, t, cond, low_res):
  return model(x, t, cond, low_res=low_res)


def _inputs(seed: int = 0, image: int = 64):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((BATCH, image, image, 3)), jnp.float32)
  t = jnp.asarray([3.0, 781.25], jnp.float32)
  cond = jnp.asarray(rng.uniform(-1, 1, (BATCH, 256, 256, 3)), jnp.float32)
  return x, t, cond


def _text_cond(seed: int = 0):
  rng = np.random.default_rng(seed)
  mask = np.arange(128)[None] < np.array([[7], [90]])
  return {"tokens": jnp.asarray(rng.integers(0, 50257, (BATCH, 128)), jnp.int32), "mask": jnp.asarray(mask)}


@functools.cache
def _piti_fresh():
  return create_model("tiny_piti64", rngs=nnx.Rngs(0))


@functools.cache
def _piti_perturbed():
  return _perturbed(_piti_fresh(), 1)


@functools.cache
def _piti_outputs():
  """Outputs of the perturbed tiny PITI model on fixed inputs (float32, eval mode)."""
  return _run_both_ways(_piti_perturbed(), *_inputs())


def _relative_error(a, b) -> float:
  return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


def test_fresh_unet_outputs_zeros():
  out, _, (tokens, pooled) = _run_both_ways(_piti_fresh(), *_inputs())
  assert out.shape == (BATCH, 64, 64, 6) and out.dtype == jnp.float32
  assert not np.any(np.asarray(out))
  assert tokens.shape == (BATCH, 256, 64) and pooled.shape == (BATCH, 64)
  assert float(jnp.std(tokens)) > 0.1


def test_zero_init_only_where_the_reference_zero_inits():
  state = dict(nnx.to_flat_state(nnx.state(_piti_fresh(), nnx.Param)))
  weighted = {path[:-1] for path in state if path[-1] == "kernel"}  # Linear and Conv layers (not norms)
  zero = {path for path, v in state.items() if path[:-1] in weighted and not np.any(np.asarray(v[...]))}
  expected = {path for path in state if path[:-1] in weighted and (
      path[-3:-1] == ("out_layers", 3) or "proj_out" in path or path[:3] == ("decoder", "out", 2))}
  assert zero == expected
  assert any("proj_out" in p for p in zero) and ("decoder", "out", 2, "kernel") in zero


def test_fresh_init_follows_pytorch_defaults():
  model = _piti_fresh()
  kernel = np.asarray(model.decoder.input_blocks[1][0].in_layers[2].kernel[...])
  bound = 1.0 / math.sqrt(3 * 3 * kernel.shape[2])
  assert np.abs(kernel).max() <= bound
  assert abs(kernel.std() - bound / math.sqrt(3)) < 0.05 * bound
  bias = np.asarray(model.decoder.time_embed[0].bias[...])
  assert 0 < np.abs(bias).max() <= 1.0 / math.sqrt(32)
  assert np.all(np.asarray(model.decoder.input_blocks[1][0].in_layers[0].scale[...]) == 1)
  cls = np.asarray(model.encoder.cls_token[...])
  positional = np.asarray(model.encoder.positional_embedding[...])
  assert 0.005 < positional.std() < 0.015 and np.abs(cls).max() < 0.1


def test_same_key_same_model_and_different_key_different_model():
  a = create_model("tiny_piti64", rngs=nnx.Rngs(0))
  b = create_model("tiny_piti64", rngs=nnx.Rngs(5))
  leaves = lambda m: jax.tree.leaves(nnx.state(m, nnx.Param))
  assert all(np.array_equal(x, y) for x, y in zip(leaves(a), leaves(_piti_fresh())))
  assert not np.array_equal(a.encoder.cnn.conv1.kernel[...], b.encoder.cnn.conv1.kernel[...])


def test_encoder_is_the_same_function_however_called():
  from_cond, from_encoded, (tokens, pooled) = _piti_outputs()
  assert float(jnp.max(jnp.abs(from_cond))) > 1e-3
  np.testing.assert_array_equal(np.asarray(from_cond), np.asarray(from_encoded))
  assert tokens.shape == (BATCH, 256, 64) and pooled.shape == (BATCH, 64)


def test_condition_changes_output():
  x, t, cond = _inputs()
  out, _, _ = _piti_outputs()
  other, _, _ = _run_both_ways(_piti_perturbed(), x, t, jnp.ones_like(cond))
  assert _relative_error(other, out) > 1e-3


def test_bfloat16_matches_float32():
  model32 = _piti_perturbed()
  graphdef, state = nnx.split(create_model("tiny_piti64", rngs=nnx.Rngs(0), dtype=jnp.bfloat16))
  model16 = nnx.merge(graphdef, nnx.state(model32))
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(nnx.state(model16, nnx.Param)))
  out16, _, (tokens16, _) = _run_both_ways(model16, *_inputs())
  out32, _, (tokens32, _) = _piti_outputs()
  assert out16.dtype == jnp.float32
  assert _relative_error(out16, out32) < 3e-2
  assert _relative_error(tokens16, tokens32) < 3e-2


def test_dropout_only_in_train_mode():
  x, t, cond = _inputs()
  model = _piti_perturbed()
  eval_out = _piti_outputs()[0]
  train_a = _run_train(model, x, t, cond, jax.random.key(1))
  train_b = _run_train(model, x, t, cond, jax.random.key(2))
  train_a_again = _run_train(model, x, t, cond, jax.random.key(1))
  assert _relative_error(train_a, eval_out) > 1e-3
  assert _relative_error(train_a, train_b) > 1e-3
  np.testing.assert_array_equal(np.asarray(train_a), np.asarray(train_a_again))
  with pytest.raises(PitiError, match="rngs"):
    model(x, t, cond, train=True)


def test_integer_and_float_timesteps_agree():
  ints = jnp.asarray([0, 17, 999], jnp.int32)
  np.testing.assert_array_equal(np.asarray(timestep_embedding(ints, 32)),
                                np.asarray(timestep_embedding(ints.astype(jnp.float32), 32)))


def test_timestep_embedding_is_cos_then_sin():
  t = np.array([0.0, 1.5, 999.0])
  dim = 7
  half = dim // 2
  freqs = np.exp(-math.log(10000.0) * np.arange(half) / half)
  args = t[:, None] * freqs[None]
  expected = np.concatenate([np.cos(args), np.sin(args), np.zeros((3, 1))], axis=1)
  np.testing.assert_allclose(np.asarray(timestep_embedding(jnp.asarray(t), dim)), expected, atol=1e-4)


def test_text_model_shapes_and_encoder_reuse():
  model = _perturbed(create_model("tiny_text64", rngs=nnx.Rngs(0)), 2)
  x, t, _ = _inputs()
  cond = _text_cond()
  from_cond, from_encoded, (states, pooled) = _run_both_ways(model, x, t, cond)
  assert from_cond.shape == (BATCH, 64, 64, 6)
  assert states.shape == (BATCH, 128, 64) and pooled.shape == (BATCH, 64)
  np.testing.assert_array_equal(np.asarray(from_cond), np.asarray(from_encoded))
  np.testing.assert_array_equal(np.asarray(pooled), np.asarray(states[:, -1]))
  # Positions outside the mask see the padding embedding, so the token ids there do not matter.
  changed = dict(cond, tokens=cond["tokens"].at[0, 100].set(5))
  np.testing.assert_allclose(np.asarray(_encode(model, changed)[0]), np.asarray(states), rtol=1e-5, atol=1e-5)
  changed_inside = dict(cond, tokens=cond["tokens"].at[0, 3].set(5))
  assert float(jnp.max(jnp.abs(_encode(model, changed_inside)[0] - states))) > 1e-3


def test_upsampler_uses_low_res():
  model = _perturbed(create_model("tiny_piti_upsample64", rngs=nnx.Rngs(0)), 3)
  x, t, cond = _inputs()
  low_res = jnp.asarray(np.random.default_rng(4).uniform(-1, 1, (BATCH, 32, 32, 3)), jnp.float32)
  out = _run_upsampler(model, x, t, cond, low_res)
  assert out.shape == (BATCH, 64, 64, 6)
  assert _relative_error(_run_upsampler(model, x, t, cond, -low_res), out) > 1e-3
  with pytest.raises(PitiError, match="low_res"):
    model(x, t, cond)
  with pytest.raises(PitiError, match="low_res"):
    _piti_fresh()(x, t, cond, low_res=low_res)


def test_bad_calls_raise():
  model = _piti_fresh()
  x, t, cond = _inputs()
  with pytest.raises(PitiError, match="exactly one"):
    model(x, t)
  with pytest.raises(PitiError, match="exactly one"):
    model(x, t, cond, encoded=(None, None))
  with pytest.raises(PitiError, match="condition must have shape"):
    model.encode(cond[:, :128, :128])
  with pytest.raises(PitiError, match="condition must have shape"):
    model.encode(cond[..., :1])
  with pytest.raises(PitiError, match="x_t must have shape"):
    model(x[:, :32, :32], t, cond)
  with pytest.raises(PitiError, match="text condition"):
    create_model("tiny_text64", rngs=nnx.Rngs(0)).encode({"tokens": jnp.zeros((2, 77), jnp.int32),
                                                          "mask": jnp.ones((2, 77), bool)})


def _numpy_bilinear(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """PyTorch F.interpolate(mode="bilinear", align_corners=False), pixel by pixel. image (H, W, C)."""
  in_h, in_w, _ = image.shape

  def source(i, in_size, out_size):
    s = max((i + 0.5) * in_size / out_size - 0.5, 0.0)
    i0 = min(int(math.floor(s)), in_size - 1)
    return i0, min(i0 + 1, in_size - 1), s - i0

  out = np.zeros((out_h, out_w, image.shape[2]))
  for i in range(out_h):
    y0, y1, fy = source(i, in_h, out_h)
    for j in range(out_w):
      x0, x1, fx = source(j, in_w, out_w)
      top = (1 - fx) * image[y0, x0] + fx * image[y0, x1]
      bottom = (1 - fx) * image[y1, x0] + fx * image[y1, x1]
      out[i, j] = (1 - fy) * top + fy * bottom
  return out


@pytest.mark.parametrize("in_hw,out_hw", [((8, 8), (32, 32)), ((5, 7), (13, 11)), ((13, 11), (5, 4))])
def test_resize_bilinear_matches_pytorch_formula(in_hw, out_hw):
  image = np.random.default_rng(0).uniform(-1, 1, (2, *in_hw, 3)).astype(np.float32)
  got = np.asarray(resize_bilinear(jnp.asarray(image), *out_hw))
  for b in range(2):
    np.testing.assert_allclose(got[b], _numpy_bilinear(image[b], *out_hw), atol=1e-6)


def _numpy_attention(q, k, v):
  """float64 softmax(q k^T / sqrt(d)) v for (B, T, heads, d) q and (B, S, heads, d) k, v."""
  logits = np.einsum("bthd,bshd->bhts", q, k) / math.sqrt(q.shape[-1])
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  return np.einsum("bhts,bshd->bthd", weights / weights.sum(-1, keepdims=True), v)


@pytest.mark.parametrize("keys", [9, 40, 45])
def test_qkv_attention_matches_softmax_reference(keys):
  """40 and 45 keys: on a CPU the softmax's row maximum is taken in stages (`max_over_last_axis`), the same value."""
  rng = np.random.default_rng(0)
  q = rng.standard_normal((2, 5, 3, 8)).astype(np.float32)
  k = rng.standard_normal((2, keys, 3, 8)).astype(np.float32)
  v = rng.standard_normal((2, keys, 3, 8)).astype(np.float32)
  logits = jnp.asarray(rng.standard_normal((2, 3, 5, keys)) * 10, jnp.float32)
  np.testing.assert_array_equal(np.asarray(jax.jit(layers.max_over_last_axis)(logits)),
                                np.asarray(logits).max(-1, keepdims=True))
  expected = _numpy_attention(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64))
  np.testing.assert_allclose(np.asarray(qkv_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v))), expected,
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("block_bytes, groups, chunks", [(None, 1, 1), (2 * 4 * 5 * 4, 2, 2), (2 * 5 * 4, 4, 4)])
def test_qkv_attention_and_its_gradients_match_float64(monkeypatch, block_bytes, groups, chunks):
  """Also as a CPU takes large attention layers: the forward pass over its 2 x 2 (batch, head) slices in
  groups one after the other (one slice per group when a slice's weights exceed the block size), the
  backward pass over blocks of query rows."""
  if block_bytes:
    monkeypatch.setattr(layers, "ATTENTION_BLOCK_BYTES", block_bytes)
  rng = np.random.default_rng(1)
  inputs = [rng.standard_normal(shape) for shape in ((2, 4, 2, 4), (2, 5, 2, 4), (2, 5, 2, 4))]
  assert layers.attention_slice_groups(inputs[0].shape, 5) == groups
  assert layers.attention_backward_chunks(inputs[0].shape, 5) == chunks
  np.testing.assert_allclose(np.asarray(qkv_attention(*[jnp.asarray(x, jnp.float32) for x in inputs])),
                             _numpy_attention(*inputs), rtol=1e-5, atol=1e-6)
  out_grad = rng.standard_normal((2, 4, 2, 4))
  loss = lambda q, k, v: (qkv_attention(q, k, v) * out_grad).sum()
  got = jax.grad(loss, argnums=(0, 1, 2))(*[jnp.asarray(x, jnp.float32) for x in inputs])
  eps = 1e-6
  for index, (x, grad) in enumerate(zip(inputs, got)):
    expected = np.zeros_like(x)
    for position in np.ndindex(x.shape):
      moved = [y.copy() for y in inputs]
      moved[index][position] += eps
      up = (_numpy_attention(*moved) * out_grad).sum()
      moved[index][position] -= 2 * eps
      expected[position] = (up - (_numpy_attention(*moved) * out_grad).sum()) / (2 * eps)
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-4, atol=1e-5)


def test_attention_backward_keeps_no_weights_from_the_forward_pass(monkeypatch):
  """Ten attention layers in a row: the compiled backward holds a few (T, S) arrays of one layer, not
  ten layers'; with its query rows in 8 blocks, at least half a (T, S) array less (what is left is
  the forward pass's own (T, S) arrays)."""
  count, tokens, width = 10, 512, 8
  weights_bytes = tokens * tokens * 4

  def stack(x, keys):
    for key in keys:
      x = x + qkv_attention(x, key, key)
    return x.sum()

  def temporaries(blocks: int) -> int:
    monkeypatch.setattr(layers, "ATTENTION_BLOCK_BYTES", weights_bytes // blocks)
    x = jax.ShapeDtypeStruct((1, tokens, 1, width), jnp.float32)
    keys = [jax.ShapeDtypeStruct((1, tokens, 1, width), jnp.float32)] * count
    return jax.jit(jax.grad(stack)).lower(x, keys).compile().memory_analysis().temp_size_in_bytes

  whole, blocked = temporaries(1), temporaries(8)
  assert whole < 5 * weights_bytes, whole / weights_bytes
  assert blocked < whole - weights_bytes / 2, (whole / weights_bytes, blocked / weights_bytes)


def test_attention_backward_in_blocks_makes_its_key_scaling_and_sums_in_the_backward_pass(monkeypatch):
  """Ten layers whose keys and values the forward pass computes: each keeps about its q, k, v and output
  (4 arrays of their size) until its backward pass, not also its scaled keys and its blocks' zero sums."""
  count, tokens, width = 10, 256, 256
  monkeypatch.setattr(layers, "ATTENTION_BLOCK_BYTES", tokens * tokens * 4 // 8)

  def stack(x, weights):
    for w in weights:
      keys = x * w  # as the UNet's projections make them
      x = x + qkv_attention(x, keys, keys + 1)
    return x.sum()

  x = jax.ShapeDtypeStruct((1, tokens, 1, width), jnp.float32)
  weights = [jax.ShapeDtypeStruct((), jnp.float32)] * count
  temporaries = jax.jit(jax.grad(stack)).lower(x, weights).compile().memory_analysis().temp_size_in_bytes
  assert temporaries < 5 * count * tokens * width * 4, temporaries / (tokens * width * 4)


def test_a_plan_for_a_tpu_traces_the_tpu_forms_on_a_cpu_and_then_the_cpu_forms_again():
  """`target.planned_for` (the memory planner's --platform): the platform-chosen forms, traced, not compiled."""
  def forms():
    conv = jax.make_jaxpr(lambda x, k: layers.conv2d(x, k, None, stride=2, padding=1, dtype=jnp.float32))(
        jnp.ones((1, 8, 8, 4)), jnp.ones((3, 3, 4, 4)))
    sums = jax.make_jaxpr(layers.sum_over_positions)(jnp.ones((1, layers.STAGED_SUM_MIN_POSITIONS, 4)))
    maxima = jax.make_jaxpr(layers.max_over_last_axis)(jnp.ones((2, layers.STAGED_MAX_MIN_LENGTH)))
    mask = jax.make_jaxpr(lambda key: dropout.keep_mask(key, 0.9, (4, 8)))(jax.random.key(0))
    return (target.platform(), "custom_vjp" in str(conv), "optimization_barrier" in str(sums),
            "optimization_barrier" in str(maxima), "random_bits" in str(mask),
            layers.attention_slice_groups((8, 4096, 8, 64), 4096),
            layers.attention_backward_chunks((8, 4096, 8, 64), 4096))

  cpu = forms()
  with target.planned_for("tpu"):
    tpu = forms()
  assert cpu[:5] == ("cpu", True, True, True, False) and cpu[5] > 1 and cpu[6] > 1
  assert tpu == ("tpu", False, False, False, True, 1, 1)
  assert forms() == cpu
  with pytest.raises(ValueError, match="planned platform"):
    with target.planned_for("h100"):
      pass


def test_exact_gelu_is_jax_gelu_forward_and_its_closed_form_derivative_backward():
  x = np.linspace(-8.0, 8.0, 2001)
  got = jax.vmap(jax.grad(exact_gelu))(jnp.asarray(x, jnp.float32))
  cdf = 0.5 * np.vectorize(math.erfc)(-x / math.sqrt(2.0))
  np.testing.assert_allclose(np.asarray(got), cdf + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi), atol=1e-6)
  x32 = jnp.asarray(x, jnp.float32)
  assert (exact_gelu(x32) == jax.nn.gelu(x32, approximate=False)).all()


def test_backward_ties_by_optimisation_barrier_give_the_gradients_of_ties_in_the_data(monkeypatch):
  """Off a CPU, `_after` orders the backward pass by an optimisation barrier instead of x + min(|s|, 0):
  the gradients of attention, a recomputing layer and a module recomputed in the backward pass."""
  rng = np.random.default_rng(3)
  q, k, v = (jnp.asarray(rng.standard_normal(shape), jnp.float32) for shape in ((2, 4, 2, 4), (2, 5, 2, 4), (2, 5, 2, 4)))
  x = jnp.asarray(rng.standard_normal((2, 3, 4)), jnp.float32)
  norm = LayerNorm(4)

  def loss(dense, q, k, v, x):
    recomputing = dense.recomputing(lambda x: exact_gelu(norm(x)), x)
    return sum(jnp.sum(y ** 2) for y in (qkv_attention(q, k, v), recomputing, layers.recomputed_in_backward(dense, x)))

  def gradients_and_program():
    grad = nnx.grad(loss, argnums=(0, 1, 2, 3, 4))
    args = (Dense(4, 6, dtype=jnp.float32, rngs=nnx.Rngs(1)), q, k, v, x)
    return nnx.jit(grad)(*args), str(jax.make_jaxpr(lambda *a: grad(*a))(*args))

  in_data, program = gradients_and_program()
  assert "optimization_barrier" not in program
  monkeypatch.setattr(layers, "_barriers_kept", lambda: True)
  by_barrier, program = gradients_and_program()
  assert program.count("optimization_barrier") >= 3
  # XLA fuses the two programs differently: equal up to float32 rounding.
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-7), by_barrier, in_data)


@pytest.mark.parametrize("kind", ["convolution", "dense"])
def test_a_recomputing_layer_matches_the_plain_layers_in_values_and_gradients(kind):
  rng = np.random.default_rng(0)
  if kind == "convolution":  # a norm, a resampling and a mask between norm and convolution
    width = 32
    x = jnp.asarray(rng.normal(size=(2, 16, 16, width)), jnp.float32)
    keep = jnp.asarray(rng.uniform(size=(2, 8, 8, width)) < 0.9)
    norm = GroupNorm32(width, swish=True, dtype=jnp.float32)
    layer = Conv2d(width, 64, 3, stride=2, dtype=jnp.float32, rngs=nnx.Rngs(1))

    def before(x, scale, bias):
      return jnp.where(keep, avg_pool_2x(norm.with_affine(x, scale, bias)), 0)
  else:  # a LayerNorm and a GELU between the stream and the projection
    width = 16
    x = jnp.asarray(rng.normal(size=(2, 7, width)), jnp.float32)
    norm = LayerNorm(width)
    layer = Dense(width, 24, dtype=jnp.float32, rngs=nnx.Rngs(1))

    def before(x, scale, bias):
      return exact_gelu(norm.with_affine(x, scale, bias))

  def loss(layer, x, scale, bias, recompute):
    out = layer.recomputing(before, x, scale, bias) if recompute else layer(before(x, scale, bias))
    return jnp.sum(out ** 2)

  args = (layer, x, *(jnp.asarray(rng.normal(size=width), jnp.float32) for _ in range(2)))
  value, grads = nnx.value_and_grad(functools.partial(loss, recompute=False), argnums=(0, 1, 2, 3))(*args)
  got_value, got_grads = nnx.value_and_grad(functools.partial(loss, recompute=True), argnums=(0, 1, 2, 3))(*args)
  assert got_value == value
  _assert_close_gradients(got_grads, grads)


def _assert_close_gradients(got, expected) -> None:
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5 * np.abs(b).max())


def _kept_maps(function, params, batch: int, ndim: int = 4) -> list[tuple[tuple[int, ...], str]]:
  """Shapes and dtypes of the (batch, ...) `ndim`-D arrays that `function`'s pullback keeps for the backward pass."""
  pullback = jax.eval_shape(lambda p: jax.vjp(function, p)[1], params)  # traced, not run
  return sorted((leaf.shape, str(leaf.dtype)) for leaf in jax.tree.leaves(pullback)
                if getattr(leaf, "ndim", 0) == ndim and leaf.shape[0] == batch)


def test_task_encoder_and_resblock_keep_no_norm_outputs_for_the_backward_pass():
  """The norms' outputs before a convolution are recomputed in the backward pass, not kept from the forward pass."""
  batch = 5
  cnn = CNN(3, 64, (8, 16, 32, 64, 64), dtype=jnp.float32, rngs=nnx.Rngs(0))
  cnn_graph, cnn_params = nnx.split(cnn)
  cond = jnp.ones((batch, 64, 64, 3))
  kept = _kept_maps(lambda p: nnx.merge(cnn_graph, p)(cond), cnn_params, batch)
  # the condition, then conv1..conv5's outputs (each the input of the next norm): one map per level
  assert kept == sorted(((batch, size, size, width), "float32")
                        for size, width in ((64, 3), (64, 8), (32, 16), (16, 32), (8, 64), (4, 64)))

  block = ResBlock(32, 16, 64, 0.1, dtype=jnp.float32, rngs=nnx.Rngs(0), resample="down")
  block_graph, block_params = nnx.split(block)
  x = jnp.ones((batch, 16, 16, 32))
  emb = jnp.ones((batch, 16))
  kept = _kept_maps(lambda p: nnx.merge(block_graph, p)(x, emb, train=True, rngs=nnx.Rngs(dropout=1)),
                    block_params, batch)
  # no pooled map of the input width: the pooled in-norm and the skip convolution's pooled x are both recomputed
  assert ((batch, 8, 8, 32), "float32") not in kept, kept


def test_an_output_resblock_recomputes_the_concatenation_of_its_inputs():
  """ResBlock(x, joined=s) is ResBlock(concat(x, s)) in values and gradients; it keeps x and s, not their
  concatenation."""
  batch = 3
  block = ResBlock(96, 16, 32, 0.0, dtype=jnp.float32, rngs=nnx.Rngs(0))
  graph, params = nnx.split(block)
  rng = np.random.default_rng(0)
  x, joined = (jnp.asarray(rng.normal(size=(batch, 8, 8, c)), jnp.float32) for c in (64, 32))
  emb = jnp.asarray(rng.normal(size=(batch, 16)), jnp.float32)

  def loss(p, x, joined, together):
    block = nnx.merge(graph, p)
    out = block(jnp.concatenate([x, joined], -1), emb, train=False, rngs=None) if together else \
        block(x, emb, train=False, rngs=None, joined=joined)
    return jnp.sum(out ** 2)

  value, grads = jax.value_and_grad(loss, argnums=(0, 1, 2))(params, x, joined, True)
  got_value, got_grads = jax.value_and_grad(loss, argnums=(0, 1, 2))(params, x, joined, False)
  np.testing.assert_allclose(got_value, value, rtol=1e-6)
  _assert_close_gradients(got_grads, grads)
  kept = _kept_maps(lambda p: loss(p, x, joined, False), params, batch)
  assert ((batch, 8, 8, 96), "float32") not in kept and ((batch, 8, 8, 64), "float32") in kept, kept


def test_transformer_and_attention_blocks_keep_no_norm_or_gelu_outputs_for_the_backward_pass():
  """The pre-norms' outputs (before c_qkv, c_fc, qkv) and the GELU's (before c_proj) are recomputed in the
  backward pass."""
  batch, length, width = 5, 9, 32
  block = ResidualAttentionBlock(width, 2, dtype=jnp.float32, rngs=nnx.Rngs(0))
  graph, params = nnx.split(block)
  x = jnp.ones((batch, length, width))
  kept = _kept_maps(lambda p: nnx.merge(graph, p)(x), params, batch, ndim=3)
  # the block's input, the attention output (c_proj's input), the stream after the attention; of the MLP c_fc's output
  assert kept == [((batch, length, width), "float32")] * 3 + [((batch, length, 4 * width), "float32")], kept

  attention = AttentionBlock(64, 32, 24, dtype=jnp.float32, rngs=nnx.Rngs(0))
  graph, params = nnx.split(attention)
  image, tokens = jnp.ones((batch, 4, 4, 64)), jnp.ones((batch, 3, 24))
  def attend(p):
    return nnx.merge(graph, p)(image, tokens)

  # of the (B, HW, C) maps only the block's input (the norm's) and the attention output (proj_out's input), no
  # GroupNorm output; no group statistics
  assert _kept_maps(attend, params, batch, ndim=3) == [((batch, 3, 24), "float32")] + [((batch, 16, 64), "float32")] * 2
  assert ((batch, 1, 32, 1), "float32") not in _kept_maps(attend, params, batch), _kept_maps(attend, params, batch)


def test_a_recomputing_task_encoder_keeps_only_its_condition_and_gives_the_same_gradients():
  """With `recompute`, the CNN and each transformer block run again in the backward pass
  (`recomputed_in_backward`): no CNN map, LayerNorm output, q, k, v or (B, L, 4W) MLP activation is
  kept from the forward pass, and the values and gradients are the plain encoder's."""
  batch, width = 5, 32
  kwargs = dict(in_channels=3, cond_size=64, width=width, layers=2, heads=2, cnn_hidden=(8, 16, 32, 64, 64),
                dtype=jnp.float32)
  graph, params = nnx.split(TaskEncoder(recompute=True, rngs=nnx.Rngs(0), **kwargs))
  plain_graph = nnx.graphdef(TaskEncoder(rngs=nnx.Rngs(0), **kwargs))
  rng = np.random.default_rng(0)
  cond = jnp.asarray(rng.uniform(-1, 1, (batch, 64, 64, 3)), jnp.float32)
  projection = [jnp.asarray(rng.standard_normal(shape), jnp.float32) for shape in ((batch, 16, width), (batch, width))]

  def projected(graph):
    return lambda p: sum(jnp.sum(a * b) for a, b in zip(nnx.merge(graph, p)(cond), projection))

  pullback = jax.eval_shape(lambda p: jax.vjp(projected(graph), p)[1], params)  # traced, not run
  kept = [leaf.shape for leaf in jax.tree.leaves(pullback) if getattr(leaf, "ndim", 0) >= 3 and leaf.shape[0] == batch]
  assert [shape for shape in kept if len(shape) == 4] == [(batch, 64, 64, 3)], kept
  # block inputs and final LayerNorm statistics (17 = 16 tokens + CLS); (batch, 16, width): the projection
  assert {shape for shape in kept if len(shape) == 3} <= {(batch, 17, width), (batch, 17, 1), (batch, 16, width)}, kept
  value, grads = jax.jit(jax.value_and_grad(projected(graph)))(params)
  plain_value, plain_grads = jax.jit(jax.value_and_grad(projected(plain_graph)))(params)
  assert value == plain_value
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(plain_grads), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6 * float(np.abs(b).max()))


def test_init_spec_samples():
  rng = np.random.default_rng(0)
  uniform = Init("uniform", 0.5).numpy_sample(rng, (4000,))
  assert uniform.dtype == np.float32 and np.abs(uniform).max() <= 0.5 and abs(uniform.std() - 0.5 / math.sqrt(3)) < 0.01
  normal = Init("normal", 0.01).numpy_sample(rng, (4000,))
  assert abs(normal.std() - 0.01) < 0.001
  assert not Init("zeros").numpy_sample(rng, (3,)).any() and (Init("ones").numpy_sample(rng, (3,)) == 1).all()


def _compiled_decoder_loss_and_grads(graphdef, state, x, t, tokens, pooled, key):
  """The decoder's dropout-on loss and parameter gradients, compiled (for its memory analysis too)."""
  def loss_and_grads(state, x, t, tokens, pooled, key):
    def loss_fn(state):
      out = nnx.merge(graphdef, state)(x, t, tokens, pooled, train=True, rngs=nnx.Rngs(dropout=key))
      return jnp.mean(out ** 2)
    return jax.value_and_grad(loss_fn)(state)
  return jax.jit(loss_and_grads).lower(state, x, t, tokens, pooled, key).compile()


def test_remat_gives_the_same_loss_and_gradients_and_keeps_less():
  """`remat` (`recomputed_in_backward` per block) gives the plain decoder's loss, dropout masks and
  gradients, and its compiled step plans fewer temporaries on this CPU (jax.checkpoint's did not)."""
  small = dict(image_size=16, channel_mult=(1, 2), attention_ds=(1,), remat=False)
  plain = _perturbed(create_model("tiny_piti64", rngs=nnx.Rngs(0), **small).decoder, 5)
  state = nnx.state(plain)
  remat_graph = nnx.graphdef(create_model("tiny_piti64", rngs=nnx.Rngs(0), **dict(small, remat=True)).decoder)
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.standard_normal((BATCH, 16, 16, 3)), jnp.float32)
  tokens = jnp.asarray(rng.standard_normal((BATCH, 4, 64)), jnp.float32)
  pooled = jnp.asarray(rng.standard_normal((BATCH, 64)), jnp.float32)
  t = jnp.asarray([5.0, 600.0])
  args = (state, x, t, tokens, pooled, jax.random.key(7))
  compiled_plain = _compiled_decoder_loss_and_grads(nnx.graphdef(plain), *args)
  compiled_remat = _compiled_decoder_loss_and_grads(remat_graph, *args)
  loss_a, grads_a = compiled_plain(*args)
  loss_b, grads_b = compiled_remat(*args)
  np.testing.assert_allclose(float(loss_a), float(loss_b), rtol=1e-5)
  for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
  plain_bytes = compiled_plain.memory_analysis().temp_size_in_bytes
  remat_bytes = compiled_remat.memory_analysis().temp_size_in_bytes
  # 0.94 of the plain step's here (0.79 at 32x32, batch 4); with jax.checkpoint XLA:CPU planned 1.05 (1.20)
  assert remat_bytes < 0.97 * plain_bytes, (remat_bytes, plain_bytes)
  assert float(jnp.max(jnp.abs(grads_a["input_blocks"][0][0]["kernel"][...]))) > 0
