"""FLOP accounting of compiled programs (piti_jax/accounting.py) on the 8 fake CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from piti_jax import accounting
from piti_jax.models import layers

ROWS, INNER, COLUMNS = 64, 32, 16


@pytest.mark.parametrize("row_shards", [1, 8])
def test_compiled_flops_counts_every_device_of_a_partitioned_program(row_shards):
  mesh = jax.make_mesh((row_shards,), ("data",), devices=jax.devices()[:row_shards])
  rows = jax.ShapeDtypeStruct((ROWS, INNER), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec("data")))
  weights = jax.ShapeDtypeStruct((INNER, COLUMNS), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec()))
  compiled = jax.jit(jnp.matmul).lower(rows, weights).compile()
  np.testing.assert_allclose(accounting.compiled_flops(compiled), 2 * ROWS * INNER * COLUMNS, rtol=0.01)


def test_attention_in_one_block_counts_a_cpu_attention_whose_passes_loop_in_full(monkeypatch):
  """With the block size below one (batch, head) slice's weights the CPU's forward pass loops over the 4
  slices and its backward pass over 4 blocks of rows, and XLA's count of the lowered program falls short;
  inside the context the same gradients trace without loops and count what the unblocked program counts."""
  q, kv = jax.ShapeDtypeStruct((2, 4, 2, 4), jnp.float32), jax.ShapeDtypeStruct((2, 5, 2, 4), jnp.float32)
  gradients = jax.jit(jax.grad(lambda q, k, v: layers.qkv_attention(q, k, v).sum(), argnums=(0, 1, 2)))

  def counted():
    lowered = gradients.lower(q, kv, kv)
    return lowered.cost_analysis()["flops"], lowered.as_text().count("stablehlo.while")

  unblocked = counted()
  monkeypatch.setattr(layers, "ATTENTION_BLOCK_BYTES", 2 * 5 * 4)
  jax.clear_caches()
  blocked = counted()
  with layers.attention_in_one_block():
    in_one_block = counted()
  assert unblocked[1] == 0 and blocked[1] == 2 and blocked[0] < unblocked[0]
  assert in_one_block == unblocked
  assert layers.ATTENTION_BLOCK_BYTES == 2 * 5 * 4
