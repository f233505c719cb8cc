"""This project against the official PITI PyTorch code on the same machine, sizes and batches.

  python benchmarks/vs_pytorch.py --piti-repo ~/src/PITI
  python benchmarks/vs_pytorch.py --piti-repo ~/src/PITI --rows train_tiny_stage2,sample_small --repeats 2

Needs a checkout of the official code (github.com/PITI-Synthesis/PITI) and PyTorch (the
`convert` extra). The reference is imported from --piti-repo at run time; nothing of it is
copied here. Its modules import a few packages that the measured code never calls (MPI
set-up, blob storage, timm's unused `PatchEmbed`, torchvision's image saving and the
upsampler's VGG); when one of `mpi4py`, `blobfile`, `timm`, `torchvision` is not installed,
a stand-in module that raises if anything in it is used is put in its place. Its
process group is a one-process gloo group, made directly rather than through MPI, and
NumPy's `np.int` alias (gone since NumPy 1.24; the reference's t-sampler uses it) is
restored as `int` in the reference's process.

Every row runs in fresh child processes, alternating reference, project, reference (with
--repeats R: R project runs between R + 1 reference runs), each pinned to the same --cpus
(2 by default) with 2 compute threads (torch.set_num_threads; XLA sizes its pool from the
same CPU set). The project's runs use glibc's huge-page malloc as its entry points do
(piti_jax/huge_pages.py); the reference runs as its own code starts, unless
--reference-huge-pages gives it the same setting. A row prints one JSON line: the run's settings
(timed train steps or sampler steps, repeats, the project's commit and the UTC date), median step
time and images/s of each side, the speed-up (project images/s over the reference's), the
spread of the repeats, peak RSS of each side's process and their ratio, whether each side
ran with huge pages, and the FLOP accounting of the project's program.
`benchmarks/vs_pytorch_summary.py` sums the rows of several runs up (the README's table).

Rows (sizes are the bench_tiny / bench_small presets, configs/bench.py):
- train_<size>_<stage>: one optimizer step of the reference's TrainLoop.run_step (AdamW,
  EMA 0.9999, loss-second-moment t-sampling, dropout 0.1; stage 1 optimises the encoder
  only) against the project's jitted train step, compiled before its state is made and then
  run with JAX's caches emptied, as `python -m piti_jax.main` runs it
  (`loop.train(release_caches=True)`). tiny runs batch 4, small batch 8. --recompute-encoder
  runs the project's model with `model.overrides.recompute_encoder` (less memory, slower).
- sample_<size>: one step of the guided base sampler (classifier-free guidance 1.3 on a
  doubled batch [cond; ones], ancestral DDPM, --sample-steps respaced steps): the
  reference's glide_util.sample, which runs the encoder at every step, against the
  project's jitted loop, which encodes once per sample (its step time includes that
  encoder pass divided by the step count).
- upsample_tiny: one step of the upsampler sampler (fast27, temperature 0.997, no
  guidance) at a bench_tiny-width 64->256 upsampler.
The sampler rows build a randomly initialised model (a sampling run reads its weights from a
checkpoint instead) and, as the train rows, empty JAX's caches once it is built and once the
sampler is compiled, so the programs that initialised the weights are not held; their child
processes import the model and sampling code only, not the training stack (data pipeline,
optimizer, train loop), as a sampling run does.
"""

import argparse
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import types

import child_process
import rss
from piti_jax import huge_pages

ROWS = {
    "train_tiny_stage1": dict(kind="train", size="tiny", batch=4, mode="stage1"),
    "train_tiny_stage2": dict(kind="train", size="tiny", batch=4, mode="stage2"),
    "train_small_stage1": dict(kind="train", size="small", batch=8, mode="stage1"),
    "train_small_stage2": dict(kind="train", size="small", batch=8, mode="stage2"),
    "sample_tiny": dict(kind="sample", size="tiny", batch=4),
    "sample_small": dict(kind="sample", size="small", batch=8),
    "upsample_tiny": dict(kind="upsample", size="tiny", batch=4),
}
# The 64->256 upsampler row: bench_tiny widths over the GLIDE upsampler's six levels.
UPSAMPLER_OVERRIDES = dict(image_size=256, super_res=True, channel_mult=(1, 1, 2, 2, 4, 4), attention_ds=(8, 16, 32))
LOW_RES = 64
GUIDANCE_SCALE = 1.3  # the released sample.sh
UPSAMPLE_TEMPERATURE = 0.997
UPSAMPLE_RESPACING = "fast27"
THREADS = 2


def model_config(row: dict):
  from piti_jax.models import presets  # pylint: disable=import-outside-toplevel

  overrides = UPSAMPLER_OVERRIDES if row["kind"] == "upsample" else {}
  return presets.get_config(f"bench_{row['size']}", **overrides)


def row_spec(row: dict) -> dict:
  """Everything a child needs about a row, as JSON (the reference's child never imports JAX)."""
  config = model_config(row)
  fields = ("image_size", "model_channels", "xf_width", "xf_layers", "xf_heads", "cond_size", "cond_channels")
  return dict(row, model={name: getattr(config, name) for name in fields},
              options=_reference_options(config, row))


# ---------------------------------------------------------------------------------------------
# Reference side.


class _Unused:
  """Stand-in for an object of a package the measured reference code never uses."""

  def __init__(self, name: str):
    self._name = name

  def __getattr__(self, attr):
    raise RuntimeError(f"{self._name}.{attr} is a vs_pytorch stand-in; the benchmarked code should not use it")

  def __call__(self, *args, **kwargs):
    raise RuntimeError(f"{self._name} is a vs_pytorch stand-in; the benchmarked code should not use it")


def _install_stand_ins() -> list[str]:
  """Stand-in modules for the reference's unused imports that are not installed; returns their names."""
  wanted = {
      "mpi4py": {"MPI": _Unused("mpi4py.MPI")},
      "blobfile": {name: _Unused(f"blobfile.{name}") for name in ("BlobFile", "join", "dirname", "exists")},
      "timm": {},
      "timm.models": {},
      "timm.models.vision_transformer": {"PatchEmbed": _Unused("timm PatchEmbed")},
      "torchvision": {},
      "torchvision.utils": {"save_image": _Unused("torchvision.utils.save_image")},
      "torchvision.models": {"vgg19": _Unused("torchvision.models.vgg19")},
  }
  installed = []
  for name, attributes in wanted.items():
    top = name.split(".")[0]
    if top not in installed and importlib.util.find_spec(top) is not None:
      continue
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    sys.modules[name] = module
    if "." in name:
      parent, child = name.rsplit(".", 1)
      setattr(sys.modules[parent], child, module)
    installed.append(name)
  return installed


def _reference_options(config, row: dict) -> dict:
  """The reference's create_model_and_diffusion arguments for a project ModelConfig."""
  upsampler = row["kind"] == "upsample"
  return dict(
      image_size=config.image_size, num_channels=config.model_channels, num_res_blocks=config.num_res_blocks,
      channel_mult=",".join(map(str, config.channel_mult)), num_heads=1, num_head_channels=config.num_head_channels,
      num_heads_upsample=-1,
      attention_resolutions=",".join(str(config.image_size // ds) for ds in config.attention_ds),
      dropout=config.dropout, text_ctx=128, xf_width=config.xf_width, xf_layers=config.xf_layers,
      xf_heads=config.xf_heads, xf_final_ln=True, xf_padding=True, learn_sigma=True, sigma_small=False,
      diffusion_steps=1000, noise_schedule="linear" if upsampler else "squaredcos_cap_v2", timestep_respacing="",
      use_kl=False, predict_xstart=False, rescale_timesteps=True, rescale_learned_sigmas=True, use_fp16=False,
      use_scale_shift_norm=True, resblock_updown=True, cache_text_emb=False, inpaint=False,
      super_res=LOW_RES if upsampler else 0, mode="coco")


def _reference_model(spec: dict):
  """The reference Text2ImModel at the preset's size, and its diffusion.

  The reference hard-codes an 8-layer, 512-wide task encoder (conv6 -> 512 channels,
  transformer_proj Linear(512, ...)); at the bench presets' widths those three pieces are
  rebuilt from the reference's own classes with the preset's width and depth. Its
  uninitialised cls_token / positional_embedding get N(0, 0.01^2) so the run stays finite.
  """
  import torch as th  # pylint: disable=import-outside-toplevel
  from pretrained_diffusion import script_util, text2im_model  # pylint: disable=import-outside-toplevel

  config = spec["model"]
  model, diffusion = script_util.create_model_and_diffusion(**spec["options"])
  width, mc = config["xf_width"], config["model_channels"]
  if width != 512 or config["xf_layers"] != 8:
    model.encoder = text2im_model.Encoder(img_size=config["image_size"], patch_size=config["image_size"] // 16,
                                          in_chans=config["cond_channels"], xf_width=width,
                                          xf_layers=config["xf_layers"], xf_heads=config["xf_heads"], model_channels=mc)
    model.encoder.cnn.conv6 = text2im_model.conv3x3(512, width)
    model.decoder.transformer_proj = th.nn.Linear(width, 4 * mc)
  with th.no_grad():
    th.nn.init.normal_(model.encoder.cls_token, std=0.01)
    th.nn.init.normal_(model.encoder.positional_embedding, std=0.01)
  return model, diffusion


def _init_process_group() -> None:
  import torch.distributed as dist  # pylint: disable=import-outside-toplevel

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)


def run_reference(row: dict, piti_repo: str, steps: int, sample_steps: int) -> dict:
  """Times the reference on a row spec; returns step seconds and memory."""
  stand_ins = _install_stand_ins()
  sys.path.insert(0, os.path.abspath(piti_repo))
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch as th  # pylint: disable=import-outside-toplevel

  if not hasattr(np, "int"):
    np.int = int
  th.set_num_threads(THREADS)
  from pretrained_diffusion import glide_util, logger, resample, train_util  # pylint: disable=import-outside-toplevel

  baseline = rss.current_mib()
  _init_process_group()
  logger.configure(dir=tempfile.mkdtemp(prefix="vs_pytorch_"), format_strs=[])
  th.manual_seed(0)
  model, diffusion = _reference_model(row)
  options, config = row["options"], row["model"]
  batch, size, channels = row["batch"], config["image_size"], config["cond_channels"]
  cond = th.rand(batch, channels, config["cond_size"], config["cond_size"]) * 2 - 1
  times = []
  if row["kind"] == "train":
    loop = train_util.TrainLoop(
        model, options, diffusion, data=None, val_data=None, batch_size=batch, microbatch=-1, lr=3.5e-5,
        ema_rate="0.9999", log_interval=10**9, save_interval=10**9, resume_checkpoint="",
        schedule_sampler=resample.create_named_schedule_sampler("loss-second-moment", diffusion),
        finetune_decoder=row["mode"] == "stage2", mode="coco", use_vgg=False, use_gan=False,
        uncond_p=0.0 if row["mode"] == "stage1" else 0.2)
    images = th.rand(batch, 3, size, size) * 2 - 1
    loop.run_step(images, {"ref": cond})
    rss.reset_peak()
    for _ in range(steps):
      start = time.perf_counter()
      loop.run_step(images, {"ref": cond})
      times.append(time.perf_counter() - start)
  else:
    upsampler = row["kind"] == "upsample"
    prompt = {"ref": cond}
    if upsampler:
      prompt["low_res"] = th.rand(batch, 3, LOW_RES, LOW_RES) * 2 - 1
    respacing = UPSAMPLE_RESPACING if upsampler else str(sample_steps)
    count = 27 if upsampler else sample_steps
    model.eval()
    with th.no_grad():
      for i in range(3):
        if i == 1:
          rss.reset_peak()
        start = time.perf_counter()
        glide_util.sample(glide_model=model, glide_options=options, side_x=size, side_y=size, prompt=prompt,
                          batch_size=batch, guidance_scale=GUIDANCE_SCALE, device="cpu",
                          prediction_respacing=respacing if i else "2", upsample_enabled=upsampler,
                          upsample_temp=UPSAMPLE_TEMPERATURE)
        if i:
          times.append((time.perf_counter() - start) / count)
  return {"step_s": times, "peak_rss_mib": rss.peak_mib(), "process_peak_rss_mib": rss.process_peak_mib(),
          "import_rss_mib": baseline, "threads": th.get_num_threads(), "stand_ins": stand_ins,
          "malloc_huge_pages": huge_pages.active()}


# ---------------------------------------------------------------------------------------------
# Project side.


def project_sampler(config, row: dict, sample_steps: int):
  """(jitted sample(state, cond, low_res, key), the random model's state, the respaced step count)."""
  import jax  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from piti_jax import sampling  # pylint: disable=import-outside-toplevel
  from piti_jax.models import presets  # pylint: disable=import-outside-toplevel

  upsampler = row["kind"] == "upsample"
  graphdef, state = nnx.split(presets.build_model(config, rngs=nnx.Rngs(0)))
  jax.clear_caches()  # the initialisers' programs (a sampling run reads a checkpoint instead)
  if upsampler:
    settings = sampling.SamplingConfig(respacing=UPSAMPLE_RESPACING, temperature=UPSAMPLE_TEMPERATURE)
  else:
    settings = sampling.SamplingConfig(respacing=str(sample_steps), guidance_scale=GUIDANCE_SCALE)
  diffusion = sampling.sampling_diffusion("linear" if upsampler else "cosine", 1000, settings)
  shape = (row["batch"], config.image_size, config.image_size, 3)

  def sample(state, cond, low_res, key):  # the project's one sampling path: encoder once, then the loop
    return sampling.sample_images(nnx.merge(graphdef, state), cond, low_res if upsampler else None, key, shape,
                                  diffusion, settings)

  return jax.jit(sample), state, diffusion.num_timesteps


def sampler_inputs(config, row: dict):
  """(cond (B, cond_size, cond_size, cond_channels), low_res (B, LOW_RES, LOW_RES, 3) or None, key) of a sampler
  row: random float32 conditions in [-1, 1], the low-resolution images for the upsampler only."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  batch = row["batch"]
  cond = rng.uniform(-1, 1, (batch, config.cond_size, config.cond_size, config.cond_channels)).astype(np.float32)
  low = rng.uniform(-1, 1, (batch, LOW_RES, LOW_RES, 3)).astype(np.float32) if config.super_res else None
  return cond, low, jax.random.key(0)


def _forward_flops(config, batch: int, *, encoder_only: bool) -> float:
  """XLA FLOPs of one forward pass (encoder + decoder, or the encoder alone) at `batch`.

  For the sampler rows, which do not load the training stack; the train rows count with
  `common.forward_flops`, as train_step.py does (the same count for the same model and batch).
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from piti_jax.models import layers, presets  # pylint: disable=import-outside-toplevel

  graphdef, state = nnx.split(presets.abstract_model(config))
  size = config.image_size
  x = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
  cond = jax.ShapeDtypeStruct((batch, config.cond_size, config.cond_size, config.cond_channels), jnp.float32)
  low = jax.ShapeDtypeStruct((batch, LOW_RES, LOW_RES, 3), jnp.float32) if config.super_res else None

  def forward(state, x, cond, low_res):
    model = nnx.merge(graphdef, state)
    if encoder_only:
      return model.encode(cond)
    return model(x, jnp.zeros((batch,)), cond, low_res=low_res)

  with layers.attention_in_one_block():
    return float(jax.jit(forward).lower(state, x, cond, low).cost_analysis()["flops"])


def run_project(row: dict, steps: int, sample_steps: int) -> dict:
  """Times the project on `row`; returns step seconds, memory and FLOP accounting."""
  import jax  # pylint: disable=import-outside-toplevel

  import timing  # pylint: disable=import-outside-toplevel
  from piti_jax import accounting  # pylint: disable=import-outside-toplevel

  if row["kind"] == "train":
    import common  # pylint: disable=import-outside-toplevel  (the training stack: not loaded by the sampler rows)
  baseline = rss.current_mib()
  batch = row["batch"]
  if row["kind"] == "train":
    job = common.load_job_config("bench", row["size"])
    job.train.global_batch_size = batch
    job.model.overrides.recompute_encoder = row["recompute_encoder"]
    bench = common.build_step(job, row["mode"], clear_caches=True)
    rss.reset_peak()
    times = [cost.wall_s for cost in bench.run(steps)]
    step_peak = rss.peak_mib()
    model_flops = 3.0 * common.forward_flops(bench.trainer, bench.batch)
    reference_model_flops = model_flops
    process_peak = rss.process_peak_mib()
    xla_flops = common.step_xla_flops(bench)  # after the peaks are read: it may compile once more
  else:
    config = model_config(row)
    sample, state, count = project_sampler(config, row, sample_steps)
    cond, low, key = sampler_inputs(config, row)
    compiled = sample.lower(state, cond, low, key).compile()
    jax.clear_caches()  # `compiled` is kept
    jax.block_until_ready(compiled(state, cond, low, key))
    rss.reset_peak()
    times = [t / count for t in timing.timed(lambda: compiled(state, cond, low, key), 2)]
    step_peak = rss.peak_mib()
    encoder_per_image = _forward_flops(config, 1, encoder_only=True)  # linear in the batch
    # XLA's cost analysis counts a loop's body once: the program counts its encoder passes (the
    # conditions, and the null condition once when guided) and one step of the loop.
    encoded_once = encoder_per_image * (batch if config.super_res else batch + 1)
    xla_flops = accounting.compiled_flops(compiled) - encoded_once + encoded_once / count
    doubled = batch if config.super_res else 2 * batch
    forward = _forward_flops(config, doubled, encoder_only=False)
    encoder = encoder_per_image * doubled
    model_flops = forward - encoder + encoder / count
    reference_model_flops = forward
    process_peak = rss.process_peak_mib()
  peak = accounting.measured_matmul_peak() if jax.devices()[0].platform == "cpu" else None
  return {"step_s": times, "peak_rss_mib": step_peak, "process_peak_rss_mib": process_peak,
          "import_rss_mib": baseline, "malloc_huge_pages": huge_pages.active(), "xla_flops": xla_flops,
          "model_flops": model_flops, "reference_model_flops": reference_model_flops, "matmul_peak": peak}


# ---------------------------------------------------------------------------------------------
# Parent: alternate the two sides per row and compare.


def _child(side: str, row_name: str, spec: dict, args: argparse.Namespace) -> dict:
  command = [sys.executable, os.path.abspath(__file__), "--child", side, "--spec", json.dumps(spec), "--rows", row_name,
             "--piti-repo", args.piti_repo, "--steps", str(args.steps), "--sample-steps", str(args.sample_steps),
             "--cpus", args.cpus] + (["--reference-huge-pages"] if args.reference_huge_pages else [])
  env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
  return child_process.run_json(command, f"{side} run of {row_name}", env)


def _side_summary(runs: list[dict], batch: int, prefix: str) -> dict:
  steps = [t for run in runs for t in run["step_s"]]
  median = statistics.median(steps)
  return {f"{prefix}_step_ms": round(median * 1e3, 2), f"{prefix}_images_per_s": round(batch / median, 3),
          f"{prefix}_spread": round((max(steps) - min(steps)) / median, 3),
          f"{prefix}_peak_rss_mib": round(statistics.median(r["peak_rss_mib"] for r in runs)),
          f"{prefix}_process_peak_rss_mib": round(statistics.median(r["process_peak_rss_mib"] for r in runs)),
          f"{prefix}_import_rss_mib": round(statistics.median(r["import_rss_mib"] for r in runs)),
          f"{prefix}_malloc_huge_pages": all(r["malloc_huge_pages"] for r in runs)}


def _project_commit() -> str | None:
  """The project checkout's short commit, with "-dirty" when it has uncommitted changes; None outside git."""
  try:
    return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=True,
                          cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return None


def compare(row_name: str, args: argparse.Namespace) -> dict:
  row = ROWS[row_name]
  spec = dict(row_spec(row), recompute_encoder=args.recompute_encoder)
  reference, project = [_child("reference", row_name, spec, args)], []
  for _ in range(args.repeats):
    project.append(_child("project", row_name, spec, args))
    reference.append(_child("reference", row_name, spec, args))
  batch = row["batch"]
  out = {"row": row_name, "kind": row["kind"], "preset": f"bench_{row['size']}", "batch": batch,
         "mode": row.get("mode"), "project_recompute_encoder": args.recompute_encoder,
         "steps": args.steps if row["kind"] == "train" else None,
         "sample_steps": args.sample_steps if row["kind"] == "sample" else None, "repeats": args.repeats,
         "commit": _project_commit(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
         **_side_summary(reference, batch, "reference"),
         **_side_summary(project, batch, "project")}
  out["speedup"] = round(out["reference_step_ms"] / out["project_step_ms"], 3)
  out["rss_ratio"] = round(out["project_peak_rss_mib"] / out["reference_peak_rss_mib"], 3)
  accounting_run = project[-1]
  seconds = out["project_step_ms"] / 1e3
  items = batch if row["kind"] == "train" else 1
  unit = "image" if row["kind"] == "train" else "step"
  peak = accounting_run["matmul_peak"]
  out[f"model_gflops_per_{unit}"] = round(accounting_run["model_flops"] / items / 1e9, 3)
  out["project_model_gflops_per_s"] = round(accounting_run["model_flops"] / seconds / 1e9, 2)
  out["project_xla_gflops_per_s"] = round(accounting_run["xla_flops"] / seconds / 1e9, 2)
  out["reference_model_gflops_per_s"] = round(accounting_run["reference_model_flops"] * 1e3
                                              / out["reference_step_ms"] / 1e9, 2)
  if peak:
    out["matmul_peak_gflops_per_s"] = round(peak / 1e9, 1)
    out["project_peak_fraction"] = round(accounting_run["xla_flops"] / seconds / peak, 3)
  out["stand_ins"] = reference[0]["stand_ins"]
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--piti-repo", required=True, help="checkout of the official PITI code")
  parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of: {', '.join(ROWS)}")
  parser.add_argument("--repeats", type=int, default=1, help="project runs per row (reference runs: one more)")
  parser.add_argument("--steps", type=int, default=5, help="timed train steps per run (after one warm-up step)")
  parser.add_argument("--sample-steps", type=int, default=25, help="respaced steps of the base sampler")
  parser.add_argument("--cpus", default="0,1", help="CPUs every run is pinned to")
  parser.add_argument("--reference-huge-pages", action="store_true",
                      help="run the reference with glibc's huge-page malloc too (the project always uses it)")
  parser.add_argument("--recompute-encoder", action="store_true",
                      help="train rows: the project's model.overrides.recompute_encoder (less memory, slower)")
  parser.add_argument("--child", choices=("reference", "project"), help=argparse.SUPPRESS)
  parser.add_argument("--spec", help=argparse.SUPPRESS)
  args = parser.parse_args()
  rows = [r.strip() for r in args.rows.split(",") if r.strip()]
  unknown = sorted(set(rows) - set(ROWS))
  if unknown:
    parser.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
  if not os.path.isdir(os.path.join(args.piti_repo, "pretrained_diffusion")):
    parser.error(f"--piti-repo {args.piti_repo} has no pretrained_diffusion/; give a checkout of PITI-Synthesis/PITI")
  if args.child:
    if args.child == "project" or args.reference_huge_pages:
      huge_pages.reexec_with_huge_pages()  # the project's entry points run with them
    os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    row = json.loads(args.spec)
    if args.child == "reference":
      result = run_reference(row, args.piti_repo, args.steps, args.sample_steps)
    else:
      result = run_project(row, args.steps, args.sample_steps)
    print(json.dumps(result), flush=True)
    return
  for row_name in rows:
    print(json.dumps(compare(row_name, args)), flush=True)


if __name__ == "__main__":
  main()
