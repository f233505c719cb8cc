"""Prepare a dataset once: `python -m piti_jax.data --name coco_stuff --manual_dir DIR --data_dir DIR`.

Any data-config field can be given as --<field>=<value> (see `piti_jax.data.config`). Prints one
JSON line per split with its example count and the inputs that were skipped as unreadable.
"""

import argparse
import json
import sys

from piti_jax.data.config import default_data_config
from piti_jax.errors import PitiError


def parse_args(argv: list[str]) -> argparse.Namespace:
  defaults = default_data_config()
  parser = argparse.ArgumentParser(prog="python -m piti_jax.data", description=__doc__.splitlines()[0])
  for field, value in defaults.items():
    kind = (lambda text: text.lower() in ("1", "true", "yes")) if isinstance(value, bool) else type(value)
    parser.add_argument(f"--{field}", type=kind, default=value)
  return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  config = default_data_config()
  config.update(vars(args))
  config.prepare = True
  try:
    from piti_jax.data.datasets import prepare_dataset

    builder = prepare_dataset(config)
  except PitiError as error:
    print(f"piti-jax: error: {error}", file=sys.stderr)
    return 2
  skipped = (builder.info.metadata or {}).get("skipped", {})
  for split, info in builder.info.splits.items():
    print(json.dumps({"dataset": config.name, "split": split, "examples": info.num_examples,
                      "skipped": skipped.get(split, []), "data_dir": str(builder.data_dir)}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
