"""Where a train step spends its time: per-op timing from a jax.profiler trace, mapped to model code.

  python benchmarks/profile_step.py --config=configs/bench.py:tiny --mode=stage2 --steps=3
  python benchmarks/profile_step.py --config=configs/shapes.py:pretrain --top=25 --hlo_out=/tmp/step.hlo

The compiled step runs --steps times under `jax.profiler`; every XLA thunk (one HLO
instruction or fusion) it executed is summed per step and joined with the compiled HLO:
its kind (convolution, dot, reduce, elementwise, copy, ...), its FLOPs (convolutions and
dots, from the shapes), whether it belongs to the backward pass (a JAX `transpose(` in its
op name) and the model function that emitted it (the source line in its metadata, shown as
`file:function`). Prints one JSON line with the step time, the op time by kind, by source
function and by direction, and the slowest ops with their achieved GFLOP/s. Op times are
summed over threads, so they can add up to more than the wall time when XLA runs
independent ops concurrently. They can also add up to much less: on jaxlib 0.10 the traced
convolution thunks miss most of the convolutions' CPU time (the bench_tiny stage-2 step: 28 ms
of convolutions and 398 ms of ops in all, against 1.43 CPU-seconds per step and about 0.3 of
them in Eigen's convolution patch packing alone under `perf record`, which samples every
thread; docs/performance.md, section 13).
"""

import collections
import dataclasses
import glob
import json
import math
import os
import re
import statistics
import tempfile

import jax
from absl import app, flags
from jax._src.lib import _profile_data
from ml_collections import config_flags

import common
from piti_jax import huge_pages

_CONFIG = config_flags.DEFINE_config_file("config", "configs/bench.py:tiny", "Job config to profile.")
_MODE = flags.DEFINE_string("mode", None, "stage1 / stage2 / pretrain (default: the config's trainable set).")
_STEPS = flags.DEFINE_integer("steps", 3, "Traced steps (after one warm-up step).")
_TOP = flags.DEFINE_integer("top", 20, "How many of the slowest ops to list.")
_HLO_OUT = flags.DEFINE_string("hlo_out", "", "Also write the compiled step's HLO text to this file.")

_SHAPE = re.compile(r"\b(?:pred|[a-z]+\d+)\[([\d,]*)\]")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$")


@dataclasses.dataclass
class Instruction:
  """One HLO instruction: its opcode, result and operand shapes, attributes and metadata."""
  name: str
  opcode: str
  shape: tuple[int, ...]  # of the result (the first array of a tuple result)
  operands: list[str]
  text: str
  op_name: str
  frame: int  # stack_frame_id of its metadata (0 = none)


def _dims(text: str) -> list[tuple[int, ...]]:
  return [tuple(int(d) for d in m.split(",") if d) for m in _SHAPE.findall(text)]


def parse_stack_frames(text: str) -> dict[int, list[tuple[str, str]]]:
  """stack_frame_id -> [(file, function), ...] innermost first, from the HLO text's frame tables."""
  tables: dict[str, dict[int, str]] = collections.defaultdict(dict)
  section = ""
  for line in text.splitlines():
    if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
      section = line
      continue
    match = re.match(r"^(\d+) (.*)$", line)
    if section and match:
      tables[section][int(match.group(1))] = match.group(2)
    elif section and line.strip():
      section = ""
  field = lambda entry, name: int(re.search(name + r"=(\d+)", entry).group(1))
  chains = {}
  for frame_id in tables["StackFrames"]:
    chain, current, seen = [], frame_id, set()
    while current and current not in seen:
      seen.add(current)
      entry = tables["StackFrames"][current]
      location = tables["FileLocations"][field(entry, "file_location_id")]
      chain.append((tables["FileNames"][field(location, "file_name_id")].strip('"'),
                    tables["FunctionNames"][field(location, "function_name_id")].strip('"')))
      current = field(entry, "parent_frame_id") - 1  # the tables print the parent's id plus one
    chains[frame_id] = chain
  return chains


def parse_hlo(text: str) -> tuple[dict[str, Instruction], dict[str, list[Instruction]]]:
  """(instructions by name, instructions per computation) of an HLO module's text."""
  by_name: dict[str, Instruction] = {}
  computations: dict[str, list[Instruction]] = collections.defaultdict(list)
  current = ""
  for line in text.splitlines():
    header = _COMPUTATION.match(line)
    if header and " = " not in line.split("{")[0]:
      current = header.group(1)
      continue
    if " = " not in line or not line.startswith(" "):
      continue
    left, right = line.split(" = ", 1)
    name = left.strip().removeprefix("ROOT ").lstrip("%")
    opcode = re.search(r"(?:^|[\s}])([a-z][\w\-]*)\(", right)
    body = right.split(", metadata=")[0]
    op_name = re.search(r'op_name="([^"]*)"', right)
    frame = re.search(r"stack_frame_id=(\d+)", right)
    arguments = body[opcode.end():] if opcode else ""
    operands = re.findall(r"%([\w.\-]+)", arguments.split(")")[0])
    result = _dims(body[:opcode.start()] if opcode else body)
    instruction = Instruction(name, opcode.group(1) if opcode else "?", result[0] if result else (), operands, body,
                              op_name.group(1) if op_name else "", int(frame.group(1)) if frame else 0)
    by_name[name] = instruction
    computations[current].append(instruction)
  return by_name, computations


def instruction_flops(instruction: Instruction, by_name: dict[str, Instruction]) -> float:
  """2 x multiply-adds of a convolution or dot, from its shapes (0 for anything else)."""
  operands = [by_name[o].shape if o in by_name else None for o in instruction.operands]
  if instruction.opcode == "convolution" and len(operands) == 2 and operands[1]:
    labels = re.search(r"dim_labels=\w+_(\w+)->", instruction.text)
    if labels is None:
      return 0.0
    taps = math.prod(size for size, label in zip(operands[1], labels.group(1)) if label != "o")
    return 2.0 * math.prod(instruction.shape) * taps
  if instruction.opcode == "dot" and operands and operands[0]:
    contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", instruction.text)
    dims = [int(d) for d in contracting.group(1).split(",") if d] if contracting else []
    return 2.0 * math.prod(instruction.shape) * math.prod(operands[0][d] for d in dims)
  return 0.0


def _called(instruction: Instruction, computations: dict[str, list[Instruction]]) -> list[Instruction]:
  """Instructions inside the computations a fusion/call calls (recursively)."""
  found = []
  for callee in _CALLS.findall(instruction.text):
    for inner in computations.get(callee, []):
      found.append(inner)
      found.extend(_called(inner, computations))
  return found


def classify(instruction: Instruction, by_name: dict[str, Instruction],
             computations: dict[str, list[Instruction]]) -> tuple[str, float, Instruction]:
  """(kind, FLOPs, the instruction that names the source) of an executed op."""
  inner = [instruction] + _called(instruction, computations)
  opcodes = {i.opcode for i in inner}
  flops = sum(instruction_flops(i, by_name) for i in inner)
  for kind in ("convolution", "dot"):
    if kind in opcodes:
      return kind, flops, next(i for i in inner if i.opcode == kind)
  if opcodes & {"reduce", "reduce-window"}:
    return "reduce", flops, next(i for i in inner if i.opcode in ("reduce", "reduce-window"))
  if opcodes & {"copy", "transpose"} and opcodes <= {"copy", "transpose", "parameter", "bitcast", "fusion",
                                                    "reshape", "broadcast", "tuple", "get-tuple-element"}:
    return "copy/transpose", flops, instruction
  if opcodes & {"all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all"}:
    return "collective", flops, instruction
  if opcodes & {"rng-bit-generator", "rng"}:
    return "random", flops, instruction
  if opcodes & {"scatter", "gather", "dynamic-slice", "dynamic-update-slice", "sort"}:
    return "gather/scatter/sort", flops, instruction
  return "elementwise", flops, instruction


def attribute(chain: list[tuple[str, str]]) -> tuple[str, str]:
  """(op source, block) of a stack chain: the innermost project function, and the innermost one
  outside the shared layers module (the block that called the layer), as `file.py:function`."""
  own = [(os.path.basename(f), fn) for f, fn in chain if f"{os.sep}piti_jax{os.sep}" in f]
  if not own:
    return "(outside piti_jax)", "(outside piti_jax)"
  blocks = [entry for entry in own if entry[0] != "layers.py"] or own
  return f"{own[0][0]}:{own[0][1]}", f"{blocks[0][0]}:{blocks[0][1]}"


def op_times(trace_dir: str) -> dict[str, float]:
  """Total nanoseconds per HLO op name over every thunk event in the newest trace of `trace_dir`."""
  path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))[-1]
  totals: dict[str, float] = collections.defaultdict(float)
  for plane in _profile_data.ProfileData.from_file(path).planes:
    for line in plane.lines:
      for event in line.events:
        stats = dict(event.stats)
        if "hlo_op" in stats:
          totals[str(stats["hlo_op"])] += event.duration_ns
  return totals


def profile(config, mode: str | None, steps: int, top: int, hlo_out: str) -> dict:
  bench = common.build_step(config, mode)
  hlo = bench.compiled.as_text()
  if hlo_out:
    with open(hlo_out, "w") as f:
      f.write(hlo)
  by_name, computations = parse_hlo(hlo)
  chains = parse_stack_frames(hlo)
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    times = [cost.wall_s for cost in bench.run(steps)]
    jax.profiler.stop_trace()
    totals = op_times(trace_dir)
  by_kind, by_source, by_block, by_direction = (collections.defaultdict(float) for _ in range(4))
  rows = []
  for name, ns in totals.items():
    ms = ns / 1e6 / steps
    instruction = by_name.get(name)
    if instruction is None:
      kind, flops, named, function, block, backward = "(not in HLO)", 0.0, None, "(unknown)", "(unknown)", False
    else:
      kind, flops, named = classify(instruction, by_name, computations)
      function, block = attribute(chains.get(named.frame or instruction.frame, []))
      backward = "transpose(" in (named.op_name or instruction.op_name)
    by_kind[kind] += ms
    by_source[function] += ms
    by_block[block] += ms
    by_direction["backward" if backward else "forward/update"] += ms
    rows.append({"op": name, "kind": kind, "ms": round(ms, 2), "gflops_per_s": round(flops / ms / 1e6, 1) if flops else None,
                 "source": function, "block": block, "backward": backward,
                 "op_name": (named.op_name if named else "")[-120:]})
  rows.sort(key=lambda r: -r["ms"])
  ordered = lambda d: {k: round(v, 1) for k, v in sorted(d.items(), key=lambda kv: -kv[1])}
  return {
      "config": bench.config.model.preset, "mode": mode or bench.config.train.trainable or "all",
      "global_batch": bench.config.train.global_batch_size, "dtype": bench.config.model.dtype,
      "step_ms": round(statistics.median(times) * 1e3, 1), "op_ms": round(sum(by_kind.values()), 1),
      "by_kind_ms": ordered(by_kind), "by_direction_ms": ordered(by_direction),
      "by_source_ms": dict(list(ordered(by_source).items())[:20]),
      "by_block_ms": dict(list(ordered(by_block).items())[:20]), "top_ops": rows[:top],
  }


def main(argv) -> None:
  del argv
  print(json.dumps(profile(_CONFIG.value, _MODE.value, _STEPS.value, _TOP.value, _HLO_OUT.value)), flush=True)


if __name__ == "__main__":
  huge_pages.reexec_with_huge_pages()  # as `python -m piti_jax.main` runs
  app.run(main)
