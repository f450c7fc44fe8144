"""Ids spilled to disk split by their leading bits, each part given back whole: two sets of
a million ids compared a part at a time, never held whole.

`check` compares, per snapshot, the blobs its trees need with the blobs its list of
references names, and both with the blobs the index holds. As sets in memory (even compact,
`compact.IdMap`) that is ~100 bytes an id per set: the part of check's memory that grew with
the files. Sorting them on disk (`idruns`) instead costs a merge in Python per id.

Ids are keyed hashes, spread evenly, so the first `bits` bits of an id name its *part* and
every part holds about count / 2**bits ids. The caller picks `bits` from the count it expects
(`bits_for`): a part then holds ~`PART_IDS` ids whatever the count, and comparing part by part
(C set operations on a few thousand ids) keeps memory the same at any number of files. Parts
follow the ids' order: part p holds exactly the ids whose first two bytes lie in the buckets
`bucket_range(p, bits)` (the same buckets as `locations`).

Added ids wait in small per-part buffers; full buffers are written as one chunk per part to an
unnamed temporary file, read back with `pread` (never `mmap`: mapped pages count in RSS).
"""

from __future__ import annotations

import os
import tempfile
from array import array
from bisect import bisect_left
from typing import Self

from timevault.core.fileio import pread_exactly, pwrite_all

ID_SIZE = 32
# Ids a part holds on average: three such sets of ~100 bytes an id are ~5 MiB.
PART_IDS = 1 << 14
# Ids buffered in memory, over all parts, before they are written (~2.5 MiB as bytes objects).
BUFFER_IDS = 1 << 15
MAX_BITS = 16


def bits_for(count: int) -> int:
    """The number of leading bits that splits `count` ids into parts of ~`PART_IDS`."""
    bits = 0
    while bits < MAX_BITS and count > PART_IDS << bits:
        bits += 1
    return bits


def part_of(blob_id: bytes, bits: int) -> int:
    return (blob_id[0] << 8 | blob_id[1]) >> (16 - bits)


def bucket_range(part: int, bits: int) -> tuple[int, int]:
    """The two-byte prefixes (buckets, 0..65536) of part `part`: [first, end)."""
    width = 1 << (16 - bits)
    return part * width, (part + 1) * width


class PartitionedIds:
    """32-byte ids (any order, repeats allowed) kept on disk, split into 2**`bits` parts by
    their leading bits; `ids(part)` gives one part's ids as a set. Memory: the buffers (at
    most `buffer_ids` ids) and a small table of where each part's chunks lie.

    `directory` is where the (unlinked) temporary file goes; None: the system's temp folder.
    """

    def __init__(self, bits: int, directory: str | None = None, *, buffer_ids: int | None = None) -> None:
        if not 0 <= bits <= MAX_BITS:
            raise ValueError(f"bits is 0..{MAX_BITS}")
        self.bits = bits
        self.parts = 1 << bits
        self._directory = directory
        self._buffer_ids = buffer_ids or BUFFER_IDS
        self._buffers: list[list[bytes]] = [[] for _ in range(self.parts)]  # pieces of ids back to back
        self._buffered = 0
        # Per part, (offset, length) pairs of its chunks in the file, flat.
        self._chunks: list[array[int]] = [array("Q") for _ in range(self.parts)]
        self._fd: int | None = None
        self._end = 0
        # Where each part starts as a two-byte prefix, for splitting sorted input by bisection.
        self._prefixes = [(bucket_range(part, bits)[0]).to_bytes(2, "big") for part in range(self.parts)]

    def add_packed(self, data: bytes) -> None:
        """Add ids back to back, in any order."""
        if len(data) % ID_SIZE:
            raise ValueError("not whole 32-byte ids")
        buffers = self._buffers
        if self.bits == 0:
            if data:
                buffers[0].append(data)
        elif self.bits <= 8:
            shift = 8 - self.bits
            for at in range(0, len(data), ID_SIZE):
                buffers[data[at] >> shift].append(data[at : at + ID_SIZE])
        else:
            shift = 16 - self.bits
            for at in range(0, len(data), ID_SIZE):
                buffers[(data[at] << 8 | data[at + 1]) >> shift].append(data[at : at + ID_SIZE])
        self._grew(len(data) // ID_SIZE)

    def add_sorted(self, ids: list[bytes]) -> None:
        """Add ids given sorted: each part's stretch goes in as one piece (found by bisection,
        not an id at a time). Unsorted input is not refused, but parts may then hold ids of
        other parts: the caller checks the order."""
        if not ids:
            return
        if any(len(blob_id) != ID_SIZE for blob_id in (ids[0], ids[-1])):
            raise ValueError(f"an id is {ID_SIZE} bytes")
        first, last = part_of(ids[0], self.bits), part_of(ids[-1], self.bits)
        if first > last:  # out of order: kept whole all the same
            self.add_packed(b"".join(ids))
            return
        start = 0
        for part in range(first, last + 1):
            end = len(ids) if part == last else bisect_left(ids, self._prefixes[part + 1], start)
            if end > start:
                piece = b"".join(ids[start:end])
                if len(piece) != (end - start) * ID_SIZE:
                    raise ValueError(f"an id is {ID_SIZE} bytes")
                self._buffers[part].append(piece)
            start = end
        self._grew(len(ids))

    def _grew(self, count: int) -> None:
        self._buffered += count
        if self._buffered >= self._buffer_ids:
            self.spill()

    def spill(self) -> None:
        """Write every buffer as a chunk of its part (also done when they are full)."""
        if not self._buffered:
            return
        pieces = []
        offset = self._end
        for part, buffer in enumerate(self._buffers):
            if buffer:
                piece = b"".join(buffer)
                self._chunks[part].extend((offset, len(piece)))
                offset += len(piece)
                pieces.append(piece)
                buffer.clear()
        pwrite_all(self._file(), b"".join(pieces), self._end)
        self._end = offset
        self._buffered = 0

    def _file(self) -> int:
        if self._fd is None:
            # Unlinked at once: nothing is left behind, even by a killed process.
            handle = tempfile.TemporaryFile(prefix="timevault-parts-", dir=self._directory)
            self._fd = os.dup(handle.fileno())
            handle.close()
        return self._fd

    def packed(self, part: int) -> bytes:
        """Every id added to `part`, back to back (repeats kept, in no particular order)."""
        pieces = []
        chunks = self._chunks[part]
        for i in range(0, len(chunks), 2):
            assert self._fd is not None
            pieces.append(pread_exactly(self._fd, chunks[i + 1], chunks[i], "a part of the ids"))
        pieces.extend(self._buffers[part])
        return b"".join(pieces)

    def ids(self, part: int) -> set[bytes]:
        """The ids of `part`, each once."""
        data = self.packed(part)
        return {data[at : at + ID_SIZE] for at in range(0, len(data), ID_SIZE)}

    def close(self) -> None:
        """Let go of the file (its space is freed) and of the buffers."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._buffers = [[] for _ in range(self.parts)]
        self._chunks = [array("Q") for _ in range(self.parts)]
        self._buffered = 0
        self._end = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()




