"""Content-defined chunking (FastCDC 2020) over files of any size in bounded memory.

pyfastcdc is a Cython implementation that chunks at GB/s and releases the GIL; pure Python
gear hashing runs at ~10 MB/s and would be the bottleneck of every backup.

Files are read in segments. All chunks of a segment but the last are final: FastCDC decides a
cut point only from the bytes between the chunk's start and that point, so a chunk that ends
before the buffer does is exactly the chunk a whole-file pass would produce. The last chunk may
have been cut by the end of the buffer, so it is carried over into the next segment.
"""

from __future__ import annotations

import mmap
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from pyfastcdc import FastCDC

MIB = 1024 * 1024


class Readable(Protocol):
    """What `Chunker.chunks_of_stream` reads: an unbuffered file, a pipe, an `io.BytesIO`."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


@dataclass(frozen=True)
class ChunkerParams:
    """Chunk size bounds. FastCDC's mean chunk is about min_size + avg_size."""

    min_size: int = 512 * 1024
    avg_size: int = 512 * 1024
    max_size: int = 4 * MIB
    seed: int = 0

    def make(self) -> FastCDC:
        return FastCDC(self.avg_size, min_size=self.min_size, max_size=self.max_size, seed=self.seed)


class Chunker:
    """Cuts byte streams into content-defined chunks. Not thread-safe: one per thread."""

    # 8 MiB segments (12 MiB buffers with room for a carried-over chunk): 16 MiB ones cost ~25 MiB
    # more peak RSS per backup, for no difference in speed beyond noise.
    def __init__(self, params: ChunkerParams, segment_size: int = 8 * MIB) -> None:
        if segment_size < params.max_size:
            raise ValueError("segment_size must be at least max_size")
        self.params = params
        self._cdc = params.make()
        self._segment_size = segment_size

    def chunks_of(self, data: bytes | memoryview) -> Iterator[memoryview]:
        """Chunks of an in-memory buffer (views into `data`)."""
        view = memoryview(data)
        if len(view) <= self.params.min_size:
            # FastCDC never cuts below min_size: most files are one chunk, without asking it.
            if view:
                yield view
            return
        for chunk in self._cdc.cut_buf(view):
            yield view[chunk.offset : chunk.offset + chunk.length]

    def chunks_of_stream(self, stream: Readable) -> Iterator[memoryview]:
        """Chunks of a file object, as views into per-segment buffers (no copy per chunk).

        Each segment gets a fresh buffer, so views handed out stay valid while the caller
        holds them; the tail of a segment is copied to the front of the next one.
        """
        carry: memoryview | None = None
        while True:
            carry_len = len(carry) if carry is not None else 0
            buffer = _segments.take(self._segment_size + self.params.max_size)
            if carry is not None:
                buffer[:carry_len] = carry
            filled = carry_len + _read_into(stream, memoryview(buffer)[carry_len:])
            at_end = filled < len(buffer)
            if filled == 0:
                return
            view = memoryview(buffer)[:filled]
            pending: memoryview | None = None
            for chunk in self._cdc.cut_buf(view):
                if pending is not None:
                    yield pending
                pending = view[chunk.offset : chunk.offset + chunk.length]
            if at_end:
                if pending is not None:
                    yield pending
                return
            carry = pending


class _SegmentPool:
    """File segments: fresh, unzeroed buffers whose pages the kernel faults in during `readinto`,
    and reused once no chunk of them is left.

    A bytearray of many MiB is zeroed and faulted in page by page while holding the GIL, which
    stalled every other thread of a backup for ~1 s per GiB. Anonymous mmap pages arrive zeroed
    from the kernel on first touch, inside the read system call, with the GIL released. Each
    first touch still costs a page fault (~2.6 µs on these VMs: ~0.5 s of kernel time per GiB),
    so up to `keep` segments whose views are all gone are kept, mapped, for the next read.
    A segment is free when the pool holds the only reference to it (every memoryview of it
    holds one).
    """

    def __init__(self, keep: int = 1) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._handed_out: list[mmap.mmap] = []

    def take(self, size: int) -> mmap.mmap:
        with self._lock:
            free = self._free()
            reused = next((segment for segment in free if len(segment) == size), None)
            if reused is None:
                reused = mmap.mmap(-1, size)
            else:
                free.remove(reused)
                self._handed_out.remove(reused)
            self._drop(free)
            del free
            self._handed_out.append(reused)  # most recently used last
            return reused

    def trim(self) -> None:
        """Unmap free segments beyond `keep` (they are otherwise dropped only by `take`)."""
        with self._lock:
            self._drop(self._free())

    def _free(self) -> list[mmap.mmap]:
        # References to a free segment: the list's, the loop variable's and getrefcount's own.
        return [segment for segment in self._handed_out if sys.getrefcount(segment) == 3]

    def _drop(self, free: list[mmap.mmap]) -> None:
        """Forget all but the `keep` most recently used free segments (unmapped once `free` goes)."""
        for segment in free[: max(0, len(free) - self._keep)]:
            self._handed_out.remove(segment)


_segments = _SegmentPool()


def trim_segments() -> None:
    """Let go of file segments no chunk needs any more, but the one kept for reuse.

    Called when a batch of chunks is done with: otherwise the segments of a large file stay
    mapped until the next large file needs one.
    """
    _segments.trim()


def _read_into(stream: Readable, target: memoryview) -> int:
    """Fill `target` as far as the stream allows; returns the bytes read (short only at EOF)."""
    total = 0
    while total < len(target):
        n = stream.readinto(target[total:])
        if not n:
            break
        total += n
    return total
