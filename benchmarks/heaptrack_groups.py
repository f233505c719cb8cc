"""Heap memory live at a heaptrack recording's end, grouped by what allocated it in XLA's compile or load.

  heaptrack -o /tmp/step python benchmarks/memory_stages.py --mode=stage2 --stop_after=compiled
  python benchmarks/heaptrack_groups.py /tmp/step.zst

Reads `heaptrack_print`'s flame-graph stacks weighted by bytes still allocated at the end
(with --stop_after the process leaves without freeing, so that is what was live at that
stage) and sums them per group: allocations made outside XLA's compile and load, MLIR's
uniqued attributes and types, XLA's HLO passes, XLA:CPU's backend (code generation and the
executable), and the rest of the compile; for a step loaded from the persistent compilation
cache (JAX_COMPILATION_CACHE_DIR set and filled), the loader's copy of the HLO module as a
protobuf, the module itself, its buffer assignment and the rest of the load. Prints one JSON
line of MiB per group. Record with `GLIBC_TUNABLES=glibc.malloc.hugetlb=0`: otherwise the
script restarts itself with huge pages and heaptrack records only the first process.
"""

import collections
import json
import subprocess
import sys
import tempfile

# (group, frame text that marks it) within a compile and within a load; the first match wins.
COMPILE_GROUPS = (
    ("mlir_uniqued_attributes", "StorageUniquer"),
    ("xla_cpu_backend", "RunBackend"),
    ("hlo_passes", "RunHloPasses"),
)
LOAD_GROUPS = (
    ("load_hlo_module_proto_copy", "HloModule::ToProto"),
    ("load_hlo_module", "HloModule::CreateFromProto"),
    ("load_buffer_assignment", "BufferAssignment::FromProto"),
)


def group_of(stack: str) -> str:
  if "CompileAndLoad" in stack:
    return next((group for group, marker in COMPILE_GROUPS if marker in stack), "compile_other")
  if "DeserializeLoadedExecutable" in stack:
    return next((group for group, marker in LOAD_GROUPS if marker in stack), "load_other")
  return "outside_compile_and_load"


def main() -> None:
  if len(sys.argv) != 2:
    sys.exit(f"usage: {sys.argv[0]} RECORDING.zst")
  with tempfile.NamedTemporaryFile("r", suffix=".txt") as stacks:
    subprocess.run(["heaptrack_print", "-f", sys.argv[1], "--flamegraph-cost-type", "leaked", "-F", stacks.name],
                   check=True, stdout=subprocess.DEVNULL)
    live = collections.Counter()
    for line in stacks:
      stack, _, size = line.rstrip().rpartition(" ")
      live[group_of(stack)] += int(size)
  print(json.dumps({group: round(size / 2**20, 1) for group, size in live.most_common()}))


if __name__ == "__main__":
  main()
