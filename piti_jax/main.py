"""Entry point: `python -m piti_jax.main --config configs/<job>.py[:args] --workdir DIR`.

Reads an ml_collections config (dotted overrides such as `--config.train.batch_size=8`
work), initialises `jax.distributed` when several processes take part, and hands the
config to the runner registered for `config.mode`, with compiled programs kept in
<workdir>/compilation_cache for the next run in the same workdir (piti_jax/compilation_cache.py).
"""

import importlib
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from piti_jax import huge_pages, storage
from piti_jax.errors import EXIT_ERROR, EXIT_PREEMPTED, PitiError, Preempted

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


def _config_path(argv: list[str]) -> str | None:
  """The file part of the --config argument (before an optional `:job`), if one is given."""
  for index, arg in enumerate(argv):
    if arg.startswith(("--config=", "-config=")):
      return arg.split("=", 1)[1].split(":", 1)[0]
    if arg in ("--config", "-config") and index + 1 < len(argv):
      return argv[index + 1].split(":", 1)[0]
  return None


def _one_line(error: BaseException) -> str:
  """An exception's message on one line (ml_collections puts its "Did you mean" hint on a second line)."""
  text = str(error.args[0]) if error.args else str(error)
  if isinstance(error, AttributeError) and isinstance(error.__context__, KeyError):
    text = str(error.__context__.args[0])
  return " ".join(text.split())


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing with every failure (also while the config file is read) as a PitiError."""
  path = _config_path(argv)
  if path is not None and not os.path.isfile(path):
    raise PitiError(f"config file {path} does not exist; pass the path of a configs/<job>.py file.")
  try:
    remaining = flags.FLAGS(argv)
    _ = _CONFIG.value  # a config file that fails to load reports here
  except PitiError:
    raise
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as error:
    raise PitiError(f"bad command line: {_one_line(error)}; check the flag names against the config file "
                    "(python -m piti_jax.main --helpfull lists the flags).") from error
  return remaining


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = _CONFIG.value
  if config is None:
    raise PitiError("no --config given; pass --config=configs/<job>.py.")
  if _WORKDIR.value is None:
    raise PitiError("no --workdir given; pass --workdir=DIR for checkpoints, logs and samples.")
  storage.prepare_workdir(_WORKDIR.value, create=False)  # a file, or a path under one, is refused at once
  runner = get_runner(config.mode)
  initialize_distributed()
  import jax

  from piti_jax import compilation_cache

  compilation_cache.enable(_WORKDIR.value)

  logging.info("JAX process %d/%d, %d local / %d global devices", jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  runner(config, _WORKDIR.value)


def console_main() -> None:
  """The `piti-jax` console script (and `python -m piti_jax.main`).

  It first restarts the process with huge pages for the host heap when they are available
  (piti_jax/huge_pages.py: XLA:CPU's per-step temporaries then cost far fewer page faults).

  Exit status: 0 when the job finished; 2 (EXIT_ERROR) for a project error, also one met while the
  command line or the config file is read, reported in one line; 75 (EXIT_PREEMPTED) when a
  preemption notice stopped the run after it saved its state (run the same command to resume).
  """
  huge_pages.reexec_with_huge_pages()
  try:
    app.run(main, flags_parser=parse_flags)
  except PitiError as error:
    print(f"piti-jax: error: {error}", file=sys.stderr)
    sys.exit(EXIT_ERROR)
  except Preempted as stop:
    print(f"piti-jax: preempted: {stop}", file=sys.stderr)
    sys.exit(EXIT_PREEMPTED)


if __name__ == "__main__":
  console_main()
