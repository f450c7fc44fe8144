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

# For processes that copy NATS messages of up to 8 MiB all day (snapshotter, uploader): a fresh
# mmap per message faults its pages in one by one, which on a VM made copying ~25x slower than
# reusing heap memory. Buffers up to a message come from the heap, up to 32 MiB free is kept;
# pack-sized (16 MiB) buffers are still mmapped and returned.
MESSAGE_BUFFERS = {"mmap_threshold": 8 * 1024 * 1024 + 256 * 1024, "trim_threshold": 32 * 1024 * 1024}
# For a backup or restore in one process: chunks (at most 4 MiB) reuse heap memory, which cut
# kernel time by a third on the benchmark; file segments and packs (16 MiB) are still mmapped.
CHUNK_BUFFERS = {"mmap_threshold": 4 * 1024 * 1024 + 256 * 1024, "trim_threshold": 16 * 1024 * 1024}


def tune_allocator(mmap_threshold: int = 256 * 1024, arenas: int = 2, trim_threshold: int | None = None) -> bool:
    """Apply the settings where glibc is the allocator; returns whether they took effect."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    settings = [(_M_MMAP_THRESHOLD, mmap_threshold), (_M_ARENA_MAX, arenas)]
    if trim_threshold is not None:
        settings.append((_M_TRIM_THRESHOLD, trim_threshold))
    try:
        libc = ctypes.CDLL(name)
        return all(libc.mallopt(option, value) for option, value in settings)
    except (OSError, AttributeError):
        return False
