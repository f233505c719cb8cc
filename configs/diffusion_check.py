"""Diffusion self-check: sample a known Gaussian with every sampler and measure the error.

Run:
  python -m piti_jax.main --config configs/diffusion_check.py --workdir /tmp/diffusion_check

Data x0 ~ N(mu, s^2) independently per dimension (mu, s drawn once from `seed`); the
"model" is the exact eps of that data (and the v channel of the true reverse variance).
Writes <workdir>/diffusion_check.json with the measured mean/std errors per sampler.
Override anything with dotted flags, e.g. `--config.num_samples=1024 --config.ddpm_respacing=50`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.mode = "diffusion_check"
  config.seed = 0
  # Process.
  config.schedule = "cosine"  # "cosine" / "squaredcos_cap_v2" or "linear"
  config.num_timesteps = 1000
  # Data: num_samples draws of an (image_size, image_size, channels) Gaussian.
  config.num_samples = 8192
  config.image_size = 2
  config.channels = 4
  config.data_mean_max = 0.3  # mu ~ U(-data_mean_max, data_mean_max) per dimension
  config.data_std_min = 0.2  # s ~ U(data_std_min, data_std_max) per dimension
  config.data_std_max = 0.45
  config.clip_denoised = False  # True would also clip the Gaussian's own tails beyond +-1
  config.learned_variance = True  # the model outputs [eps, v]; False: eps only (fixed variance)
  # Samplers: comma-separated subset of "ddpm", "ddim", "dpm_solver_pp".
  config.samplers = "ddpm,ddim,dpm_solver_pp"
  config.ddpm_respacing = "250"
  config.ddim_respacing = "100"
  config.ddim_eta = 0.0
  config.dpm_solver_steps = 20
  config.dpm_solver_spacing = "logsnr"
  config.dpm_solver_thresholding = False
  # A sampler passes when max |mean error| / s and max |std / s - 1| over dimensions are below this.
  config.tolerance = 0.05
  return config
