"""Compiled programs kept across runs: JAX's persistent compilation cache, in the workdir by default.

`python -m piti_jax.main` calls `enable(workdir)` before its job starts. A job run again in the
same workdir (resumed after a preemption or a crash, continued, or re-run) then loads its train
step, samplers and evaluation programs from `<workdir>/compilation_cache` instead of compiling
them again, which also keeps the compiler's memory out of the process (on a 2-core CPU, a 3-step
resume of the shapes prior: 11.2-11.4 s and 1111-1115 MiB at its peak, against 22.6-25.5 s and
1614-1682 MiB with every program compiled; benchmarks/resume.py, docs/performance.md section 15).

JAX's own settings come first: `JAX_COMPILATION_CACHE_DIR` puts the cache elsewhere (e.g. one
directory for several jobs), `JAX_ENABLE_COMPILATION_CACHE=false` turns it off, and only programs
that took at least `JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS` (default 1 s) to compile are
written. An entry's key covers the program, the compile options and XLA flags, the devices and
the jax / jaxlib versions, so a changed config, mesh or install compiles afresh. On a GPU it also
holds the cache directory's path (JAX keeps its autotuning results under it), so a moved workdir
compiles afresh there; on CPUs and TPUs the project turns that GPU cache off and keys do not
depend on the path. Only process 0 writes entries (JAX's rule) and every process reads them, so
on a pod a workdir on storage all hosts share (gs://) gives every host the programs. A failed read
or write is a warning, and the program is then compiled.
"""

import jax
from absl import logging

from piti_jax import storage

CACHE_DIRECTORY = "compilation_cache"  # under the workdir
LOADED_MESSAGE = "compilation cache: loaded a compiled program instead of compiling it"  # logged per program
_TIME_SAVED_EVENT = "/jax/compilation_cache/compile_time_saved_sec"


def _log_cache_hit(event: str, seconds: float, **unused_kwargs) -> None:
  """A JAX monitoring listener: one log line per program loaded from the cache."""
  if event == _TIME_SAVED_EVENT:
    logging.info("%s (%.0f s saved)", LOADED_MESSAGE, max(seconds, 0.0))


def enable(workdir: storage.PathLike) -> None:
  """Turns the cache on in `<workdir>/compilation_cache` unless JAX's settings place it or turn it off.

  Must run before the job compiles anything (JAX decides once per process whether it caches).
  """
  if not jax.config.jax_enable_compilation_cache:
    logging.info("compilation cache: off (JAX_ENABLE_COMPILATION_CACHE)")
    return
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", str(storage.path(workdir) / CACHE_DIRECTORY))
  if jax.default_backend() != "gpu":  # JAX's GPU autotuning cache lives under the cache dir and puts its path
    jax.config.update("jax_persistent_cache_enable_xla_caches", "none")  # in every key; only GPUs use it
  jax.monitoring.register_event_duration_secs_listener(_log_cache_hit)
  logging.info("compilation cache: %s", jax.config.jax_compilation_cache_dir)
