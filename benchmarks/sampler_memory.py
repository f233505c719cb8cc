"""Resident memory of a sampling process at each stage, for the sampler rows of vs_pytorch.py.

  python benchmarks/sampler_memory.py --row=sample_tiny --sample-steps=10
  JAX_COMPILATION_CACHE_DIR=DIR python benchmarks/sampler_memory.py ...   # twice: the second loads the program

Builds the row's model and jitted sampling loop as vs_pytorch.py's project side does (its
`project_sampler`: random weights, JAX's caches emptied once they exist) and prints one JSON
line: the RSS in MiB after each stage, each read after `rss.reset_peak()` (glibc `malloc_trim`,
so freed heap pages that could be returned do not count): the imports with the JAX backend
started, the model built, the sampler lowered, compiled (JAX's caches emptied again), and per
run of the whole loop the RSS before it and the peak during it; glibc's heap totals
(`rss.heap_mib`) at the same stages; the compiled program's HLO instructions and fusions and
its planned temporaries. Runs with glibc's huge-page malloc as the project's entry points do.
"""

import argparse
import json

import rss

STARTED_MIB = rss.current_mib()

import jax  # noqa: E402  (the RSS above is the interpreter's alone)

import vs_pytorch  # noqa: E402
from piti_jax import huge_pages  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  rows = [name for name, row in vs_pytorch.ROWS.items() if row["kind"] != "train"]
  parser.add_argument("--row", default="sample_tiny", choices=rows)
  parser.add_argument("--sample-steps", type=int, default=25, help="respaced steps of the base sampler")
  parser.add_argument("--runs", type=int, default=3, help="runs of the whole sampling loop (the first warms up)")
  args = parser.parse_args()
  huge_pages.reexec_with_huge_pages()  # as `python -m piti_jax.main` runs
  stages, heaps = {"interpreter": round(STARTED_MIB)}, {}

  def reached(stage: str) -> None:
    rss.reset_peak()
    stages[stage], heaps[stage] = round(rss.current_mib()), rss.heap_mib()

  jax.numpy.zeros(1).block_until_ready()
  reached("backend")
  row = vs_pytorch.ROWS[args.row]
  config = vs_pytorch.model_config(row)
  sample, state, _ = vs_pytorch.project_sampler(config, row, args.sample_steps)
  reached("model_built")
  cond, low, key = vs_pytorch.sampler_inputs(config, row)
  lowered = sample.lower(state, cond, low, key)
  reached("lowered")
  compiled = lowered.compile()
  del lowered
  jax.clear_caches()
  reached("compiled")
  text = compiled.as_text()
  program = {"hlo_instructions": sum(" = " in line for line in text.splitlines()), "fusions": text.count(" fusion("),
             "temporaries_mib": round(compiled.memory_analysis().temp_size_in_bytes / 2**20, 1)}
  del text
  runs = []
  for _ in range(args.runs):
    rss.reset_peak()
    before = rss.current_mib()
    jax.block_until_ready(compiled(state, cond, low, key))
    runs.append({"before": round(before), "peak": round(rss.peak_mib())})
  reached("after_runs")
  print(json.dumps({"row": args.row, "sample_steps": args.sample_steps, "malloc_huge_pages": huge_pages.active(),
                    "compilation_cache": jax.config.jax_compilation_cache_dir or None, "rss_mib": stages,
                    "heap_mib": heaps, "program": program, "runs": runs[1:]}), flush=True)


if __name__ == "__main__":
  main()
