"""Heap memory live at a heaptrack recording's end, grouped by what allocated it during XLA's compile.

  heaptrack -o /tmp/step python benchmarks/memory_stages.py --mode=stage2 --stop_after=compiled
  python benchmarks/heaptrack_groups.py /tmp/step.zst

Reads `heaptrack_print`'s flame-graph stacks weighted by bytes still allocated at the end
(with --stop_after the process leaves without freeing, so that is what was live at that
stage) and sums them per group: allocations made outside XLA's compile, MLIR's uniqued
attributes and types, XLA's HLO passes, XLA:CPU's backend (code generation and the
executable), and the rest of the compile. Prints one JSON line of MiB per group.
"""

import collections
import json
import subprocess
import sys
import tempfile

GROUPS = (  # (group, frame text that marks it), the first match wins; stacks without CompileAndLoad are "outside"
    ("mlir_uniqued_attributes", "StorageUniquer"),
    ("xla_cpu_backend", "RunBackend"),
    ("hlo_passes", "RunHloPasses"),
)


def group_of(stack: str) -> str:
  if "CompileAndLoad" not in stack:
    return "outside_compile"
  return next((group for group, marker in GROUPS if marker in stack), "compile_other")


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
