"""Test setup: 8 fake CPU devices, configured before jax is imported anywhere."""

import os

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402  (must come after the environment is set)

assert jax.device_count() == 8, "tests/conftest.py must run before anything imports jax"


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory) -> str:
  """A persistent JAX compile cache directory for subprocesses, shared by the xdist workers of one run."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # the run's directory, above each worker's own
  return str(root / "jax_compile_cache")
