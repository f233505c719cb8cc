"""Transparent huge pages for the host heap: glibc's `glibc.malloc.hugetlb=1`, set before the process starts.

XLA:CPU allocates a program's temporaries when it runs and frees them when it returns. glibc
serves blocks over 32 MiB with fresh `mmap`s and unmaps them on free, so every train step
touches its temporaries for the first time again: about 95,000 page faults and 0.18-0.19
CPU-seconds of kernel time per bench_tiny stage-2 step (4 KiB pages, each zeroed by the
kernel). With the tunable, glibc asks the kernel to back its memory with transparent huge
pages (2 MiB), which cuts the faults to a few thousand and the step time by about a tenth on
a CPU (docs/performance.md, section 12). On a GPU or TPU host it only changes how the host's
own buffers are paged.

glibc reads tunables once, when a process starts, so `reexec_with_huge_pages` restarts the
running command (same process id, same arguments) with the tunable added to GLIBC_TUNABLES.
`python -m piti_jax.main` and the benchmark scripts call it first. It does nothing on
systems without glibc 2.35 or later, when transparent huge pages are off
(/sys/kernel/mm/transparent_hugepage/enabled says [never]), or when GLIBC_TUNABLES already
names the tunable: `GLIBC_TUNABLES=glibc.malloc.hugetlb=0` keeps 4 KiB pages.
"""

import os
import sys
from collections.abc import Mapping

TUNABLE = "glibc.malloc.hugetlb"
MIN_GLIBC = (2, 35)  # the first glibc with the tunable
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def glibc_version() -> tuple[int, int] | None:
  """(major, minor) of the C library when it is glibc, else None."""
  try:
    name, _, version = os.confstr("CS_GNU_LIBC_VERSION").partition(" ")
  except (AttributeError, ValueError, OSError):
    return None
  if name != "glibc":
    return None
  try:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)
  except ValueError:
    return None


def transparent_huge_pages_on(setting_file: str = THP_SETTING) -> bool:
  """Whether the kernel gives huge pages to memory that asks for them ([always] or [madvise])."""
  try:
    with open(setting_file) as f:
      setting = f.read()
  except OSError:
    return False
  return "[always]" in setting or "[madvise]" in setting


def _tunable_value(environ: Mapping[str, str]) -> str | None:
  """The tunable's value in GLIBC_TUNABLES (colon-separated name=value pairs); None when not named there."""
  for setting in environ.get("GLIBC_TUNABLES", "").split(":"):
    name, _, value = setting.partition("=")
    if name == TUNABLE:
      return value
  return None


def tunables_with_huge_pages(environ: Mapping[str, str], glibc: tuple[int, int] | None,
                             huge_pages_on: bool) -> str | None:
  """The GLIBC_TUNABLES value that turns huge pages on, or None when there is nothing to change."""
  if glibc is None or glibc < MIN_GLIBC or not huge_pages_on or _tunable_value(environ) is not None:
    return None
  current = environ.get("GLIBC_TUNABLES", "")
  return f"{current}:{TUNABLE}=1" if current else f"{TUNABLE}=1"


def active(environ: Mapping[str, str] = os.environ) -> bool:
  """Whether this process was started with huge pages for malloc (the tunable set to a non-zero value)."""
  return _tunable_value(environ) not in (None, "", "0")


def reexec_with_huge_pages() -> None:
  """Restarts this process with huge pages for malloc when they are available and not yet on; else returns."""
  tunables = tunables_with_huge_pages(os.environ, glibc_version(), transparent_huge_pages_on())
  if tunables is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, dict(os.environ, GLIBC_TUNABLES=tunables))
