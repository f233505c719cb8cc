"""The one sampling path: sampler + guidance from a config -> one jitted sample function.

Training grids (piti_jax.train.loop) and inference (piti_jax.inference) both call
`Sampler`; nothing else in the project runs a sampling loop.

Settings (`SamplingConfig`, filled from a config's `sample` group; `sample_config()` gives
the defaults as an ml_collections group):

  sampler          "ddpm": ancestral sampling with the learned variances over `respacing`
                   ("250", "100", "fast27", "25", "ddim50", ...); "ddim": DDIM over
                   `respacing` with `eta`; "dpm_solver_pp": DPM-Solver++ (2M) with `steps`
                   model calls placed by `spacing`, optional dynamic `thresholding`.
  guidance         "plain", "normalized" or "rescaled" classifier-free guidance with scale
                   `guidance_scale` (the reference's s: 1 = the conditional model, no
                   doubled batch). "normalized" re-standardises the guided eps to the
                   conditional prediction's per-sample mean and std. `normalized_stats`
                   chooses the guided statistics: "empirical" (default) measures them on the
                   guided eps, "analytic" takes the paper's formulas under independence
                   (mean_c + w (mean_c - mean_u), (1 + w)^2 std_c^2 + w^2 std_u^2).
                   Empirical is the default because it delivers exactly what normalized
                   guidance promises (the guided eps keeps the conditional eps's mean and
                   std at every step); the analytic variance assumes eps_c and eps_u are
                   independent, but they are strongly correlated, so it overestimates the
                   guided std and shrinks the noise prediction. `rescale_phi` is the blend
                   of "rescaled" (CFG-rescale).
  temperature      scale of x_T (the reference's upsampler: 0.997).
  clip_denoised    clamp x0 predictions to [-1, 1] (the reference: True).

The condition encoder runs once per image before the loop (the reference re-runs it at
every step); the loop only calls the decoder with the encoded tokens. With guidance the
batch is doubled once as [condition; null condition], the null being the all-ones image
(or the empty caption). A batch of per-sample keys makes each image depend only on its own
key, so a seed fixes every sample whatever the batch size or device count.
"""

import dataclasses
import functools
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from piti_jax.diffusion import guidance as guidance_lib
from piti_jax.diffusion import samplers
from piti_jax.diffusion.gaussian import GaussianDiffusion, make_diffusion
from piti_jax.errors import PitiError
from piti_jax.data import conditions
from piti_jax.train import partition
from piti_jax.train.params import ModelTemplate, ParamTree

if TYPE_CHECKING:
  from piti_jax.models.piti import ModelConfig

SAMPLERS = ("ddpm", "ddim", "dpm_solver_pp")


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How to sample (see the module docstring); hashable, so it can key compiled functions."""

  sampler: str = "ddpm"
  respacing: str = "100"
  eta: float = 0.0
  steps: int = 20
  spacing: str = "logsnr"
  thresholding: bool = False
  guidance: str = "plain"
  guidance_scale: float = 1.0
  normalized_stats: str = "empirical"
  rescale_phi: float = 0.7
  temperature: float = 1.0
  clip_denoised: bool = True

  def __post_init__(self):
    if self.sampler not in SAMPLERS:
      raise PitiError(f"unknown sampler {self.sampler!r}; use one of {', '.join(SAMPLERS)}.")
    if self.guidance not in guidance_lib.GUIDANCE_KINDS:
      raise PitiError(f"unknown guidance {self.guidance!r}; use one of {', '.join(guidance_lib.GUIDANCE_KINDS)}.")
    if self.normalized_stats not in guidance_lib.NORMALIZED_STATS:
      raise PitiError(f"unknown normalized_stats {self.normalized_stats!r}; use one of "
                      f"{', '.join(guidance_lib.NORMALIZED_STATS)}.")
    if self.sampler == "dpm_solver_pp" and self.spacing not in samplers.SPACINGS:
      raise PitiError(f"unknown DPM-Solver++ spacing {self.spacing!r}; use one of {', '.join(samplers.SPACINGS)}.")
    if self.sampler == "dpm_solver_pp" and self.steps < 1:
      raise PitiError(f"sample.steps={self.steps}: DPM-Solver++ needs at least one step.")
    if not 0.0 <= self.eta <= 1.0:
      raise PitiError(f"sample.eta={self.eta} must be in [0, 1] (0: deterministic DDIM, 1: ancestral).")
    if self.temperature <= 0:
      raise PitiError(f"sample.temperature={self.temperature} must be positive.")

  @property
  def guided(self) -> bool:
    return self.guidance_scale != 1.0

  def describe(self) -> dict[str, Any]:
    """The settings that matter for this sampler, for manifests and reports."""
    fields = {"sampler": self.sampler, "temperature": self.temperature, "clip_denoised": self.clip_denoised,
              "guidance": self.guidance if self.guided else "none", "guidance_scale": self.guidance_scale}
    if self.sampler == "dpm_solver_pp":
      fields.update(steps=self.steps, spacing=self.spacing, thresholding=self.thresholding)
    else:
      fields["respacing"] = self.respacing
    if self.sampler == "ddim":
      fields["eta"] = self.eta
    if self.guided and self.guidance == "normalized":
      fields["normalized_stats"] = self.normalized_stats
    if self.guided and self.guidance == "rescaled":
      fields["rescale_phi"] = self.rescale_phi
    return fields


def sample_config(**overrides: Any) -> ml_collections.ConfigDict:
  """The `sample` config group with SamplingConfig's defaults, changed by `overrides`."""
  group = ml_collections.ConfigDict(dataclasses.asdict(SamplingConfig()))
  for name, value in overrides.items():
    if name not in group:
      raise PitiError(f"unknown sample field {name!r}; fields: {', '.join(group)}.")
    group[name] = value
  return group


def sampling_config(group: ml_collections.ConfigDict | dict) -> SamplingConfig:
  """SamplingConfig from a config's `sample` group (unknown fields are an error)."""
  values = dict(group)
  known = {field.name for field in dataclasses.fields(SamplingConfig)}
  unknown = sorted(set(values) - known)
  if unknown:
    raise PitiError(f"unknown sample field(s) {unknown}; fields: {', '.join(sorted(known))}.")
  return SamplingConfig(**values)


def sampling_diffusion(schedule: str, num_timesteps: int, config: SamplingConfig) -> GaussianDiffusion:
  """The process a sampler walks: respaced for DDPM/DDIM, the full one for DPM-Solver++."""
  if config.sampler == "dpm_solver_pp":
    return make_diffusion(schedule, num_timesteps)
  return make_diffusion(schedule, num_timesteps, config.respacing)


def network_evaluations(diffusion: GaussianDiffusion, config: SamplingConfig) -> int:
  """Decoder evaluations per image (a guided step evaluates the decoder twice)."""
  steps = config.steps if config.sampler == "dpm_solver_pp" else diffusion.num_timesteps
  return steps * (2 if config.guided else 1)


def sample_images(model: Any, cond: Any, low_res: jax.Array | None, key: jax.Array, image_shape: tuple[int, ...],
                  diffusion: GaussianDiffusion, config: SamplingConfig) -> jax.Array:
  """Samples one batch (traceable; `Sampler` jits it).

  Args:
    model: a PITI or GLIDE model (`encode`, and `__call__` with `encoded=`).
    cond: condition images float32 (B, S, S, C) in [-1, 1], or a text dict {"tokens", "mask"} (B, L).
    low_res: float32 (B, h, w, 3) in [-1, 1] for upsamplers, else None.
    key: one PRNG key, or per-sample keys (B,).
    image_shape: (B, H, W, 3) of the samples.
    diffusion: `sampling_diffusion(...)`.
    config: the sampler settings.

  Returns:
    float32 (B, H, W, 3) in [-1, 1] (clamped when clip_denoised).
  """
  encoded = model.encode(cond)
  if config.guided:
    # The null condition is the same for every sample (an all-ones image, or a fully masked
    # caption), so it is encoded once and broadcast to the unconditional half of the batch.
    null_encoded = model.encode(conditions.null_condition(jax.tree.map(lambda c: c[:1], cond), jnp))
    encoded = jax.tree.map(lambda e, n: jnp.concatenate([e, jnp.broadcast_to(n, e.shape)]), encoded, null_encoded)
    low_res = None if low_res is None else jnp.concatenate([low_res, low_res])

  def model_fn(x, t):
    return model(x, t, encoded=encoded, low_res=low_res).astype(jnp.float32)

  if config.guided:
    model_fn = guidance_lib.guided_model_fn(model_fn, config.guidance_scale, kind=config.guidance,
                                            rescale_phi=config.rescale_phi, normalized_stats=config.normalized_stats)
  common = dict(clip_denoised=config.clip_denoised, temperature=config.temperature)
  if config.sampler == "ddpm":
    images = samplers.ddpm_sample(diffusion, model_fn, image_shape, key, **common)
  elif config.sampler == "ddim":
    images = samplers.ddim_sample(diffusion, model_fn, image_shape, key, eta=config.eta, **common)
  else:
    images = samplers.dpm_solver_pp_sample(diffusion, model_fn, image_shape, key, steps=config.steps,
                                           spacing=config.spacing, thresholding=config.thresholding, **common)
  return jnp.clip(images, -1.0, 1.0) if config.clip_denoised else images


def sample_keys(key: jax.Array, indices: Any) -> jax.Array:
  """Per-sample keys fold_in(key, index) (B,): the noise of sample `index` depends on nothing else."""
  return jax.vmap(lambda index: jax.random.fold_in(key, index))(jnp.asarray(indices, jnp.uint32))


def _global(value: Any, sharding: jax.sharding.Sharding) -> Any:
  """Host (NumPy) leaves -> global arrays with `sharding`; every process holds the whole value."""
  def convert(leaf):
    if isinstance(leaf, jax.Array):
      return leaf
    leaf = np.asarray(leaf)
    return jax.make_array_from_callback(leaf.shape, sharding, lambda index: leaf[index])

  return jax.tree.map(convert, value)


class Sampler:
  """A jitted sampler of one model template on a mesh.

  `sampler(params, cond, low_res, key, indices, image_shape)` samples image `indices[b]`
  of a run from the per-sample key fold_in(key, indices[b]). The batch (conditions, low-res
  images, indices, samples) is split over every device of the mesh, so B must be a multiple
  of the device count (`pad_to` helps); parameters take the template's shardings
  (replicated, or FSDP-sharded when mesh.fsdp > 1). Inputs may be NumPy arrays held whole by
  every process or global jax arrays. One compiled function per image shape.

  Args:
    template: the model's ModelTemplate.
    schedule, num_timesteps: the model's training process ("cosine" for base models, "linear"
      for the reference's upsampler; 1000 steps).
    config: the sampler settings.
    mesh: the device mesh; default: all devices on the data axis.
  """

  def __init__(self, template: ModelTemplate, schedule: str, num_timesteps: int, config: SamplingConfig,
               mesh: Mesh | None = None):
    self.template = template
    self.config = config
    self.diffusion = sampling_diffusion(schedule, num_timesteps, config)
    self.mesh = mesh if mesh is not None else partition.make_mesh()
    self.batch_sharding = partition.batch_sharding(self.mesh)
    self.replicated = NamedSharding(self.mesh, PartitionSpec())
    self.param_shardings = template.shardings(self.mesh)
    self._compiled: dict[tuple[int, ...], Any] = {}

  @property
  def network_evaluations(self) -> int:
    """Decoder evaluations per image."""
    return network_evaluations(self.diffusion, self.config)

  def pad_to(self, count: int) -> int:
    """The smallest batch >= count that the mesh splits evenly."""
    return -(-count // self.mesh.size) * self.mesh.size

  def _function(self, image_shape: tuple[int, ...]):
    if image_shape not in self._compiled:
      def run(params: ParamTree, cond: Any, low_res: jax.Array | None, key_data: jax.Array,
              indices: jax.Array) -> jax.Array:
        model = self.template.merge(params)
        keys = sample_keys(jax.random.wrap_key_data(key_data), indices)
        return sample_images(model, cond, low_res, keys, image_shape, self.diffusion, self.config)

      batch = self.batch_sharding
      self._compiled[image_shape] = jax.jit(
          run, in_shardings=(self.param_shardings, batch, batch, self.replicated, batch), out_shardings=batch)
    return self._compiled[image_shape]

  def __call__(self, params: ParamTree, cond: Any, low_res: Any, key: jax.Array, indices: Any,
               image_shape: tuple[int, ...]) -> jax.Array:
    """Samples float32 (B, H, W, 3) in [-1, 1], a global array split over the mesh.

    Args:
      params: the model's parameters (placed with `param_shardings`).
      cond, low_res: as in `sample_images` (NumPy or global arrays; low_res None for base models).
      key: one typed PRNG key for the run.
      indices: int (B,) index of each image in the run (its key is fold_in(key, index)).
      image_shape: (B, H, W, 3).
    """
    image_shape = tuple(int(d) for d in image_shape)
    if image_shape[0] % self.mesh.size:
      raise PitiError(f"a sampling batch of {image_shape[0]} does not split over {self.mesh.size} devices; "
                      f"pad it to {self.pad_to(image_shape[0])}.")
    key_data = np.asarray(jax.random.key_data(key))
    with jax.set_mesh(self.mesh):
      cond, low_res, indices = _global((cond, low_res, np.asarray(indices, np.uint32)), self.batch_sharding)
      return self._function(image_shape)(params, cond, low_res, _global(key_data, self.replicated), indices)


@functools.lru_cache(maxsize=32)
def model_sampler(model: "ModelConfig", dtype: str, schedule: str, num_timesteps: int, config: SamplingConfig,
                  mesh: Mesh) -> Sampler:
  """The Sampler of a model architecture, shared by every caller with the same static inputs.

  Keyed on exactly what the compiled function depends on (the frozen architecture config,
  compute dtype, process, sampler settings and mesh), so checkpoints of one architecture
  (for example the stages of a finetune) reuse one compilation.
  """
  from piti_jax.models import presets  # pylint: disable=import-outside-toplevel

  compute = jnp.dtype(dtype)
  template = ModelTemplate(lambda rngs: presets.build_model(model, rngs=rngs, dtype=compute),
                           lambda: presets.abstract_model(model, compute))
  return Sampler(template, schedule, num_timesteps, config, mesh)
