"""Benchmark runs in child processes (no JAX or PyTorch import, so either side can use it)."""

import json
import subprocess


def run_json(command: list[str], what: str, env: dict[str, str] | None = None) -> dict:
  """Runs `command` (in this process's directory) and returns the last JSON object line it printed.

  Raises RuntimeError naming `what`, with the end of the child's stderr, when it exits non-zero or
  prints no JSON line.
  """
  result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
  lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
  if result.returncode or not lines:
    raise RuntimeError(f"{what} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
  return json.loads(lines[-1])
