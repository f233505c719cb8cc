"""The project's single user-facing exception type, and the stop of a preempted run."""

EXIT_ERROR = 2  # a PitiError: bad input, missing file, config/checkpoint mismatch
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by a preemption notice after saving; rerun to resume


class PitiError(Exception):
  """A user-facing failure: bad input, missing file, config/checkpoint mismatch.

  The message must say what was wrong and what to do about it. `piti_jax.main`
  prints it on one line and exits with status 2.
  """


class Preempted(Exception):
  """The run saved its state and stopped on a preemption notice (SIGTERM or the TPU maintenance event).

  `piti_jax.main` prints the message on one line and exits with status EXIT_PREEMPTED (75), which the
  launch scripts take as "requeue the same command".
  """
