"""`python -m piti_jax.convert.parity --piti-repo DIR --model PRESET [--task mask|sketch|depth]`.

Checks that a converted checkpoint computes what the PyTorch reference computes:
  1. builds the reference model from the user's checkout DIR, imported at run time (nothing of it
     is part of this project): PITI-Synthesis/PITI (`pretrained_diffusion/text2im_model.py`) for
     the piti_* and bench_* presets, openai/glide-text2im (`glide_text2im/text2im_model.py`) for
     the glide_* presets;
  2. sets every parameter to random non-zero values (`random_state_dict`; the layers the
     reference zero-initialises included);
  3. converts that state dict with `piti_jax.convert` (the code behind `python -m piti_jax.convert`,
     into a temporary checkpoint) and loads it with `piti_jax.models.from_checkpoint`;
  4. runs both in float32 on the CPU on the same random inputs (noisy images, timesteps, condition
     image or tokens, low-res image for upsamplers), dropout off, and prints JSON lines: one with
     the setup, then one per compared quantity with its max relative error
     max|ours - reference| / max|reference|: `output` (the 6-channel model output), `tokens`
     (the encoder states the decoder attends to) and `pooled` (the vector that goes through
     transformer_proj).
Exit status 1 when an error exceeds --tolerance (default 1e-4, DESIGN.md's bound), 2 on bad input.

The reference is built with its own classes and the preset's sizes. Where the reference hard-codes
a size (PITI's `Encoder` always has 8 transformer layers, CNN widths 32..512, a 257-row positional
table, and `transformer_proj` takes 512 inputs), presets of other sizes (bench_*, tiny_*) get those
layers rebuilt with the reference's own layer types at the preset's sizes; the setup line lists them
under "adapted". Stand-ins for imports the model code never uses: PITI's text2im_model imports
timm's `PatchEmbed` and never calls it (a placeholder module is used when timm is not installed),
and GLIDE's model reads only `n_vocab` from its tokenizer (an object holding n_vocab replaces the
BPE tokenizer). Needs PyTorch (the `convert` extra).

Example (numbers in the README):
  python -m piti_jax.convert.parity --piti-repo ~/src/PITI --model piti_base64 --task sketch
  python -m piti_jax.convert.parity --piti-repo ~/src/glide-text2im --model glide_upsample256
"""

import argparse
import contextlib
import importlib
import importlib.util
import json
import math
import os
import sys
import tempfile
import types
from collections.abc import Mapping
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402  (after the platform choice)

from piti_jax.errors import PitiError  # noqa: E402
from piti_jax.models.piti import ModelConfig  # noqa: E402

REFERENCE_MODULES = {"piti": "pretrained_diffusion.text2im_model", "glide": "glide_text2im.text2im_model"}
REFERENCE_NAMES = {"piti": "PITI-Synthesis/PITI", "glide": "openai/glide-text2im"}
EMBEDDING_TABLES = ("token_embedding.weight", "positional_embedding", "padding_embedding", "cls_token")
# What the reference's PITI encoder hard-codes.
REFERENCE_ENCODER_LAYERS = 8
REFERENCE_CNN_HIDDEN = (32, 64, 128, 256, 512)
REFERENCE_TOKENS = 256
REFERENCE_PROJ_INPUT = 512
DEFAULT_TOLERANCE = 1e-4
QUANTITIES = ("output", "tokens", "pooled")

Arrays = dict[str, np.ndarray]


def random_state_dict(shapes: Mapping[str, tuple[int, ...]], seed: int) -> Arrays:
  """Random non-zero float32 values for every key of a PyTorch state dict, in key order.

  Kernels and weight matrices (2+ dims) ~ U(+-1/sqrt(fan_in)) with fan_in = prod(shape[1:]) (PyTorch's
  default bound, also for the layers the reference zero-initialises); embedding tables ~ U(-1, 1);
  1-d `*weight` (norm gains) ~ U(0.5, 1.5); other vectors (biases) ~ U(-0.5, 0.5).
  """
  rng = np.random.default_rng(seed)
  values = {}
  for key, shape in shapes.items():
    if key.endswith(EMBEDDING_TABLES):
      low, high = -1.0, 1.0
    elif len(shape) >= 2:
      bound = 1.0 / math.sqrt(math.prod(shape[1:]))
      low, high = -bound, bound
    elif key.endswith("weight"):
      low, high = 0.5, 1.5
    else:
      low, high = -0.5, 0.5
    value = rng.uniform(low, high, shape).astype(np.float32)
    values[key] = np.where(value == 0.0, np.float32(high), value)
  return values


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
  """max |ours - reference| / max |reference| (float64)."""
  ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
  if ours.shape != reference.shape:
    raise PitiError(f"shapes differ: ours {ours.shape}, reference {reference.shape}.")
  return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))


def reference_layout(repo: str) -> str:
  """"piti" or "glide": which reference checkout `repo` is."""
  for layout, module in REFERENCE_MODULES.items():
    if os.path.isfile(os.path.join(repo, *module.split(".")) + ".py"):
      return layout
  raise PitiError(f"{repo} is neither a PITI-Synthesis/PITI checkout (pretrained_diffusion/text2im_model.py) nor an "
                  "openai/glide-text2im checkout (glide_text2im/text2im_model.py); pass the repository's root.")


@contextlib.contextmanager
def _timm_stand_in():
  """A placeholder `timm.models.vision_transformer.PatchEmbed` while timm is not installed."""
  if importlib.util.find_spec("timm") is not None:
    yield
    return

  class PatchEmbed:  # pylint: disable=too-few-public-methods
    def __init__(self, *args, **kwargs):
      raise RuntimeError("stand-in for timm's PatchEmbed, which the reference model never builds")

  names = ("timm", "timm.models", "timm.models.vision_transformer")
  modules = {name: types.ModuleType(name) for name in names}
  modules["timm.models.vision_transformer"].PatchEmbed = PatchEmbed
  sys.modules.update(modules)
  try:
    yield
  finally:
    for name in names:
      sys.modules.pop(name, None)


def import_reference(repo: str, layout: str) -> types.ModuleType:
  """The reference's model module, imported from the checkout `repo`."""
  repo = os.path.abspath(repo)
  sys.path.insert(0, repo)
  try:
    with _timm_stand_in():
      return importlib.import_module(REFERENCE_MODULES[layout])
  except ImportError as error:
    raise PitiError(f"cannot import the reference model from {repo} ({error}); it needs PyTorch "
                    "(`pip install 'piti-jax[convert]'`).") from error
  finally:
    sys.path.remove(repo)


def _unet_arguments(config: ModelConfig) -> dict[str, Any]:
  """Keyword arguments of the reference UNet classes for `config` (as the released scripts set them)."""
  return dict(in_channels=3, model_channels=config.model_channels, out_channels=config.out_channels,
              num_res_blocks=config.num_res_blocks, attention_resolutions=tuple(config.attention_ds),
              dropout=config.dropout, channel_mult=tuple(config.channel_mult), use_fp16=False, num_heads=1,
              num_heads_upsample=-1, num_head_channels=config.num_head_channels, use_scale_shift_norm=True,
              resblock_updown=True)


def _fit_piti_sizes(model, module: types.ModuleType, config: ModelConfig) -> list[str]:
  """Rebuilds the layers whose sizes PITI's code hard-codes at the preset's sizes; returns their names."""
  import torch  # pylint: disable=import-outside-toplevel

  encoder, width, adapted = model.encoder, config.xf_width, []
  if config.xf_layers != REFERENCE_ENCODER_LAYERS:
    encoder.transformer = module.Transformer(width, config.xf_layers, config.xf_heads)
    adapted.append("encoder.transformer")
  widths = (config.cond_channels, *config.cnn_hidden)
  if tuple(config.cnn_hidden) != REFERENCE_CNN_HIDDEN:
    encoder.cnn.conv1 = module.conv7x7(widths[0], widths[1])
    for index in range(2, 6):
      setattr(encoder.cnn, f"conv{index}", module.conv3x3(widths[index - 1], widths[index], 2))
    for index in range(1, 6):
      setattr(encoder.cnn, f"norm{index}", torch.nn.InstanceNorm2d(widths[index], affine=True))
    adapted.append("encoder.cnn.conv1-5")
  if tuple(config.cnn_hidden) != REFERENCE_CNN_HIDDEN or width != REFERENCE_CNN_HIDDEN[-1]:
    encoder.cnn.conv6 = module.conv3x3(widths[5], width, 1)
    adapted.append("encoder.cnn.conv6")
  tokens = (config.cond_size // 16) ** 2
  if tokens != REFERENCE_TOKENS:
    encoder.positional_embedding = torch.nn.Parameter(torch.empty(1, tokens + 1, width))
    adapted.append("encoder.positional_embedding")
  if width != REFERENCE_PROJ_INPUT:
    model.decoder.transformer_proj = torch.nn.Linear(width, 4 * config.model_channels)
    adapted.append("decoder.transformer_proj")
  return adapted


def build_reference(module: types.ModuleType, layout: str, config: ModelConfig) -> tuple[Any, list[str]]:
  """(reference torch model for `config`, names of the layers rebuilt at the preset's sizes)."""
  if layout == "piti":
    model_class = module.SuperResText2ImModel if config.super_res else module.Text2ImModel
    model = model_class(text_ctx=config.text_ctx, xf_width=config.xf_width, xf_layers=config.xf_layers,
                        xf_heads=config.xf_heads, xf_final_ln=True, n_class=config.cond_channels,
                        image_size=config.image_size, **_unet_arguments(config))
    return model, _fit_piti_sizes(model, module, config)
  tokenizer = types.SimpleNamespace(n_vocab=config.n_vocab)  # the model reads only n_vocab
  model_class = module.SuperResText2ImUNet if config.super_res else module.Text2ImUNet
  model = model_class(text_ctx=config.text_ctx, xf_width=config.xf_width, xf_layers=config.xf_layers,
                      xf_heads=config.xf_heads, xf_final_ln=True, tokenizer=tokenizer, xf_padding=True,
                      cache_text_emb=False, **_unet_arguments(config))
  return model, []


def random_inputs(config: ModelConfig, batch: int, seed: int) -> Arrays:
  """NHWC float32 inputs: x_t, t, and cond (PITI) or tokens + mask (GLIDE), plus low_res for upsamplers."""
  rng = np.random.default_rng(seed)
  size = config.image_size
  inputs = {"x_t": rng.standard_normal((batch, size, size, 3)).astype(np.float32),
            "t": rng.uniform(0.0, 999.0, (batch,)).astype(np.float32)}
  if config.family == "piti":
    side = config.cond_size
    inputs["cond"] = rng.uniform(-1.0, 1.0, (batch, side, side, config.cond_channels)).astype(np.float32)
  else:
    inputs["tokens"] = rng.integers(0, config.n_vocab, (batch, config.text_ctx)).astype(np.int32)
    lengths = rng.integers(1, config.text_ctx + 1, (batch,))
    inputs["mask"] = np.arange(config.text_ctx)[None] < lengths[:, None]
  if config.super_res:
    inputs["low_res"] = rng.uniform(-1.0, 1.0, (batch, size // 4, size // 4, 3)).astype(np.float32)
  return inputs


def reference_outputs(model, config: ModelConfig, inputs: Arrays) -> Arrays:
  """{"output" (B, H, W, 6), "tokens" (B, N, W), "pooled" (B, W)} of the torch model, NHWC NumPy."""
  import torch  # pylint: disable=import-outside-toplevel

  nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
  kwargs = {"low_res": nchw(inputs["low_res"])} if config.super_res else {}
  x_t, t = nchw(inputs["x_t"]), torch.from_numpy(inputs["t"])
  with torch.no_grad():
    if config.family == "piti":
      cond = nchw(inputs["cond"])
      encoded = model.encoder(cond)
      pooled = encoded["xf_proj"]
      output = model(x_t, t, ref=cond, **kwargs)
    else:
      tokens, mask = torch.from_numpy(inputs["tokens"]), torch.from_numpy(inputs["mask"])
      encoded = model.get_text_emb(tokens, mask)
      pooled = encoded["xf_out"][:, :, -1]  # the last token's state, before transformer_proj
      output = model(x_t, t, tokens=tokens, mask=mask, **kwargs)
  return {"output": output.numpy().transpose(0, 2, 3, 1), "tokens": encoded["xf_out"].numpy().transpose(0, 2, 1),
          "pooled": pooled.numpy()}


def converted_outputs(checkpoint_dir: str, config: ModelConfig, inputs: Arrays) -> Arrays:
  """The same quantities from the converted checkpoint, jitted, float32."""
  import jax  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from piti_jax.models import from_checkpoint  # pylint: disable=import-outside-toplevel

  graphdef, state = nnx.split(from_checkpoint(checkpoint_dir))
  if config.family == "piti":
    cond = inputs["cond"]
  else:
    cond = {"tokens": inputs["tokens"], "mask": inputs["mask"]}

  @jax.jit
  def run(state, x_t, t, cond, low_res):
    model = nnx.merge(graphdef, state)
    encoded = model.encode(cond)
    return model(x_t, t, encoded=encoded, low_res=low_res), encoded

  output, (tokens, pooled) = run(state, inputs["x_t"], inputs["t"], cond, inputs.get("low_res"))
  return {"output": np.asarray(output), "tokens": np.asarray(tokens), "pooled": np.asarray(pooled)}


def run_parity(repo: str, preset: str, *, task: str | None = None, seed: int = 0,
               batch: int = 2) -> tuple[dict[str, Any], dict[str, float]]:
  """(setup record, {quantity: max relative error}) for one preset (see the module docstring)."""
  from piti_jax.convert.pipeline import convert_to_checkpoint  # pylint: disable=import-outside-toplevel
  from piti_jax.models.presets import get_config  # pylint: disable=import-outside-toplevel

  config = get_config(preset, **({"task": task} if task else {}))
  if task and config.family != "piti":
    raise PitiError(f"--task applies to PITI presets only; {preset!r} is a GLIDE text-to-image model.")
  layout = reference_layout(repo)
  if layout != config.family:
    raise PitiError(f"preset {preset!r} is a {config.family} model; pass a {REFERENCE_NAMES[config.family]} checkout "
                    "as --piti-repo.")
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise PitiError("the parity check runs the PyTorch reference; install PyTorch with "
                    "`pip install 'piti-jax[convert]'`.") from error
  module = import_reference(repo, layout)
  torch.manual_seed(seed)
  model, adapted = build_reference(module, layout, config)
  shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
  state_dict = random_state_dict(shapes, seed)
  model.load_state_dict({key: torch.from_numpy(value) for key, value in state_dict.items()}, strict=True)
  model.eval()
  inputs = random_inputs(config, batch, seed + 1)
  expected = reference_outputs(model, config, inputs)
  del model
  with tempfile.TemporaryDirectory() as scratch:
    directory = os.path.join(scratch, "converted")
    convert_to_checkpoint(state_dict, preset, directory, task=task)
    del state_dict
    ours = converted_outputs(directory, config, inputs)
  setup = {"model": preset, "task": config.task if config.family == "piti" else None,
           "reference": REFERENCE_NAMES[layout], "parameters": int(sum(math.prod(s) for s in shapes.values())),
           "batch": batch, "seed": seed, "adapted": adapted}
  errors = {name: relative_error(ours[name], expected[name]) for name in QUANTITIES}
  setup["max_abs_reference"] = {name: float(f"{np.max(np.abs(expected[name])):.3g}") for name in QUANTITIES}
  return setup, errors


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m piti_jax.convert.parity",
      description="Compare a converted model with the PyTorch reference on random weights and inputs.",
      epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--piti-repo", required=True, help="checkout of PITI-Synthesis/PITI (piti_*/bench_* "
                      "presets) or openai/glide-text2im (glide_* presets).")
  parser.add_argument("--model", required=True, help="preset, e.g. piti_base64, piti_upsample256, glide_base64.")
  parser.add_argument("--task", choices=("mask", "sketch", "depth"), default=None, help="PITI condition type "
                      "(default: the preset's, mask).")
  parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs.")
  parser.add_argument("--batch", type=int, default=2, help="examples per forward pass.")
  parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                      help="largest acceptable max relative error (exit status 1 above it).")
  return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  try:
    setup, errors = run_parity(args.piti_repo, args.model, task=args.task, seed=args.seed, batch=args.batch)
  except PitiError as error:
    print(f"piti-jax parity: error: {error}", file=sys.stderr)
    return 2
  print(json.dumps(setup))
  for name, error in errors.items():
    print(json.dumps({"model": setup["model"], "task": setup["task"], "quantity": name,
                      "max_rel_err": float(f"{error:.3g}")}))
  return 0 if max(errors.values()) <= args.tolerance else 1


if __name__ == "__main__":
  sys.exit(main())
