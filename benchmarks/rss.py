"""Resident memory of this process (Linux), without importing JAX or PyTorch.

`reset_peak()` hands freed heap back to the OS (glibc `malloc_trim`) and restarts the
high-water mark, so `peak_mib()` after a few steps is the peak of those steps alone, not of
start-up or compilation (nor the allocator's leftovers from them); `process_peak_mib()` is
the peak since the process started.
"""

import ctypes
import resource


def _status_kib(field: str) -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> None:
  """Releases free heap pages, then restarts the peak-RSS counter (VmHWM) at the current RSS."""
  ctypes.CDLL("libc.so.6").malloc_trim(0)
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")


def peak_mib() -> float:
  """Peak RSS since the last `reset_peak()` (or process start), MiB."""
  return _status_kib("VmHWM") / 1024


def current_mib() -> float:
  return _status_kib("VmRSS") / 1024


def process_peak_mib() -> float:
  """Peak RSS since the process started, MiB."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _MallInfo2(ctypes.Structure):
  _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                    "fsmblks", "uordblks", "fordblks", "keepcost")]


def heap_mib() -> dict[str, int]:
  """glibc's malloc totals (`mallinfo2`, glibc 2.33+), MiB: the arenas' size, what of it is in use and
  free, and the blocks mapped on their own (`mmap`). Free arena memory is resident where the pages
  were touched and `malloc_trim` could not return them (pages shared with blocks still in use)."""
  libc = ctypes.CDLL("libc.so.6")
  libc.mallinfo2.restype = _MallInfo2
  info = libc.mallinfo2()
  return {"arena": info.arena >> 20, "in_use": info.uordblks >> 20, "free": info.fordblks >> 20,
          "mapped": info.hblkhd >> 20}
