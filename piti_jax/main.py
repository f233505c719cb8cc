"""Entry point: `python -m piti_jax.main --config configs/<job>.py[:args] --workdir DIR`.

Reads an ml_collections config (dotted overrides such as `--config.train.batch_size=8`
work), initialises `jax.distributed` when several processes take part, and hands the
config to the runner registered for `config.mode`.
"""

import importlib
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from piti_jax.errors import PitiError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Job config file (configs/<job>.py[:args]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process runs).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-process runs).")

# mode -> "module:function"; a runner has the signature run(config, workdir) -> None.
RUNNERS = {
    "diffusion_check": "piti_jax.diffusion.selfcheck:run",
    "pretrain": "piti_jax.train.loop:run",
    "finetune": "piti_jax.train.loop:run",
    "sample": "piti_jax.inference:run",
    "evaluate": "piti_jax.evaluation.runner:run",
    "demo": "piti_jax.demo:run",
}


def _several_processes() -> bool:
  """True on a multi-host TPU slice or a SLURM job with more than one task."""
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    return True
  return "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")


def initialize_distributed() -> None:
  """Calls `jax.distributed.initialize` when several processes take part."""
  import jax

  if _COORDINATOR.value is not None:
    if _NUM_PROCESSES.value is None or _PROCESS_ID.value is None:
      raise PitiError("--coordinator_address needs --num_processes and --process_id as well.")
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  elif _several_processes():
    jax.distributed.initialize()


def get_runner(mode: str):
  """Returns the runner function registered for `mode`."""
  if mode not in RUNNERS:
    raise PitiError(f"unknown config.mode {mode!r}; the modes that exist are: {', '.join(sorted(RUNNERS))}.")
  module_name, function_name = RUNNERS[mode].split(":")
  return getattr(importlib.import_module(module_name), function_name)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = _CONFIG.value
  if config is None:
    raise PitiError("no --config given; pass --config=configs/<job>.py.")
  if _WORKDIR.value is None:
    raise PitiError("no --workdir given; pass --workdir=DIR for checkpoints, logs and samples.")
  runner = get_runner(config.mode)
  initialize_distributed()
  import jax

  logging.info("JAX process %d/%d, %d local / %d global devices", jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  runner(config, _WORKDIR.value)


def console_main() -> None:
  """The `piti-jax` console script: a project error (also one raised while the config file is
  read) is reported in one line, with exit status 2."""
  try:
    app.run(main)
  except PitiError as error:
    print(f"piti-jax: error: {error}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  console_main()
