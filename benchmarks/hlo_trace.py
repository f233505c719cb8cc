"""The compiled HLO of a step and a `jax.profiler` trace of it, read back for the profiling scripts.

`parse_hlo` reads an HLO module's text into instructions, `classify` gives an executed op its kind
(convolution, dot, reduce, elementwise, copy, ...) and FLOPs, `parse_stack_frames` the source lines
of its metadata; `trace_events` reads every event of a trace, each XLA thunk with the HLO op it ran.
Used by benchmarks/profile_step.py (op time by kind and source) and benchmarks/step_timeline.py (when
and on which thread the ops ran).
"""

import collections
import dataclasses
import glob
import math
import os
import re

from jax._src.lib import _profile_data

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


@dataclasses.dataclass(frozen=True)
class Event:
  """One event of a trace: start and duration (ns), the thread (trace line) it ran on, and either
  the HLO op it executed (`op`) or, for other events such as annotations, its name (`op` empty)."""
  start_ns: int
  duration_ns: int
  thread: str
  op: str
  name: str


def trace_events(trace_dir: str) -> list[Event]:
  """Every event of the newest trace in `trace_dir`, by start time."""
  path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))[-1]
  events = []
  for plane in _profile_data.ProfileData.from_file(path).planes:
    for line in plane.lines:
      for event in line.events:
        op = dict(event.stats).get("hlo_op")
        events.append(Event(event.start_ns, event.duration_ns, line.name, str(op) if op is not None else "",
                            event.name))
  return sorted(events, key=lambda event: event.start_ns)


def op_times(trace_dir: str) -> dict[str, float]:
  """Total nanoseconds per HLO op name over every thunk event in the newest trace of `trace_dir`."""
  totals: dict[str, float] = collections.defaultdict(float)
  for event in trace_events(trace_dir):
    if event.op:
      totals[event.op] += event.duration_ns
  return totals
