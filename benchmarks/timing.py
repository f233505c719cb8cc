"""Wall-clock timing of compiled calls; imports only JAX, so a benchmark child that needs nothing else
(the sampler rows of vs_pytorch.py) does not load the training stack with `common`."""

import time
from typing import Any, Callable

import jax


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
  """Wall seconds of `repeats` calls of fn (each blocked until ready)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return times


def timed_in_turns(calls: dict[Any, Callable[[], Any]], repeats: int) -> dict[Any, list[float]]:
  """Wall seconds of `repeats` runs of each (already compiled) call, the calls taking turns run by run,
  so they all see the same host load, in reverse order every other run, so that each call follows a
  given neighbour as often as it precedes it (a call right after a large program ran up to 20% slower)."""
  times = {key: [] for key in calls}
  for run in range(repeats):
    for key in (list(calls) if run % 2 == 0 else list(calls)[::-1]):
      times[key] += timed(calls[key], 1)
  return times
