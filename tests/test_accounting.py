"""FLOP accounting of compiled programs (piti_jax/accounting.py) on the 8 fake CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from piti_jax import accounting

ROWS, INNER, COLUMNS = 64, 32, 16


@pytest.mark.parametrize("row_shards", [1, 8])
def test_compiled_flops_counts_every_device_of_a_partitioned_program(row_shards):
  mesh = jax.make_mesh((row_shards,), ("data",), devices=jax.devices()[:row_shards])
  rows = jax.ShapeDtypeStruct((ROWS, INNER), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec("data")))
  weights = jax.ShapeDtypeStruct((INNER, COLUMNS), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec()))
  compiled = jax.jit(jnp.matmul).lower(rows, weights).compile()
  np.testing.assert_allclose(accounting.compiled_flops(compiled), 2 * ROWS * INNER * COLUMNS, rtol=0.01)
