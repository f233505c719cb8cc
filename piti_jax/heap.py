"""Handing the host heap's free pages back to the OS (glibc's `malloc_trim`).

glibc keeps freed heap memory resident until something asks for it back: after a train step's
compile, the compiler's freed allocations stayed in a bench_small stage-2 process (2.3 GiB resident
once compiled, 1.1 GiB after a trim; 2.9 and 1.4 GiB once the state was made;
docs/performance.md, section 23). `python -m piti_jax.main` runs trim the heap once the step is
compiled and once the state exists.
"""

import ctypes

from piti_jax import huge_pages


def release_free_heap() -> None:
  """Returns the heap's free pages to the OS (glibc `malloc_trim(0)`); does nothing without glibc."""
  if huge_pages.glibc_version() is not None:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
