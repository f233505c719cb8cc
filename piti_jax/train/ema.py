"""Exponential moving averages of the trainable parameters at several rates."""

from typing import Sequence

import jax
import jax.numpy as jnp

from piti_jax.train.params import ParamTree


def ema_name(rate: float) -> str:
  """Key of the average at `rate` in the train state, e.g. "0.9999"."""
  return f"{rate:g}"


def init_ema(params: ParamTree, rates: Sequence[float]) -> dict[str, ParamTree]:
  """Every average starts as a copy of the parameters."""
  return {ema_name(rate): jax.tree.map(jnp.array, params) for rate in rates}


def update_ema(ema: dict[str, ParamTree], params: ParamTree, rates: Sequence[float]) -> dict[str, ParamTree]:
  """ema <- rate * ema + (1 - rate) * params, for each rate (the reference's update_ema)."""
  updated = {}
  for rate in rates:
    name = ema_name(rate)
    updated[name] = jax.tree.map(lambda e, p, r=rate: r * e + (1.0 - r) * p, ema[name], params)
  return updated
