"""When and on which thread a train step's ops run: where its wall time goes on a CPU.

  python benchmarks/step_timeline.py --config=configs/shapes.py:pretrain --config.data.image_size=16 \
      --config.model.overrides.image_size=16 --config.train.global_batch_size=16 --steps=10

benchmarks/profile_step.py adds up each op's time; this script looks at the same kind of trace as a
timeline, one step at a time, to see the time no op accounts for. One JSON line, medians per step
over the --steps traced steps (after as many untraced ones):

- `dispatch_ms`: the call of the compiled step until it returns, before the step runs (JAX's
  handling of every array of the state; untraced steps), and `step_ms` until its outputs are ready.
- `xla_thread_op_ms`: traced op time on each of XLA's intra-op threads (`other_thread_op_ms`: on
  the runtime's other threads); `covered_ms` the part of the step in which at least one traced op
  ran. The gaps between ops are split: `during_convolution_ms` lies between a convolution's event
  and the first op that reads its result (on jaxlib 0.10 a convolution's event ends when its Eigen
  work has been handed to the thread pool, so that work runs there untraced; docs/performance.md,
  section 13), `other_gaps_ms` are the rest of the gaps of 20 us or more (both threads waiting),
  `short_gaps_ms` the rest of shorter ones (the runtime moving from op to op); `outside_ops_ms` is
  the step's time before its first op and after its last.
- `convolution_gflop`, `dot_gflop`: FLOPs of the convolutions and dots the step ran (from their
  shapes, as profile_step.py counts them), and `convolution_op_ms`, `dot_op_ms` their traced events'
  time (for convolutions mostly the hand-over; their work is in `during_convolution_ms`).
- `stalls_per_step`, `stall_ms` (means per step): executions of an op that took over 1 ms and over
  5x the median of the same op across the traced steps, and the time above that median (an op that
  waited, e.g. for the second half of its work to get a thread).
- `involuntary_switches_per_step`: how often the kernel took a CPU from XLA's threads mid-work.

`--pin_xla_threads` first pins XLA's intra-op threads one per CPU (sched_setaffinity), to see
whether the kernel's placement of the threads makes the waits.
"""

import collections
import json
import os
import statistics
import tempfile

import jax
from absl import app, flags
from ml_collections import config_flags

import common
import hlo_trace
from piti_jax import huge_pages

_CONFIG = config_flags.DEFINE_config_file("config", "configs/bench.py:tiny", "Job config to trace.")
_MODE = flags.DEFINE_string("mode", None, "stage1 / stage2 / pretrain (default: the config's trainable set).")
_STEPS = flags.DEFINE_integer("steps", 10, "Traced steps (and as many untraced ones for dispatch_ms).")
_PIN = flags.DEFINE_bool("pin_xla_threads", False, "Pin XLA's intra-op threads one per CPU first.")

XLA_THREAD = "tf_XLAEigen"  # the name XLA:CPU gives its intra-op pool's threads
SHORT_GAP_NS = 20_000
STALL_MIN_NS, STALL_FACTOR = 1_000_000, 5.0
STEP_MARK = "step_timeline_step"


def xla_threads() -> list[int]:
  """Thread ids of XLA's intra-op pool in this process (Linux)."""
  found = []
  for tid in os.listdir("/proc/self/task"):
    with open(f"/proc/self/task/{tid}/comm") as f:
      if f.read().strip() == XLA_THREAD:
        found.append(int(tid))
  return sorted(found)


def involuntary_switches(tids: list[int]) -> int:
  """Times the kernel has preempted these threads so far (their nonvoluntary context switches)."""
  total = 0
  for tid in tids:
    with open(f"/proc/self/task/{tid}/status") as f:
      total += sum(int(line.split()[1]) for line in f if line.startswith("nonvoluntary_ctxt_switches"))
  return total


def traced_steps(bench: common.StepBench, steps: int) -> list[hlo_trace.Event]:
  """Events of `steps` steps run under the profiler, each step inside a `STEP_MARK{i}` annotation."""
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    for i in range(steps):
      with jax.profiler.TraceAnnotation(f"{STEP_MARK}{i}"):
        bench.run(1)
    jax.profiler.stop_trace()
    return hlo_trace.trace_events(trace_dir)


def convolution_spans(ops: list[hlo_trace.Event], convolutions: set[str],
                      users: dict[str, set[str]]) -> list[tuple[int, int]]:
  """[start, end) of every convolution in `ops`: from its event's start to the start of the first op
  that reads its result (its Eigen work runs in between, untraced; an upper bound)."""
  spans = []
  for i, event in enumerate(ops):
    if event.op in convolutions:
      reader = next((e for e in ops[i + 1:] if e.op in users.get(event.op, ())), None)
      spans.append((event.start_ns, reader.start_ns if reader else event.start_ns + event.duration_ns))
  return spans


def overlap(start: int, end: int, spans: list[tuple[int, int]]) -> int:
  """Nanoseconds of [start, end) inside the union of `spans`."""
  covered, until = 0, start
  for span_start, span_end in sorted(spans):
    lo, hi = max(span_start, until), min(span_end, end)
    if hi > lo:
      covered += hi - lo
      until = hi
  return covered


def step_breakdown(ops: list[hlo_trace.Event], start: int, end: int,
                   convolutions: list[tuple[int, int]]) -> collections.Counter:
  """Nanoseconds of one step window [start, end) by what ran: see the module docstring."""
  parts = collections.Counter()
  for event in ops:
    parts[f"thread_op_ms/{event.thread}"] += event.duration_ns
  covered_until, seen_op = start, False
  for event in ops:  # by start time
    gap_start, gap = covered_until, event.start_ns - covered_until
    if gap > 0 and not seen_op:
      parts["outside_ops_ms"] += gap
    elif gap > 0:
      in_convolution = overlap(gap_start, event.start_ns, convolutions)
      parts["during_convolution_ms"] += in_convolution
      parts["short_gaps_ms" if gap < SHORT_GAP_NS else "other_gaps_ms"] += gap - in_convolution
    event_end = event.start_ns + event.duration_ns
    if event_end > covered_until:
      parts["covered_ms"] += event_end - max(event.start_ns, covered_until)
      covered_until = event_end
    seen_op = True
  parts["outside_ops_ms"] += max(end - covered_until, 0)
  return parts


def timeline(config, mode: str | None, steps: int, pin: bool) -> dict:
  bench = common.build_step(config, mode)
  threads = xla_threads()
  if pin:
    cpus = sorted(os.sched_getaffinity(0))
    for i, tid in enumerate(threads):
      os.sched_setaffinity(tid, {cpus[i % len(cpus)]})
  by_name, computations = hlo_trace.parse_hlo(bench.compiled.as_text())
  users = collections.defaultdict(set)
  for instruction in by_name.values():
    for operand in instruction.operands:
      users[operand].add(instruction.name)
  untraced = bench.run(steps)
  switches = involuntary_switches(threads)
  events = traced_steps(bench, steps)
  switches = involuntary_switches(threads) - switches
  marks = sorted((e for e in events if e.name.startswith(STEP_MARK) and not e.op), key=lambda e: e.start_ns)
  ops = [e for e in events if e.op]
  kinds = {op: hlo_trace.classify(by_name[op], by_name, computations)[:2]
           for op in {e.op for e in ops} if op in by_name}
  convolutions = {op for op, (kind, _) in kinds.items() if kind == "convolution"}
  durations = collections.defaultdict(list)
  for event in ops:
    durations[event.op].append(event.duration_ns)
  typical = {op: statistics.median(values) for op, values in durations.items()}
  per_step, stalls = [], []
  for mark in marks:
    end = mark.start_ns + mark.duration_ns
    window = [e for e in ops if mark.start_ns <= e.start_ns < end]
    per_step.append(step_breakdown(window, mark.start_ns, end, convolution_spans(window, convolutions, users)))
    for event in window:
      kind, flops = kinds.get(event.op, ("", 0.0))
      if kind in ("convolution", "dot"):
        per_step[-1][f"{kind}_gflop"] += flops
        per_step[-1][f"{kind}_op_ms"] += event.duration_ns
    stalled = [e for e in window if e.duration_ns > max(STALL_MIN_NS, STALL_FACTOR * typical[e.op])]
    stalls.append((len(stalled), sum(e.duration_ns - typical[e.op] for e in stalled)))
  median_ms = lambda key: round(statistics.median(p.get(key, 0) for p in per_step) / 1e6, 2)
  thread_keys = sorted({key for p in per_step for key in p if key.startswith("thread_op_ms/")})
  xla_keys = [key for key in thread_keys if XLA_THREAD in key]
  return {
      "config": bench.config.model.preset, "mode": mode or bench.config.train.trainable or "all",
      "global_batch": bench.config.train.global_batch_size, "device": jax.devices()[0].platform,
      "steps": steps, "xla_threads": len(threads), "pinned": pin,
      "dispatch_ms": common.median_ms([cost.dispatch_s for cost in untraced]),
      "step_ms": common.median_ms([cost.wall_s for cost in untraced]),
      "traced_step_ms": round(statistics.median(m.duration_ns for m in marks) / 1e6, 2),
      "xla_thread_op_ms": [median_ms(key) for key in xla_keys],
      "other_thread_op_ms": round(sum(median_ms(key) for key in thread_keys if key not in xla_keys), 2),
      **{key: median_ms(key) for key in ("covered_ms", "during_convolution_ms", "other_gaps_ms", "short_gaps_ms",
                                         "outside_ops_ms")},
      "convolution_gflop": round(statistics.median(p["convolution_gflop"] for p in per_step) / 1e9, 3),
      "dot_gflop": round(statistics.median(p["dot_gflop"] for p in per_step) / 1e9, 3),
      "convolution_op_ms": median_ms("convolution_op_ms"), "dot_op_ms": median_ms("dot_op_ms"),
      "stalls_per_step": round(statistics.mean(n for n, _ in stalls), 2),
      "stall_ms": round(statistics.mean(ns for _, ns in stalls) / 1e6, 2),
      "involuntary_switches_per_step": round(switches / steps, 1),
  }


def main(argv) -> None:
  del argv
  print(json.dumps(timeline(_CONFIG.value, _MODE.value, _STEPS.value, _PIN.value)), flush=True)


if __name__ == "__main__":
  huge_pages.reexec_with_huge_pages()  # as `python -m piti_jax.main` runs
  app.run(main)
