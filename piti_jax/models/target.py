"""The platform whose forms the model code traces: the default backend, or the one a plan is for.

Some layers choose a form by platform when they are traced, for speed on that platform with the
same values: a CPU's convolution gradients (`layers.conv2d`), sums over positions in two stages
(`layers.sum_over_positions`), the softmax's row maximum in two stages (`layers.max_over_last_axis`),
the attention forward pass over groups of (batch, head) slices and its backward pass in blocks of
query rows (`layers.attention_slice_groups`, `layers.attention_backward_chunks`) and hashed dropout
masks (`dropout`). The ahead-of-time memory
planner compiles on fake CPU devices for a GPU or TPU pod, so it traces under `planned_for("tpu")`
to compile the forms the pod runs, not a CPU's.

Two choices follow the compiling backend instead and read `jax.default_backend()` directly: whether
the compiler keeps optimisation barriers (`layers._barriers_kept`: XLA:CPU drops them, so a CPU
compile needs the data ties whatever it plans for) and cuDNN's fused attention (only XLA:GPU lowers it).

`traced_with(owner, name, value)` swaps one module attribute for the traces made inside (a form a
benchmark compares, or `layers.attention_in_one_block`'s loop-free attention for FLOP counts).
"""

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import jax

PLATFORMS = ("cpu", "gpu", "tpu")
_planned: contextvars.ContextVar[str | None] = contextvars.ContextVar("planned_platform", default=None)


def platform() -> str:
  """'cpu', 'gpu' or 'tpu': the platform of `planned_for` when inside it, else JAX's default backend."""
  return resolve(_planned.get())


def resolve(name: str | None) -> str:
  """The platform whose forms `planned_for(name)` traces: `name`, or JAX's default backend for None."""
  return name or jax.default_backend()


@contextlib.contextmanager
def planned_for(name: str | None) -> Iterator[None]:
  """Traces inside choose `name`'s forms; None changes nothing (the compiling backend's forms). For a name,
  JAX's trace caches are emptied on entry and exit, since they do not know the planned platform and would
  otherwise hand back functions traced for another one."""
  if name is None:
    yield
    return
  if name not in PLATFORMS:
    raise ValueError(f"planned platform must be one of {PLATFORMS}, got {name!r}")
  with _fresh_traces():
    token = _planned.set(name)
    try:
      yield
    finally:
      _planned.reset(token)


@contextlib.contextmanager
def traced_with(owner: Any, name: str, value: Any) -> Iterator[None]:
  """Inside, `owner.name` is `value` (code traced inside looks it up then), and it is restored on exit.
  JAX's trace caches are emptied on entry and exit, as for `planned_for`, so that no trace made with
  the other value is handed back."""
  saved = getattr(owner, name)
  with _fresh_traces():
    setattr(owner, name, value)
    try:
      yield
    finally:
      setattr(owner, name, saved)


@contextlib.contextmanager
def _fresh_traces() -> Iterator[None]:
  """JAX's caches of traced, lowered and compiled functions emptied on entry and on exit: a setting that
  traced code reads changes inside, and JAX's caches do not know it."""
  jax.clear_caches()
  try:
    yield
  finally:
    jax.clear_caches()
