"""Gaussian diffusion: schedules, the process and its losses, timestep samplers, samplers, guidance."""

from piti_jax.diffusion.gaussian import GaussianDiffusion, make_diffusion
from piti_jax.diffusion.guidance import guided_model_fn
from piti_jax.diffusion.samplers import ddim_sample, ddpm_sample, dpm_solver_pp_sample
from piti_jax.diffusion.schedules import get_named_beta_schedule, space_timesteps
from piti_jax.diffusion.timestep_sampler import (SamplerState, init_sampler_state, sample_timesteps,
                                                 update_sampler_state)

__all__ = [
    "GaussianDiffusion",
    "SamplerState",
    "ddim_sample",
    "ddpm_sample",
    "dpm_solver_pp_sample",
    "get_named_beta_schedule",
    "guided_model_fn",
    "init_sampler_state",
    "make_diffusion",
    "sample_timesteps",
    "space_timesteps",
    "update_sampler_state",
]
