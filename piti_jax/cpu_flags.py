"""XLA:CPU compiler flags the project sets in XLA_FLAGS before JAX starts its backends.

jaxlib 0.10's CPU compiler hands convolutions, reductions, dots and elementwise ops to
YNNPACK library fusions by default. At the shapes of the UNet and the task encoder its
convolutions and their gradients run 1.1-3x slower than XLA's own (Eigen) convolutions on
the same cores, and its reductions (GroupNorm, InstanceNorm) hold more memory at the step's
peak (docs/performance.md, section 5). `add_to` turns YNNPACK off for those two kinds and
keeps it for dots and elementwise fusions, where it is as fast or faster.

The flags only touch the CPU compiler: GPU and TPU backends read and ignore them. A user who
puts `--xla_cpu_experimental_ynn_fusion_type` in XLA_FLAGS keeps their own value (its empty
value turns YNNPACK off entirely; `+individual_convolution` brings convolutions back).
XLA reads XLA_FLAGS when JAX starts its first backend, so `import piti_jax` must come before
the first JAX computation of the process; `add_to` warns when it comes too late.
"""

import os
import sys
import warnings
from collections.abc import MutableMapping

YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
YNN_FUSION_VALUE = "-individual_convolution,-reduce"


def add_to(environ: MutableMapping[str, str]) -> None:
  """Appends the project's XLA:CPU flags to `environ["XLA_FLAGS"]` unless it already sets them."""
  flags = environ.get("XLA_FLAGS", "")
  if YNN_FUSION_FLAG in flags:
    return
  environ["XLA_FLAGS"] = f"{flags} {YNN_FUSION_FLAG}={YNN_FUSION_VALUE}".strip()
  bridge = sys.modules.get("jax._src.xla_bridge")
  if environ is os.environ and bridge is not None and bridge.backends_are_initialized():
    warnings.warn("piti_jax was imported after JAX started its backends, so its XLA:CPU flags "
                  f"({YNN_FUSION_FLAG}={YNN_FUSION_VALUE}) do not apply and CPU convolutions run up to 3x "
                  "slower; import piti_jax before the first JAX computation, or put the flag in XLA_FLAGS.",
                  stacklevel=3)
