"""Do two versions of the train step compute the same values? Save a few steps' losses and parameters, compare.

  python benchmarks/step_values.py --config=configs/shapes.py:stage2 --config.data.image_size=16 \
    --config.model.overrides.image_size=16 --config.train.global_batch_size=16 --out=/tmp/after.npz
  (the same at the other commit, --out=/tmp/before.npz)
  python benchmarks/step_values.py --compare=/tmp/before.npz,/tmp/after.npz

Each run starts from the config's initial state (its seed) and one random batch of the data
config's shapes (seed 0), runs --steps train steps on that batch, and writes the losses and the
trained parameters (float32, by parameter path) to --out. `--compare` prints one JSON line: whether
the losses are bitwise equal, how many parameter arrays are, and the largest difference of the
others relative to the array's largest magnitude.
"""

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

import common
from piti_jax.param_paths import flatten

LOSSES = "losses"  # the key of the loss array in the .npz; every other key is a parameter path

_CONFIG = config_flags.DEFINE_config_file("config", "configs/shapes.py:stage2", "Job config whose step runs.")
_STEPS = flags.DEFINE_integer("steps", 3, "Train steps to run.")
_OUT = flags.DEFINE_string("out", None, ".npz file to write the losses and parameters to.")
_COMPARE = flags.DEFINE_list("compare", [], "Two .npz files written by --out: compare them and exit.")


def run_steps(config, steps: int) -> dict[str, np.ndarray]:
  """{"losses": (steps,) float32, parameter path: array} after `steps` steps on one batch."""
  bench = common.build_step(config, warm_up=False)
  losses = []
  for _ in range(steps):
    bench.run(1)
    losses.append(float(bench.last_metrics["loss"]))
  params = {path: np.asarray(value) for path, value in flatten(jax.device_get(bench.state.params)).items()}
  return {LOSSES: np.asarray(losses, np.float32), **params}


def compare(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> dict:
  """Bitwise equality of the losses and parameters, and the worst relative difference."""
  differences = common.array_differences(before, after, LOSSES)
  worst, worst_name = max(((relative, name) for name, (relative, _, _) in differences.items()),
                          default=(0.0, None))
  return {"losses_before": before[LOSSES].tolist(), "losses_after": after[LOSSES].tolist(),
          "losses_bitwise_equal": bool(np.array_equal(before[LOSSES], after[LOSSES])),
          "parameter_arrays": len(differences),
          "bitwise_equal_arrays": sum(equal for _, _, equal in differences.values()),
          "max_relative_difference": worst, "max_difference_at": worst_name if worst > 0 else None}


def main(argv) -> None:
  del argv
  common.save_or_compare(_COMPARE.value, _OUT.value, compare, lambda: run_steps(_CONFIG.value, _STEPS.value))


if __name__ == "__main__":
  app.run(main)
