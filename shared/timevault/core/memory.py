"""Keep the process's memory from creeping up under glibc's allocator.

Backups allocate and free many MiB-sized buffers from several threads. glibc raises its mmap
threshold after each such free, so later buffers land in per-thread heaps that fragment and
are rarely returned: RSS grows with the data. A fixed threshold keeps big buffers mmap-backed
(returned on free) and also caps the number of arenas.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_allocator(
    mmap_threshold: int = 4 * 1024 * 1024 + 256 * 1024,
    arenas: int = 2,
    trim_threshold: int = 16 * 1024 * 1024,
) -> bool:
    """Apply the settings where glibc is the allocator; returns whether they took effect.

    Chunks and NATS messages (at most 4 MiB and a little) reuse heap memory: a fresh mmap per
    buffer faults its pages in one by one, which on a VM made copying ~25x slower and cost a
    third more kernel time per backup. File segments and packs (16 MiB) are mmapped and so
    returned at once; at most `trim_threshold` of free heap is kept.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    settings = [
        (_M_MMAP_THRESHOLD, mmap_threshold),
        (_M_ARENA_MAX, arenas),
        (_M_TRIM_THRESHOLD, trim_threshold),
    ]
    try:
        libc = ctypes.CDLL(name)
        return all(libc.mallopt(option, value) for option, value in settings)
    except (OSError, AttributeError):
        return False


_libc: ctypes.CDLL | None = None


def release_free_memory() -> None:
    """Give the allocator's free pages back to the system (`malloc_trim(0)`), also those in the
    middle of a heap, where fragmentation holds them: a long backup allocates and frees chunk
    buffers among long-lived objects, and without this its heap only grows with the run.
    A few milliseconds; called every so many thousand files, not per file."""
    global _libc
    if not sys.platform.startswith("linux"):
        return
    try:
        if _libc is None:
            name = ctypes.util.find_library("c")
            if not name:
                return
            _libc = ctypes.CDLL(name)
        _libc.malloc_trim(0)
    except (OSError, AttributeError):
        return
