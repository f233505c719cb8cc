"""Shared tiny configs for the train-loop tests (shapes dataset, 32x32 models)."""

import glob
import os
import re
import subprocess
import sys
import time
import types

from piti_jax.train.config import load_config_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, job: str = ""):
  """configs/<name>.py:<job>, loaded from its file as main's --config flag does."""
  return load_config_file(os.path.join(REPO, "configs", f"{name}.py"), job)


def shapes_config(job: str, data_dir: str, **train):
  """configs/shapes.py:<job> shrunk for tests: 64 train / 16 val examples, batch 8, no samples."""
  config = load_config("shapes", job)
  config.data.data_dir = data_dir
  config.data.train_size = 64
  config.data.val_size = 16
  config.train.global_batch_size = 8
  config.train.log_every = 1
  config.train.eval_every = 0
  config.train.sample_every = 0
  config.train.keep_checkpoints = 5
  config.train.export = False
  for name, value in train.items():
    config.train[name] = value
  return config


def subprocess_env(devices: int, compile_cache: str | None) -> dict[str, str]:
  """Environment of a JAX subprocess with `devices` fake CPU devices and a persistent compile cache.

  With the session's shared cache (`compile_cache`), subprocesses that compile the same step (the shapes
  pretrain job on 8 devices) compile it once per test session (measured here: a 2-step run took 84 s with
  an empty cache, 25 s with a filled one). None: `python -m piti_jax.main`'s own default,
  <workdir>/compilation_cache. Either way every program is written, however short its compile.
  """
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  if compile_cache is not None:
    env["JAX_COMPILATION_CACHE_DIR"] = compile_cache
  return env


def run_on_tmpfs(mount: str, options: str, command: list[str], **run_kwargs) -> subprocess.CompletedProcess:
  """Runs `command` in new user and mount namespaces in which a tmpfs (mount options `options`, e.g.
  "size=2m" or "ro,size=1m") is mounted at `mount`: a small or read-only disk that needs no root
  (unprivileged user namespaces; a root user gets the same). The mount ends with the command."""
  os.makedirs(mount, exist_ok=True)
  script = 'mount -t tmpfs -o "$1" tmpfs "$2" && shift 2 && exec "$@"'
  return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", options,
                         str(mount), *command], check=False, **run_kwargs)


METRICS_LINE = re.compile(r"\[(\d+)\] .*loss=")


def read_until_step(process: subprocess.Popen, step: int, deadline: float) -> None:
  """Reads a training subprocess's stderr until it logs the metrics of `step` (fails if it ends or is late)."""
  seen = []
  for line in process.stderr:
    seen.append(line)
    match = METRICS_LINE.search(line)
    if match and int(match.group(1)) >= step:
      return
    assert time.time() < deadline, f"the run did not reach step {step} in time"
  raise AssertionError(f"the run ended before step {step}:\n" + "".join(seen[-30:]))


def read_events(path: str):
  """TensorBoard's EventAccumulator over the event file `path`, loaded (every image kept).

  TensorBoard reads files through `tensorboard.compat.tf`, which is TensorFlow when it is installed;
  the `notf` marker module makes it use its own pure-Python file layer, as a TensorBoard installed
  without TensorFlow does, so the test process does not load TensorFlow (about 6 s here).
  """
  sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=import-outside-toplevel

  accumulator = event_accumulator.EventAccumulator(path, size_guidance={event_accumulator.IMAGES: 0})
  accumulator.Reload()
  return accumulator


def event_files(directory: str) -> list[str]:
  """The TensorBoard event files directly in `directory`."""
  return sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*")))
