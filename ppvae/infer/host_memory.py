"""Host memory that a long loop of batches frees, handed back to the operating system while the loop runs.

glibc's allocator keeps the memory torch frees for reuse and returns it to the system only from the top of its
heap. A loop whose batches allocate large, short-lived temporaries can strand that memory batch after batch:
importance sampling under a VampPrior (5 images x 1,000 samples x 500 components a batch) grew its resident
memory by about 20 MB a batch, past 23 GB over the 10,000 test images of the richer-models table, until the
kernel killed the run; the same numbers come from a run that holds 1 GB.

Pinning glibc's mmap threshold stops the growth but maps every large tensor afresh (importance sampling 60%
slower), and trimming after every batch scans the heap every time. `HeapTrimmer` instead reads the resident
size between batches (one read of ``/proc/self/statm``) and calls glibc's ``malloc_trim(0)``, which returns
the free pages anywhere in the heap, only when the process has grown by ``slack_mb`` since it last looked: a
few trims a run, with no time measurable. Where the C library is not glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import Callable

SLACK_MB = 256  # growth allowed between trims: far above a batch's temporaries, far below a machine's memory


@functools.cache
def malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim(pad)``, or None where the process's C library has none (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def resident_mb() -> float | None:
    """The process's resident memory in MiB (Linux), else None."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class HeapTrimmer:
    """Call between batches: trims glibc's heap when resident memory has grown by ``slack_mb`` since the last look.

    ``trims`` counts the trims made. Without glibc or ``/proc`` every call returns at once.
    """

    def __init__(self, slack_mb: float = SLACK_MB):
        self.slack_mb = slack_mb
        self.trims = 0
        self._trim = malloc_trim()
        self._base = resident_mb() if self._trim is not None else None

    def __call__(self) -> None:
        if self._base is None:
            return
        now = resident_mb()
        if now is None or now <= self._base + self.slack_mb:
            return
        self._trim(0)
        self.trims += 1
        self._base = resident_mb() or now
