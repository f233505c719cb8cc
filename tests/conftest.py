"""Test setup: 8 fake CPU devices, configured before jax is imported anywhere."""

import os

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402  (must come after the environment is set)

assert jax.device_count() == 8, "tests/conftest.py must run before anything imports jax"
