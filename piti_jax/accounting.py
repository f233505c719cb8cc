"""FLOP and memory accounting of compiled programs, and the peaks they are compared with.

- `compiled_flops(compiled)`: FLOPs XLA counts in a compiled program (its cost analysis), summed
  over the devices it runs on. XLA counts a loop body once, so a sampler's `fori_loop` and a CPU's
  large attention layers (their passes over groups of slices and blocks of rows) are undercounted;
  the benchmarks correct for both (benchmarks/vs_pytorch.py's sampler rows; the attention layers'
  `piti_jax.models.layers.attention_in_one_block()` around what they trace for a count).
- `memory_breakdown(compiled)`: per-device bytes of arguments, outputs, temporaries and
  donated (aliased) buffers, from the compiled program's memory analysis.
- `measured_matmul_peak()`: FLOP/s of a large float32 matmul as JAX runs it on the default
  device; the physical-limit figure on a CPU.
- `accelerator_bf16_peak(device)`: the dense bfloat16 peak of a known GPU/TPU (None on a CPU
  or an unknown device), the denominator of MFU.
"""

import time
from typing import Any

import jax
import jax.numpy as jnp

# Dense (no sparsity) bfloat16 peak FLOP/s per device, from the vendors' data sheets.
BF16_PEAKS = {
    "h100": 989e12,
    "h200": 989e12,
    "a100": 312e12,
    "l4": 121e12,
    "tpu v4": 275e12,
    "tpu v5 lite": 197e12,
    "tpu v5e": 197e12,
    "tpu v5p": 459e12,
    "tpu v5": 459e12,
    "tpu v6 lite": 918e12,
    "tpu v6e": 918e12,
}

# Buffer assignment and cost analysis happen before code generation, so a compile made only for
# them skips LLVM's optimisations: the same numbers, several times faster to compile.
ANALYSIS_ONLY_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def compiled_flops(compiled: Any) -> float:
  """FLOPs of one execution of a compiled program on all its devices.

  XLA's cost analysis of an SPMD-partitioned program counts one device's partition, so it is
  multiplied by the number of devices the program's inputs live on.
  """
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  shardings = jax.tree.leaves(compiled.input_shardings)
  devices = max((len(sharding.device_set) for sharding in shardings), default=1)
  return devices * float((analysis or {}).get("flops", float("nan")))


def memory_breakdown(compiled: Any) -> dict[str, int]:
  """Per-device bytes of a compiled program: arguments, outputs, temporaries, aliased (donated) outputs.

  `peak_estimate` = arguments + outputs - aliased + temporaries: what one device holds at the
  busiest point when the program runs (donated inputs reuse their buffers for the outputs).
  """
  stats = compiled.memory_analysis()
  argument = int(stats.argument_size_in_bytes)
  output = int(stats.output_size_in_bytes)
  alias = int(stats.alias_size_in_bytes)
  temp = int(stats.temp_size_in_bytes)
  return {"argument_bytes": argument, "output_bytes": output, "alias_bytes": alias, "temp_bytes": temp,
          "generated_code_bytes": int(stats.generated_code_size_in_bytes),
          "peak_estimate_bytes": argument + output - alias + temp}


def measured_matmul_peak(size: int = 2048, repeats: int = 10) -> float:
  """Best FLOP/s of a (size x size) @ (size x size) float32 matmul on the default device."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  jax.block_until_ready(matmul(a, b))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(matmul(a, b))
    best = min(best, time.perf_counter() - start)
  return 2.0 * size**3 / best


def accelerator_bf16_peak(device: jax.Device | None = None) -> float | None:
  """Dense bfloat16 peak FLOP/s of `device` (default: the first device); None for CPUs and unknown kinds."""
  device = device or jax.devices()[0]
  if device.platform == "cpu":
    return None
  kind = device.device_kind.lower()
  for name in sorted(BF16_PEAKS, key=len, reverse=True):
    if name in kind:
      return BF16_PEAKS[name]
  return None


def rate_fields(*, model_flops: float, xla_flops: float, seconds: float, items: int,
                matmul_peak: float | None) -> dict[str, float | None]:
  """FLOP accounting fields of one benchmark line.

  Args:
    model_flops: model FLOPs of one call (training: 3 x the forward pass), whole batch.
    xla_flops: FLOPs XLA counts in the compiled call, whole batch.
    seconds: wall time of one call.
    items: images per call.
    matmul_peak: this machine's measured matmul FLOP/s (CPU runs), else None.
  Returns:
    model_gflops_per_image, achieved model and XLA FLOP/s, `peak_fraction` (XLA FLOP/s over
    the measured matmul peak, on CPUs) and `mfu` (model FLOP/s over the accelerator's bf16
    peak, on a known GPU/TPU).
  """
  fields = {
      "model_gflops_per_image": round(model_flops / items / 1e9, 3),
      "xla_gflops_per_image": round(xla_flops / items / 1e9, 3),
      "model_gflops_per_s": round(model_flops / seconds / 1e9, 2),
      "xla_gflops_per_s": round(xla_flops / seconds / 1e9, 2),
  }
  if matmul_peak:
    fields["matmul_peak_gflops_per_s"] = round(matmul_peak / 1e9, 1)
    fields["peak_fraction"] = round(xla_flops / seconds / matmul_peak, 3)
  bf16_peak = accelerator_bf16_peak()
  if bf16_peak:
    fields["mfu"] = round(model_flops / seconds / (bf16_peak * jax.device_count()), 3)
  return fields
