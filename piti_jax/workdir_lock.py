"""One run per workdir: process 0 holds `<workdir>/lock.json` while the run lives.

The lock records the holder's host, process id and a heartbeat time that a background thread
refreshes every HEARTBEAT_S seconds. Another run refuses to start while the lock is live. A lock
is stale (a crashed run's, so it does not block) when its holder is a process of this host that no
longer exists, or when its heartbeat is older than STALE_S seconds (a holder on another host,
e.g. a preempted pod). Works on any epath storage (local disks, gs://).
"""

import json
import os
import socket
import threading
import time

from piti_jax import storage
from piti_jax.errors import PitiError

LOCK_FILE = "lock.json"
HEARTBEAT_S = 30.0
STALE_S = 300.0


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def holder_is_live(holder: dict, now: float) -> bool:
  """Whether the run described by a lock file's content still runs."""
  if holder.get("host") == socket.gethostname():
    return _pid_alive(int(holder.get("pid", -1)))
  return now - float(holder.get("heartbeat", 0.0)) < STALE_S


class WorkdirLock:
  """Takes the lock of `workdir` (raising PitiError when a live run holds it); `release()` gives it back."""

  def __init__(self, workdir):
    self.path = storage.path(workdir) / LOCK_FILE
    self._stop = threading.Event()
    if self.path.exists():
      try:
        holder = json.loads(self.path.read_text())
      except (OSError, ValueError):
        holder = {}
      if holder_is_live(holder, time.time()):
        raise PitiError(f"workdir {self.path.parent} is in use by another run (process {holder.get('pid')} on "
                        f"{holder.get('host')}, lock {self.path}); wait for it to finish or use another --workdir.")
    self._identity = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    self._write()
    self._thread = threading.Thread(target=self._beat, name="workdir-lock", daemon=True)
    self._thread.start()

  def _write(self) -> None:
    storage.write_text(self.path, json.dumps({**self._identity, "heartbeat": time.time()}))

  def _beat(self) -> None:
    while not self._stop.wait(HEARTBEAT_S):
      try:
        self._write()
      except OSError:
        pass  # a transient storage error; the next beat retries

  def release(self) -> None:
    self._stop.set()
    self._thread.join()
    if self.path.exists():
      self.path.unlink()
