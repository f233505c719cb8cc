"""Device mesh and shardings on the ("data", "fsdp") mesh (DESIGN.md section 6).

The batch is split over both axes. Parameters are replicated when fsdp == 1; otherwise
each kernel is sharded on its largest dimension that is divisible by the fsdp size.
Which dimensions may be sharded is parameter metadata: a kernel created with
`piti_jax.models.layers.kernel_init` carries `fsdp_dims` (its feature dimensions, never
the spatial taps of a convolution). A parameter without that metadata counts every
dimension as a candidate when it has two or more dimensions, and is replicated otherwise.
"""

from typing import Any, Sequence

import jax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from piti_jax.errors import PitiError

MESH_AXES = ("data", "fsdp")
BATCH_SPEC = PartitionSpec(MESH_AXES)


def make_mesh(data: int = -1, fsdp: int = 1) -> Mesh:
  """Builds the ("data", "fsdp") mesh over all global devices.

  Args:
    data: data-parallel size; -1 means every device not used by `fsdp`.
    fsdp: size of the fully-sharded axis.
  """
  devices = jax.device_count()
  if fsdp < 1 or devices % fsdp:
    raise PitiError(f"mesh.fsdp={fsdp} must be a positive divisor of the {devices} devices; pick another mesh.fsdp.")
  if data == -1:
    data = devices // fsdp
  if data * fsdp != devices:
    raise PitiError(f"mesh data={data} x fsdp={fsdp} does not cover the {devices} devices; set mesh.data=-1 "
                    "or make data * fsdp equal the device count.")
  return jax.make_mesh((data, fsdp), MESH_AXES, axis_types=(AxisType.Auto,) * 2)


def fsdp_spec(shape: Sequence[int], fsdp_size: int, candidate_dims: Sequence[int] | None = None) -> PartitionSpec:
  """PartitionSpec sharding the largest candidate dimension divisible by `fsdp_size`.

  Returns the replicated spec when fsdp_size == 1 or no candidate divides evenly.
  """
  if fsdp_size == 1:
    return PartitionSpec()
  if candidate_dims is None:
    candidate_dims = range(len(shape)) if len(shape) >= 2 else ()
  divisible = [d for d in candidate_dims if shape[d] % fsdp_size == 0]
  if not divisible:
    return PartitionSpec()
  best = max(divisible, key=lambda d: (shape[d], -d))
  return PartitionSpec(*[("fsdp" if d == best else None) for d in range(len(shape))])


def replicated(mesh: Mesh) -> NamedSharding:
  """The sharding of an array every device holds whole."""
  return NamedSharding(mesh, PartitionSpec())


def variable_sharding(variable: nnx.Variable, mesh: Mesh) -> NamedSharding:
  """Sharding of a parameter by the fsdp rule, from its shape and `fsdp_dims` metadata."""
  value = variable.get_value() if hasattr(variable, "get_value") else variable.value
  candidates = variable.get_metadata().get("fsdp_dims")
  return NamedSharding(mesh, fsdp_spec(getattr(value, "shape", ()), mesh.shape["fsdp"], candidates))


def state_shardings(state: Any, mesh: Mesh) -> Any:
  """NamedShardings for an nnx.State (or a tree of nnx.Variables), by the rule above.

  Arrays that are not inside a Variable (for example PRNG keys, step counters) are
  replicated.
  """

  def spec(leaf):
    if isinstance(leaf, nnx.Variable):
      return leaf.replace(variable_sharding(leaf, mesh))
    return replicated(mesh)

  return jax.tree.map(spec, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of a batch: the leading dimension split over both mesh axes."""
  return NamedSharding(mesh, BATCH_SPEC)


def to_global(batch: dict[str, Any], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Per-process NumPy batch -> global jax arrays with `sharding` (batch split over its leading axis)."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
