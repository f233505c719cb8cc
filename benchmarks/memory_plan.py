"""Ahead-of-time memory plan of a train step on N devices: one JSON line per plan, nothing allocated.

  python benchmarks/memory_plan.py --config configs/coco_stuff_mask.py:stage2 --devices 8 --mesh data=8,fsdp=1
  python benchmarks/memory_plan.py --config configs/text_pretrain.py:base --preset glide_full_base64 \
      --devices 64 --mesh data=8,fsdp=8 --dtype bfloat16 --remat --hbm-gib 16
  python benchmarks/memory_plan.py --table --platform tpu --hbm-gib 16 --out benchmarks/results/memory_table.jsonl
  python benchmarks/memory_plan.py --config configs/bench.py:small --devices 1 --global-batch 8 --trainable encoder

The step is lowered and compiled on N fake CPU devices for abstract (ShapeDtypeStruct)
inputs with the run's real shardings and donation (piti_jax/train/memory_plan.py says where
each number comes from). --platform gpu/tpu traces the forms that platform runs instead of a
CPU's (piti_jax/models/target.py); a plan for a pod takes it, a check against a run here does
not. Per-device GiB of parameters, optimizer state, EMA, the whole state, temporaries and the
peak; with --hbm-gib, whether the peak fits. The global batch
is the config's unless --global-batch says otherwise; the table fixes a per-device batch
(see `table`). With --out the table appends its lines to that file and, run again, skips the
compiles whose lines are already there (one 3.5B compile takes tens of minutes on a CPU).
"""

import argparse
import os
import sys


def _parse() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", help="configs/<file>.py:<job>")
  parser.add_argument("--devices", type=int, default=8, help="fake CPU devices (the mesh must cover them)")
  parser.add_argument("--mesh", default="", help="data=A,fsdp=B (default data=N,fsdp=1)")
  parser.add_argument("--preset", default="", help="model preset instead of the config's")
  parser.add_argument("--dtype", default="", choices=("", "float32", "bfloat16"), help="compute dtype override")
  parser.add_argument("--remat", action="store_true", help="recompute UNet block activations in the backward pass")
  parser.add_argument("--recompute-encoder", action="store_true",
                      help="model.overrides.recompute_encoder: the condition encoder recomputed in the backward pass")
  parser.add_argument("--global-batch", type=int, default=0, help="global batch override")
  parser.add_argument("--trainable", default=None,
                      help="config.train.trainable override, e.g. 'encoder' for PITI's stage 1 ('' = everything)")
  parser.add_argument("--platform", default="", choices=("", "cpu", "gpu", "tpu"),
                      help="whose forms to trace (default: the compiling CPU's)")
  parser.add_argument("--hbm-gib", type=float, default=0.0, help="device memory to check the peak against")
  parser.add_argument("--table", action="store_true", help="plan every row of the README table")
  parser.add_argument("--out", default="", help="with --table: append lines here, skip compiles already in it")
  parser.add_argument("--markdown", default="", help="print the README table of a --table --out file and exit")
  args = parser.parse_args()
  if not args.table and not args.config and not args.markdown:
    parser.error("give --config (or --table, or --markdown)")
  return args


ARGS = _parse()
DEVICE_COUNTS = (8, 64, 256)
if ARGS.table:
  ARGS.devices = max(DEVICE_COUNTS)
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + f" --xla_force_host_platform_device_count={ARGS.devices}").strip()

import importlib.util  # noqa: E402  (jax must see the flags above)
import json  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, Mesh  # noqa: E402

from piti_jax.models import target  # noqa: E402
from piti_jax.train import memory_plan, partition  # noqa: E402

# README table: (name, config, job, preset override, per-device batch), cheapest compile first
TABLE_MODELS = (
    ("PITI base 64 (stage 2)", "configs/coco_stuff_mask.py", "stage2", "", 4),
    ("PITI upsampler 64->256", "configs/coco_stuff_mask.py", "upsample", "", 1),
    ("GLIDE 3.5B layout base 64", "configs/text_pretrain.py", "base", "glide_full_base64", 1),
)
TABLE_VARIANTS = (("bfloat16", True), ("float32", False), ("bfloat16", False), ("float32", True))
COMPILED_DEVICES = 8
FSDP_GROUP = 8


def load_config(spec: str):
  path, _, job = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("planned_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(job) if job else module.get_config()


def make_mesh(devices: int, mesh: str) -> Mesh:
  sizes = {"data": devices, "fsdp": 1}
  for part in filter(None, mesh.split(",")):
    name, _, value = part.partition("=")
    if name not in sizes:
      raise SystemExit(f"--mesh takes data=A,fsdp=B; got {part!r}")
    sizes[name] = int(value)
  if mesh and "data=" not in mesh:
    sizes["data"] = devices // sizes["fsdp"]
  if sizes["data"] * sizes["fsdp"] != devices:
    raise SystemExit(f"--mesh data={sizes['data']} x fsdp={sizes['fsdp']} does not cover {devices} devices")
  grid = np.asarray(jax.devices()[:devices]).reshape(sizes["data"], sizes["fsdp"])
  return Mesh(grid, partition.MESH_AXES, axis_types=(AxisType.Auto,) * 2)


def configure(config, *, preset: str, dtype: str, remat: bool, global_batch: int, trainable: str | None = None,
              recompute_encoder: bool = False):
  config = config.copy_and_resolve_references()
  if preset:
    config.model.preset = preset
  if dtype:
    config.model.dtype = dtype
  if remat:
    config.model.overrides.remat = True
  if recompute_encoder:
    config.model.overrides.recompute_encoder = True
  if global_batch:
    config.train.global_batch_size = global_batch
  if trainable is not None:
    config.train.trainable = trainable
  config.init = {}
  return config


def plan_line(config, mesh: Mesh, hbm_gib: float, platform: str | None, **labels) -> dict:
  start = time.perf_counter()
  plan = memory_plan.plan_train_step(config, mesh, platform)
  line = {**labels, "platform": target.resolve(platform), "preset": config.model.preset,
          "dtype": config.model.dtype, "remat": bool(config.model.overrides.remat),
          "recompute_encoder": bool(config.model.overrides.recompute_encoder), **plan.as_dict(),
          "plan_s": round(time.perf_counter() - start, 1)}
  if hbm_gib:
    line["hbm_gib"] = hbm_gib
    line["fits"] = plan.fits(hbm_gib * memory_plan.GIB)
  return {k: v for k, v in line.items() if not k.endswith("_bytes")}


def read_table_lines(path: str) -> list[dict]:
  """The JSON lines a `--table --out` run wrote to `path` (none when there is no such file)."""
  if not path or not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def compiles_done(path: str) -> set[tuple]:
  """(model, dtype, remat, compiled_on, platform) of the table lines already in `path` (lines
  without a platform were traced with a CPU's forms)."""
  return {(line["model"], line["dtype"], line["remat"], line["compiled_on"], line.get("platform", "cpu"))
          for line in read_table_lines(path)}


def table(hbm_gib: float, out: str, platform: str | None) -> None:
  """Every README row: per (model, dtype, remat, DP/FSDP) one compile on 8 devices, rescaled to 64 and 256.

  With a fixed per-device batch the temporaries do not depend on the device count, so the
  8-device compile gives them for every count; state bytes are exact per mesh
  (memory_plan.rescale_plan). FSDP meshes shard over groups of 8 devices (one host of 8
  accelerators) and, from 64 devices on, over all of them.
  """
  done = compiles_done(out)
  label = target.resolve(platform)  # the platform each line names
  for name, path, job, preset, per_device in TABLE_MODELS:
    base = load_config(f"{path}:{job}")
    for dtype, remat in TABLE_VARIANTS:
      for fsdp in (False, True):
        def config_for(devices):
          return configure(base, preset=preset, dtype=dtype, remat=remat, global_batch=per_device * devices)

        compiled_mesh = f"data=1,fsdp={FSDP_GROUP}" if fsdp else f"data={COMPILED_DEVICES}"
        if (name, dtype, remat, compiled_mesh, label) in done:
          continue
        start = time.perf_counter()
        compiled = memory_plan.plan_train_step(config_for(COMPILED_DEVICES), make_mesh(COMPILED_DEVICES, compiled_mesh),
                                               platform)
        compile_s = round(time.perf_counter() - start, 1)
        lines = []
        for devices in DEVICE_COUNTS:
          fsdp_sizes = ([FSDP_GROUP] + ([devices] if devices > FSDP_GROUP else [])) if fsdp else [1]
          for fsdp_size in fsdp_sizes:
            mesh = make_mesh(devices, f"data={devices // fsdp_size},fsdp={fsdp_size}")
            config = config_for(devices)
            plan = compiled if devices == COMPILED_DEVICES else memory_plan.rescale_plan(config, mesh, compiled)
            line = {"model": name, "platform": label, "preset": config.model.preset, "dtype": dtype,
                    "remat": remat, **plan.as_dict(), "compiled_on": compiled_mesh, "plan_s": compile_s,
                    "hbm_gib": hbm_gib, "fits": plan.fits(hbm_gib * memory_plan.GIB)}
            lines.append(json.dumps({k: v for k, v in line.items() if not k.endswith("_bytes")}))
        print("\n".join(lines), flush=True)
        if out:
          with open(out, "a") as f:
            f.write("".join(line + "\n" for line in lines))


def markdown(path: str) -> str:
  """The README table of the lines a `--table --out` run wrote to `path`.

  One row per model, compute dtype, remat and sharding (data parallel; FSDP within groups of
  8 devices, data parallel across them; FSDP over every device); per-device GiB of the state
  and the peak (state + batch + temporaries) at 8, 64 and 256 devices, and whether it fits.
  """
  lines = read_table_lines(path)
  hbm = lines[0]["hbm_gib"] if lines else 0
  rows: dict[tuple, dict[int, dict]] = {}
  for line in lines:
    fsdp, devices = line["mesh"]["fsdp"], line["devices"]
    kinds = []
    if fsdp == 1:
      kinds.append("data parallel")
    if fsdp == FSDP_GROUP:
      kinds.append("FSDP 8, data across")
    if fsdp > 1 and fsdp == devices:  # on 8 devices, FSDP 8 is also FSDP over all
      kinds.append("FSDP over all")
    for kind in kinds:
      rows.setdefault((line["model"], line["dtype"], line["remat"], kind), {})[devices] = line
  out = ["| model | compute | remat | sharding | images/device | temporaries | state / peak GiB at "
         + " / ".join(map(str, DEVICE_COUNTS)) + f" devices (fits {hbm:g} GiB?) |",
         "|---|---|---|---|---|---|---|"]
  for (model, dtype, remat, kind), by_devices in rows.items():
    first = next(iter(by_devices.values()))
    cells = [f"{by_devices[n]['state_gib']:.2f} / {by_devices[n]['peak_gib']:.2f} "
             f"{'yes' if by_devices[n]['fits'] else 'no'}" if n in by_devices else "-" for n in DEVICE_COUNTS]
    out.append(f"| {model} | {dtype} | {'on' if remat else 'off'} | {kind} | {first['per_device_batch']} "
               f"| {first['temp_gib']:.2f} | {' ; '.join(cells)} |")
  return "\n".join(out)


# XLA:CPU maps each compiled kernel's code separately; compiling a full-size step (the
# upsampler's FSDP plan, the 3.5B model) exceeded Linux's default of 65530 memory maps here
# ("LLVM compilation error: Cannot allocate memory", then a crash).
MIN_MAP_COUNT = 262144
MAP_COUNT_FILE = "/proc/sys/vm/max_map_count"


def warn_if_few_memory_maps() -> None:
  if os.path.exists(MAP_COUNT_FILE):
    with open(MAP_COUNT_FILE) as f:
      limit = int(f.read())
    if limit < MIN_MAP_COUNT:
      print(f"memory_plan: vm.max_map_count is {limit}; compiling full-size models can fail with 'LLVM "
            "compilation error: Cannot allocate memory'. Raise it first: sudo sysctl -w vm.max_map_count=1048576",
            file=sys.stderr)


def main() -> None:
  if ARGS.markdown:
    print(markdown(ARGS.markdown))
    return
  warn_if_few_memory_maps()
  if ARGS.table:
    table(ARGS.hbm_gib or 16.0, ARGS.out, ARGS.platform or None)
    return
  config = configure(load_config(ARGS.config), preset=ARGS.preset, dtype=ARGS.dtype, remat=ARGS.remat,
                     global_batch=ARGS.global_batch, trainable=ARGS.trainable, recompute_encoder=ARGS.recompute_encoder)
  print(json.dumps(plan_line(config, make_mesh(ARGS.devices, ARGS.mesh), ARGS.hbm_gib, ARGS.platform or None,
                              job=ARGS.config, trainable=config.train.trainable)))


if __name__ == "__main__":
  sys.exit(main())
