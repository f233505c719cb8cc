"""`python -m piti_jax.models PRESET [field=value ...]`: parameter table and exact total of a preset.

Nothing is allocated: shapes come from nnx.eval_shape, so even glide_full_base64 (3.5B) prints
in seconds. Overrides use ModelConfig field names, e.g. `task=sketch` or `dropout=0.0`.
"""

import ast
import sys

from flax import nnx

from piti_jax.errors import PitiError
from piti_jax.models.presets import PRESETS, abstract_model, get_config, param_count


def _parse_override(text: str) -> tuple[str, object]:
  if "=" not in text:
    raise PitiError(f"override {text!r} must look like field=value, e.g. task=sketch.")
  name, raw = text.split("=", 1)
  try:
    value = ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    value = raw
  return name, value


def parameter_table(preset: str, **overrides: object) -> list[tuple[str, int]]:
  """[(submodule path, parameter count), ...] for the children of `encoder` and `decoder`, then the total."""
  model = abstract_model(get_config(preset, **overrides))
  rows = []
  for top in ("encoder", "decoder"):
    state = nnx.to_pure_dict(nnx.state(getattr(model, top), nnx.Param))
    for child, subtree in state.items():
      rows.append((f"{top}.{child}", param_count(subtree)))
    rows.append((f"{top} (total)", param_count(state)))
  rows.append(("total", param_count(nnx.state(model, nnx.Param))))
  return rows


def main(argv: list[str]) -> int:
  if len(argv) < 1 or argv[0] in ("-h", "--help"):
    print(f"usage: python -m piti_jax.models PRESET [field=value ...]\npresets: {', '.join(PRESETS)}")
    return 0 if argv else 2
  try:
    rows = parameter_table(argv[0], **dict(_parse_override(a) for a in argv[1:]))
  except PitiError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  width = max(len(name) for name, _ in rows)
  print(f"{'module':<{width}}  {'parameters':>15}")
  for name, count in rows:
    print(f"{name:<{width}}  {count:>15,}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
