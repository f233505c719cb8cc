"""Noise schedules (betas) and timestep respacing, computed in float64 NumPy.

Everything here runs once on the host while a `GaussianDiffusion` is built; nothing is
traced by JAX.
"""

import math
from typing import Callable, Sequence

import numpy as np

from piti_jax.errors import PitiError

COSINE_NAMES = ("cosine", "squaredcos_cap_v2")
SCHEDULE_NAMES = COSINE_NAMES + ("linear",)
MAX_BETA = 0.999


def betas_from_alpha_bar(num_timesteps: int, alpha_bar: Callable[[float], float],
                         max_beta: float = MAX_BETA) -> np.ndarray:
  """Discretises a continuous alpha-bar(s), s in [0, 1], into `num_timesteps` betas.

  beta_i = min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta).

  Returns:
    float64 (T,).
  """
  betas = np.empty(num_timesteps, dtype=np.float64)
  for i in range(num_timesteps):
    ratio = alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps)
    betas[i] = min(1.0 - ratio, max_beta)
  return betas


def _cosine_alpha_bar(s: float) -> float:
  """The "squaredcos_cap_v2" alpha-bar: cos^2(((s + 0.008) / 1.008) * pi / 2)."""
  return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2


def get_named_beta_schedule(name: str, num_timesteps: int) -> np.ndarray:
  """Betas of a named schedule for `num_timesteps` steps.

  Args:
    name: "cosine" (alias "squaredcos_cap_v2"; beta capped at 0.999) or "linear"
      (1e-4 to 0.02 for T = 1000, both ends scaled by 1000 / T so that any T gives a
      similar process).
    num_timesteps: T >= 1.

  Returns:
    float64 (T,) betas, beta_0 first.
  """
  if num_timesteps < 1:
    raise PitiError(f"num_timesteps must be >= 1, got {num_timesteps}; use e.g. 1000.")
  if name in COSINE_NAMES:
    return betas_from_alpha_bar(num_timesteps, _cosine_alpha_bar)
  if name == "linear":
    scale = 1000.0 / num_timesteps
    return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)
  raise PitiError(f"unknown noise schedule {name!r}; use one of {', '.join(SCHEDULE_NAMES)}.")


def _strided_sections(num_timesteps: int, section_counts: Sequence[int]) -> list[int]:
  """Splits [0, T) into len(section_counts) near-equal parts and strides each evenly.

  The first T % n sections are one step longer. Inside a section of `size` steps,
  `count` indices start + round(k * (size - 1) / (count - 1)) are taken (Python's
  round, i.e. halves to even, as the reference does).
  """
  size_per, extra = divmod(num_timesteps, len(section_counts))
  steps = []
  start = 0
  for i, count in enumerate(section_counts):
    size = size_per + (1 if i < extra else 0)
    if count < 0 or size < count:
      raise PitiError(f"cannot take {count} steps from a section of {size} timesteps (T={num_timesteps}, "
                      f"sections {list(section_counts)}); use fewer steps per section.")
    stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
    position = 0.0
    for _ in range(count):
      steps.append(start + round(position))
      position += stride
    start += size
  return steps


def space_timesteps(num_timesteps: int, section_counts: str | Sequence[int]) -> list[int]:
  """Original timestep indices kept by a respaced sampler, sorted ascending.

  Args:
    num_timesteps: T of the original process.
    section_counts: one of
      - a list of ints or a comma-separated string ("250", "10,15,20"): the process is
        cut into that many equal sections, each evenly strided to its count;
      - "ddimN": the integer stride i giving exactly N steps range(0, T, i);
      - "fast27": sections "10,10,3,2,2" with T - 1 replaced by T - 3 (fewer artefacts
        from the noisiest step).

  Returns:
    Sorted, distinct original indices in [0, T).
  """
  if isinstance(section_counts, str):
    spec = section_counts.strip()
    if spec.startswith("ddim"):
      try:
        desired = int(spec[len("ddim"):])
      except ValueError:
        raise PitiError(f"bad respacing {section_counts!r}; write ddimN with an integer N, e.g. ddim50.") from None
      for stride in range(1, num_timesteps):
        if len(range(0, num_timesteps, stride)) == desired:
          return list(range(0, num_timesteps, stride))
      raise PitiError(f"respacing {section_counts!r}: no integer stride gives exactly {desired} of {num_timesteps} "
                      "steps; pick another N or use a plain step count like \"50\".")
    if spec == "fast27":
      steps = set(space_timesteps(num_timesteps, "10,10,3,2,2"))
      steps.remove(num_timesteps - 1)
      steps.add(num_timesteps - 3)
      return sorted(steps)
    try:
      section_counts = [int(part) for part in spec.split(",")]
    except ValueError:
      raise PitiError(f"bad respacing {section_counts!r}; use a step count (\"250\"), comma-separated section "
                      "counts (\"10,10,3\"), \"ddimN\" or \"fast27\".") from None
  if not section_counts:
    raise PitiError("empty respacing; give at least one section count, e.g. \"250\".")
  return sorted(set(_strided_sections(num_timesteps, list(section_counts))))


def respaced_betas(betas: np.ndarray, use_timesteps: Sequence[int]) -> np.ndarray:
  """Betas of the process that visits only `use_timesteps` of the original one.

  The kept steps keep their alpha-bar: new beta_k = 1 - abar[t_k] / abar[t_{k-1}]
  (abar[t_{-1}] = 1).

  Args:
    betas: float64 (T,) original betas.
    use_timesteps: sorted original indices.

  Returns:
    float64 (len(use_timesteps),).
  """
  alphas_cumprod = np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))
  kept = alphas_cumprod[np.asarray(use_timesteps)]
  previous = np.concatenate([[1.0], kept[:-1]])
  return 1.0 - kept / previous
