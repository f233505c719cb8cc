"""Wall-clock timing of compiled calls; imports only JAX, so a benchmark child that needs nothing else
(the sampler rows of vs_pytorch.py) does not load the training stack with `common`."""

import time
from collections.abc import Iterable, Iterator
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


def in_turns(keys: Iterable[Any], rounds: int) -> Iterator[Any]:
  """The keys `rounds` times over, in their order and then reversed, round after round: things timed in
  this order see the same host load, and each follows a given neighbour as often as it precedes it (a
  call right after a large program ran up to 20% slower)."""
  keys = list(keys)
  for turn in range(rounds):
    yield from (keys if turn % 2 == 0 else keys[::-1])


def timed_in_turns(calls: dict[Any, Callable[[], Any]], repeats: int) -> dict[Any, list[float]]:
  """Wall seconds of `repeats` runs of each (already compiled) call, the calls taking turns (`in_turns`)."""
  times = {key: [] for key in calls}
  for key in in_turns(calls, repeats):
    times[key] += timed(calls[key], 1)
  return times
