"""Test setup: 8 fake CPU devices, configured before jax is imported anywhere.

Compiled XLA programs are also kept in one persistent cache per test session (a temporary
directory, removed at exit), shared by the xdist workers and by the subprocesses tests start:
they inherit the environment, so a train step that one process compiled is read back by the
next instead of compiled again (about 50 s per train step on 2 cores). The cache is keyed by
the program and the compiler options, so it changes no result.
"""

import atexit
import os
import shutil
import tempfile

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the first pytest process (xdist's controller) makes it
  _cache = tempfile.mkdtemp(prefix="piti_jax_test_xla_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)

import piti_jax  # noqa: E402,F401  (adds the project's XLA:CPU flags before jax starts a backend)
import jax  # noqa: E402  (must come after the environment is set)

import pytest  # noqa: E402

assert jax.device_count() == 8, "tests/conftest.py must run before anything imports jax"


@pytest.fixture(scope="session")
def compile_cache() -> str:
  """The session's persistent JAX compile cache directory (above), for the subprocesses tests start."""
  return os.environ["JAX_COMPILATION_CACHE_DIR"]
