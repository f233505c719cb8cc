"""Input-pipeline throughput on this machine, as JSON lines.

Measures examples/s delivered by `make_train_iterator` (decode + resize + flip + condition +
degradation + batching, i.e. everything the train loop waits for) for the 64x64 base pipeline and
the 64->256 upsampler pipeline over the built-in `shapes` dataset, after warm-up batches. With
--prepare it first times preparing the dataset (generation + PNG encoding + ArrayRecord writing).

  python benchmarks/input_pipeline.py [--data_dir DIR] [--train_size 2000] [--workers 0 2] [--prepare]
"""

import argparse
import json
import os
import platform
import resource
import shutil
import time

from piti_jax.data import pipeline
from piti_jax.data.config import default_data_config
from piti_jax.data.datasets import make_builder, prepare_dataset


def _cpu_seconds() -> float:
  """User + system CPU time of this process and its finished child processes."""
  own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _measure(config, *, batch_size: int, batches: int, warmup: int) -> float:
  iterator = pipeline.make_train_iterator(config, global_batch_size=batch_size, seed=0, process_index=0,
                                          process_count=1)
  for _ in range(warmup):
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default="/tmp/piti_jax_bench_tfds")
  parser.add_argument("--train_size", type=int, default=2000)
  parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
  parser.add_argument("--base_batch", type=int, default=64)
  parser.add_argument("--upsampler_batch", type=int, default=8)
  parser.add_argument("--batches", type=int, default=8)
  parser.add_argument("--prepare", action="store_true", help="delete and re-prepare the dataset, timing it")
  args = parser.parse_args()

  config = default_data_config()
  config.data_dir = args.data_dir
  config.train_size, config.val_size = args.train_size, 200
  device = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores (shared)"
  if args.prepare:
    builder_dir = make_builder(config).data_dir
    shutil.rmtree(builder_dir, ignore_errors=True)
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    prepare_dataset(config)
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    print(json.dumps({"benchmark": "prepare_shapes", "examples": args.train_size + 200, "seconds": round(seconds, 2),
                      "cpu_seconds": round(cpu, 2), "examples_per_s": round((args.train_size + 200) / seconds, 1),
                      "load_average_1min": os.getloadavg()[0], "device": device,
                      "counts": "wall and CPU (this process + its workers) time to generate, encode and write"}),
          flush=True)
  prepare_dataset(config)

  setups = {
      "base": dict(task="mask", image_size=64, low_res_size=0, batch=args.base_batch),
      "base_sketch": dict(task="sketch", image_size=64, low_res_size=0, batch=args.base_batch),
      "upsampler": dict(task="mask", image_size=256, low_res_size=64, batch=args.upsampler_batch),
  }
  for name, setup in setups.items():
    for workers in args.workers:
      run = config.copy_and_resolve_references()
      run.task, run.image_size, run.low_res_size, run.num_workers = (setup["task"], setup["image_size"],
                                                                     setup["low_res_size"], workers)
      rate = _measure(run, batch_size=setup["batch"], batches=args.batches, warmup=2)
      print(json.dumps({
          "benchmark": f"input_pipeline_{name}", "task": setup["task"], "image_size": setup["image_size"],
          "condition_size": run.condition_size, "low_res_size": setup["low_res_size"],
          "degradation": run.degradation if setup["low_res_size"] else None, "batch": setup["batch"],
          "num_workers": workers, "examples_per_s": round(rate, 1), "load_average_1min": os.getloadavg()[0],
          "device": device,
          "counts": "examples of per-process batches from make_train_iterator after 2 warm-up batches"}), flush=True)


if __name__ == "__main__":
  main()
