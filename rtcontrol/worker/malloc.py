"""Keep the worker's freed memory for the next volume instead of handing it back to the kernel.

Every volume passes through several 1.2 MB buffers in the worker (TLS records, the websocket
frame, its unmasked copy). glibc's malloc returns such blocks to the kernel when they are freed
(``mmap``/heap trimming with its adaptive thresholds), so the next volume page-faults the memory
in again: ~250 faults, a quarter of a millisecond, per 1.2 MB volume. Fixed thresholds keep up to
:data:`TRIM_THRESHOLD` of free memory in the process and allocations below
:data:`MMAP_THRESHOLD` on the heap, where they are reused. Elsewhere (not glibc) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

#: Blocks up to this size come from the heap (glibc's upper limit on 64-bit systems is 32 MiB).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free memory at the top of the heap kept for reuse before any is returned to the kernel.
TRIM_THRESHOLD = 128 * 1024 * 1024

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Set the thresholds (glibc only); True if they were set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; musl has the function but ignores it (returns 0)
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
