"""`python -m piti_jax.convert --src FILE.pt --model PRESET [--task mask|sketch|depth] --out DIR`.

Converts a public GLIDE (`base.pt`, `upsample.pt`) or PITI (`base_mask.pt`, `base_edge.pt`,
`upsample_mask.pt`, `upsample_edge.pt`) PyTorch checkpoint into a piti_jax model checkpoint
that `piti_jax.models.from_checkpoint(DIR)` and the train loop's `config.init` read.
Needs PyTorch (`pip install 'piti-jax[convert]'`); runs on the CPU.

Examples:
  python -m piti_jax.convert --src base.pt --model glide_base64 --out ckpt/glide_base64
  python -m piti_jax.convert --src base.pt --model piti_base64 --task sketch --out ckpt/piti_init
  python -m piti_jax.convert --src base_edge.pt --model piti_base64 --out ckpt/piti_sketch
A GLIDE checkpoint given to a PITI preset initialises the decoder and transformer_proj and
leaves the task encoder freshly initialised (listed in the output). Without --task, a PITI
checkpoint's task is read from its first conv (1 channel: sketch, 3: mask, 6: depth).
"""

import argparse
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from piti_jax.convert.pipeline import convert_to_checkpoint  # noqa: E402  (after the platform choice)
from piti_jax import storage  # noqa: E402
from piti_jax.errors import PitiError  # noqa: E402
from piti_jax.models.task_encoder import TASK_CHANNELS  # noqa: E402
from piti_jax.pretrained import load_torch_state_dict  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m piti_jax.convert",
      description="Convert a GLIDE or PITI PyTorch checkpoint into a piti_jax model checkpoint.",
      epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--src", required=True, help="PyTorch state-dict file (.pt).")
  parser.add_argument("--model", required=True, help="target preset, e.g. glide_base64, piti_base64, "
                      "piti_upsample256, glide_upsample256.")
  parser.add_argument("--task", choices=sorted(TASK_CHANNELS), default=None,
                      help="PITI condition type (default: read from a PITI checkpoint, else mask).")
  parser.add_argument("--out", required=True, help="checkpoint directory to create.")
  parser.add_argument("--seed", type=int, default=0, help="seed of freshly initialised parameters.")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --out directory.")
  return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  try:
    if storage.path(args.out).exists() and not args.overwrite:
      raise PitiError(f"--out {args.out} already exists; choose a new directory or pass --overwrite.")
    state_dict = load_torch_state_dict(args.src)
    report = convert_to_checkpoint(state_dict, args.model, args.out, task=args.task, seed=args.seed,
                                   overwrite=args.overwrite)
  except PitiError as error:
    print(f"piti-jax convert: error: {error}", file=sys.stderr)
    return 2
  print(report.summary())
  print(f"wrote {storage.path(args.out)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
