"""The project's single user-facing exception type."""


class PitiError(Exception):
  """A user-facing failure: bad input, missing file, config/checkpoint mismatch.

  The message must say what was wrong and what to do about it. `piti_jax.main`
  prints it on one line and exits with status 2.
  """
