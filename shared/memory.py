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

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_allocator(mmap_threshold: int = 256 * 1024, arenas: int = 2) -> bool:
    """Apply the settings where glibc is the allocator; returns whether they took effect."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
            libc.mallopt(_M_ARENA_MAX, arenas)
        )
    except (OSError, AttributeError):
        return False
