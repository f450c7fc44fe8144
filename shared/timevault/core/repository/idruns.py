"""Sets of 32-byte blob ids that live on disk, so a backup's memory does not grow with its files.

A backup of a million small files meets a million blob ids three times: the ids the
repository already holds, the ids it hands on itself, and every id its snapshot references.
Held in memory, even compactly (`compact.IdMap`), that is ~100 bytes a file. Here ids wait in
a small in-memory buffer; a full buffer is sorted and written as a *run* (sorted, unique ids
back to back) to one unlinked temporary file. Sorted output is a k-way merge of the runs,
read block by block with `pread` (never `mmap`: mapped file pages count in a process's RSS).

`IdRuns` only collects ids and gives them back sorted and unique (a snapshot's references).
`DiskIdSet` also answers membership: an in-memory Bloom filter of fixed size says "surely not
in" for almost every new id; a "maybe" is confirmed by reading the id's bucket of each run
(a small table per run says where each 12-bit prefix starts). The filter never says "no" for
an id that was added, so an id is never wrongly taken as present: a false "maybe" costs a
few reads, never a lost blob.
"""

from __future__ import annotations

import os
import struct
import tempfile
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Container, Iterable, Iterator
from itertools import pairwise
from typing import Self

from timevault.core.fileio import pwrite_all
from timevault.core.memory import release_free_memory

ID_SIZE = 32
# Ids held in memory before they are written as a run: ~6 MiB as a Python set.
BUFFER_IDS = 1 << 16
# Ids read per run and per step of a merge (64 KiB of each run in memory).
BLOCK_IDS = 2048
# Runs merged at once; more are first merged in groups (each group costs one block a run).
MERGE_FANIN = 64
# Bloom filter: 2**26 bits (8 MiB), two probes. False "maybe"s: ~0.1 % at a million ids,
# ~7 % at ten million (each costs one small read per run, never a wrong answer).
FILTER_BITS = 1 << 26
_BUCKET_BITS = 12
_BUCKETS = 1 << _BUCKET_BITS
# The Bloom filter's two probes are cut from an id's first 8 bytes (little-endian).
_PROBES = struct.Struct("<Q24x")


# Ids per piece when a set is written out or read back.
_COPY_IDS = 32768


def _exactly(read: Callable[[int], bytes], n: int) -> bytes:
    data = read(n)
    if len(data) != n:
        raise ValueError("cut short")
    return data


def _bucket(blob_id: bytes) -> int:
    return (blob_id[0] << 8 | blob_id[1]) >> (16 - _BUCKET_BITS)


class _Run:
    """Where one run lies in the file: `count` ids from byte `offset`."""

    __slots__ = ("count", "offset", "starts")

    def __init__(self, offset: int, count: int, starts: array[int] | None) -> None:
        self.offset = offset
        self.count = count
        self.starts = starts  # for lookups: index of the first id of each bucket, and the end


class IdRuns:
    """A collection of 32-byte ids spilled to sorted runs on disk; `sorted_blocks` gives them
    back sorted and without duplicates. Memory: the buffer and a few blocks, whatever the count.

    `directory` is where the (unlinked) temporary file goes; None: the system's temp folder.
    """

    def __init__(self, directory: str | None = None, *, buffer_ids: int | None = None) -> None:
        self._directory = directory
        self._buffer_ids = buffer_ids or BUFFER_IDS
        self._buffer: set[bytes] = set()
        self._fd: int | None = None
        self._end = 0  # the file's length: runs are appended
        self._runs: list[_Run] = []

    # --- adding --------------------------------------------------------------------------

    def add(self, blob_id: bytes) -> None:
        if len(blob_id) != ID_SIZE:
            raise ValueError(f"an id is {ID_SIZE} bytes")
        self._buffer.add(blob_id)
        if len(self._buffer) >= self._buffer_ids:
            self.spill()

    def update(self, ids: Iterable[bytes]) -> None:
        """Add many ids at once (a folder's worth: one call, not one per id)."""
        ids = ids if isinstance(ids, list) else list(ids)
        if ids and set(map(len, ids)) != {ID_SIZE}:
            raise ValueError(f"an id is {ID_SIZE} bytes")
        self._buffer_all(ids)

    def _buffer_all(self, ids: list[bytes]) -> None:
        """Into the buffer, written as a run each time it fills."""
        taken = 0
        while taken < len(ids):
            room = self._buffer_ids - len(self._buffer)  # at least 1: a full buffer is spilled
            self._buffer.update(ids[taken : taken + room])
            taken += room
            if len(self._buffer) >= self._buffer_ids:
                self.spill()

    @property
    def run_count(self) -> int:
        """How many runs are on disk (the buffer not counted)."""
        return len(self._runs)

    def sorted_run(self) -> SortedRun:
        """A run written piece by piece from ids that come sorted (a list of references as it
        is streamed): no buffer and no sort, each piece goes to the file as it comes."""
        if self._keeps_starts():
            raise TypeError("a set that answers lookups takes ids one by one")
        return SortedRun(self)

    def spill(self) -> None:
        """Write the buffer as a run (also done when it is full)."""
        if not self._buffer:
            return
        ids = sorted(self._buffer)
        self._buffer = set()
        self._runs.append(self._write_run(ids))
        del ids
        # The buffer's ids were spread among everything else the walk allocated meanwhile:
        # freed, they leave holes that only a trim gives back (else RSS creeps up per run).
        release_free_memory()

    def _write_run(self, ids: list[bytes]) -> _Run:
        offset = self._append(b"".join(ids))
        return _Run(offset, len(ids), self._starts(ids))

    def _starts(self, ids: list[bytes]) -> array[int] | None:
        return None  # only a set that answers lookups needs them

    def _append(self, data: bytes | bytearray | memoryview) -> int:
        offset = self._end
        view = memoryview(data)
        pwrite_all(self._file(), view, offset)
        self._end += view.nbytes
        return offset

    def _file(self) -> int:
        if self._fd is None:
            # Unlinked at once: nothing is left behind, even by a killed process.
            handle = tempfile.TemporaryFile(prefix="timevault-ids-", dir=self._directory)
            self._fd = os.dup(handle.fileno())
            handle.close()
        return self._fd

    def close(self) -> None:
        """Let go of the file (its space is freed) and of the buffer."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._buffer = set()
        self._runs = []
        self._end = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading back --------------------------------------------------------------------

    def _blocks(self, run: _Run, block_ids: int | None = None) -> Iterator[list[bytes]]:
        """A run's ids, a block (a list of ids) at a time."""
        assert self._fd is not None
        block_ids = block_ids or BLOCK_IDS
        done = 0
        while done < run.count:
            n = min(block_ids, run.count - done)
            data = os.pread(self._fd, n * ID_SIZE, run.offset + done * ID_SIZE)
            if len(data) != n * ID_SIZE:
                raise OSError("a run of ids was cut short")
            done += n
            yield [data[i : i + ID_SIZE] for i in range(0, len(data), ID_SIZE)]

    def _merge(self, runs: list[_Run]) -> Iterator[list[bytes]]:
        """Sorted, unique ids of `runs` in blocks. Each step takes, from every run, the ids up
        to the smallest of the runs' current last ids; sorting that (a few sorted pieces:
        timsort merges them in C) gives the next stretch of the output, with no duplicates
        across steps."""
        readers = [self._blocks(run) for run in runs]
        heads: list[list[bytes]] = []
        positions: list[int] = []
        live: list[Iterator[list[bytes]]] = []
        for reader in readers:
            block = next(reader, None)
            if block:
                heads.append(block)
                positions.append(0)
                live.append(reader)
        while live:
            bound = min(block[-1] for block in heads)
            taken: list[bytes] = []
            keep = []
            for i, block in enumerate(heads):
                cut = bisect_right(block, bound, positions[i])
                taken.extend(block[positions[i] : cut])
                if cut == len(block):
                    following = next(live[i], None)
                    if following:
                        heads[i], positions[i] = following, 0
                        keep.append(i)
                else:
                    positions[i] = cut
                    keep.append(i)
            heads = [heads[i] for i in keep]
            positions = [positions[i] for i in keep]
            live = [live[i] for i in keep]
            taken.sort()
            yield list(dict.fromkeys(taken))

    def merged(self) -> int:
        """Merge everything into one run (the buffer too); returns its number of unique ids."""
        self.spill()
        while len(self._runs) > 1:
            group = self._runs[:MERGE_FANIN]
            rest = self._runs[MERGE_FANIN:]
            offset, count, ids_for_starts = self._end, 0, []
            for block in self._merge(group):
                self._append(b"".join(block))
                count += len(block)
                ids_for_starts.extend(self._bucket_firsts(block, count - len(block)))
            self._runs = [*rest, _Run(offset, count, None)]
            if self._keeps_starts():
                self._runs[-1].starts = self._starts_from_firsts(ids_for_starts, count)
            if not rest:
                break
        return self._runs[0].count if self._runs else 0

    def _keeps_starts(self) -> bool:
        return False

    def _bucket_firsts(self, block: list[bytes], base: int) -> list[tuple[int, int]]:
        return []

    def _starts_from_firsts(self, firsts: list[tuple[int, int]], count: int) -> array[int]:
        raise NotImplementedError

    def sorted_blocks(self, block_bytes: int = 1 << 20) -> Iterator[bytes]:
        """Every id once, in order, as blocks of ids back to back (`merged` first)."""
        self.merged()
        if not self._runs:
            return
        run = self._runs[0]
        for block in self._blocks(run, max(1, block_bytes // ID_SIZE)):
            yield b"".join(block)


class SortedRun:
    """One run of an `IdRuns`, written from sorted pieces (`IdRuns.sorted_run`). The ids count
    only once `finish` is called: a list that turns out damaged half way (its authentication
    comes at its end) is simply never finished, and adds nothing."""

    def __init__(self, runs: IdRuns) -> None:
        self._runs = runs
        self._offset: int | None = None
        self._count = 0
        self._last = b""

    def add(self, ids: bytes | memoryview, leave_out: Container[bytes] = frozenset()) -> None:
        """Append the next ids (32 bytes each back to back, sorted, following those added
        before), except those in `leave_out`; a repeated id is kept once. ValueError when
        they are not sorted (nothing of this piece is added then)."""
        if len(ids) % ID_SIZE:
            raise ValueError("not whole 32-byte ids")
        kept: list[bytes] = []
        previous = self._last
        for offset in range(0, len(ids), ID_SIZE):
            blob_id = bytes(ids[offset : offset + ID_SIZE])
            if blob_id <= previous:
                if blob_id == previous:
                    continue
                raise ValueError("ids are not sorted")
            previous = blob_id
            if blob_id not in leave_out:
                kept.append(blob_id)
        self._last = previous
        if not kept:
            return
        offset = self._runs._append(b"".join(kept))
        if self._offset is None:
            self._offset = offset
        elif offset != self._offset + self._count * ID_SIZE:
            raise RuntimeError("another run was written into the middle of this one")
        self._count += len(kept)

    def finish(self) -> None:
        """Count the run in (once)."""
        if self._offset is not None and self._count:
            self._runs._runs.append(_Run(self._offset, self._count, None))
        self._offset, self._count = None, 0


class DiskIdSet(IdRuns):
    """An `IdRuns` that also answers "is this id in?" (see the module's description)."""

    def __init__(
        self, directory: str | None = None, *, buffer_ids: int | None = None, filter_bits: int | None = None
    ) -> None:
        super().__init__(directory, buffer_ids=buffer_ids)
        filter_bits = filter_bits or FILTER_BITS
        if filter_bits < 8 or filter_bits & (filter_bits - 1):
            raise ValueError("filter_bits is a power of two, at least 8")
        self._filter = bytearray(filter_bits // 8)
        self._mask = filter_bits - 1
        self._count = 0  # ids added (each once: `add` refuses an id already in)

    def __len__(self) -> int:
        return self._count

    def add(self, blob_id: bytes) -> bool:  # type: ignore[override]
        """Add `blob_id`; False (nothing changes) when it is already in."""
        if len(blob_id) != ID_SIZE:
            raise ValueError(f"an id is {ID_SIZE} bytes")
        if blob_id in self._buffer:
            return False
        # Two probes from the id's first 8 bytes: ids are keyed hashes, spread evenly.
        probe = int.from_bytes(blob_id[:8], "little")
        first, second = probe & self._mask, (probe >> 32) & self._mask
        bits = self._filter
        if bits[first >> 3] >> (first & 7) & 1 and bits[second >> 3] >> (second & 7) & 1:
            if self._on_disk(blob_id):
                return False
        else:
            bits[first >> 3] |= 1 << (first & 7)
            bits[second >> 3] |= 1 << (second & 7)
        self._buffer.add(bytes(blob_id))
        self._count += 1
        if len(self._buffer) >= self._buffer_ids:
            self.spill()
        return True

    def update(self, ids: Iterable[bytes]) -> None:
        for blob_id in ids:
            self.add(blob_id)

    def seed(self, ids: list[bytes]) -> None:
        """Add many ids at once without asking whether each is in already (the repository's
        ids as a backup starts: a million of them at a million files).

        A quarter of what `add` costs an id: the filter's probes come from one `struct` pass
        over the ids, and ids go to the buffer as a set. An id seeded twice may then lie in
        two runs: membership and the merged, unique output do not mind; only `len` counts it
        twice."""
        if not ids:
            return
        if set(map(len, ids)) != {ID_SIZE}:
            raise ValueError(f"an id is {ID_SIZE} bytes")
        joined = b"".join(ids)
        bits, mask = self._filter, self._mask
        for (probe,) in _PROBES.iter_unpack(joined):
            first, second = probe & mask, (probe >> 32) & mask
            bits[first >> 3] |= 1 << (first & 7)
            bits[second >> 3] |= 1 << (second & 7)
        del joined
        self._buffer_all(ids)
        self._count += len(ids)

    # --- kept between runs (a local cache of a repository's ids) ----------------------------

    def write_to(self, write: Callable[[bytes | bytearray | memoryview], object]) -> list[int]:
        """Hand everything to `write`, to be read back by `read_from`: the filter, then each
        run's bucket table and ids, a piece at a time (never the whole set in memory).
        Returns the runs' counts, which `read_from` needs."""
        self.spill()
        write(self._filter)
        counts = []
        for run in self._runs:
            assert run.starts is not None and self._fd is not None
            write(run.starts.tobytes())
            for block in self._blocks(run, _COPY_IDS):
                write(b"".join(block))
            counts.append(run.count)
        return counts

    @classmethod
    def read_from(
        cls,
        read: Callable[[int], bytes],
        counts: list[int],
        directory: str | None = None,
        *,
        buffer_ids: int | None = None,
        filter_bits: int | None = None,
    ) -> DiskIdSet:
        """A set from what `write_to` wrote, taken piece by piece from `read(n)`.

        ValueError when the pieces do not fit the counts: a filter of another size, a short
        read, a bucket table that is not one. (Whether the ids are the ones written is for the
        caller to check: this only rebuilds the set.)"""
        ids = cls(directory, buffer_ids=buffer_ids, filter_bits=filter_bits)
        try:
            ids._filter[:] = _exactly(read, len(ids._filter))
            for count in counts:
                starts = array("I")
                starts.frombytes(_exactly(read, 4 * (_BUCKETS + 1)))
                if starts[0] != 0 or starts[_BUCKETS] != count or any(
                    a > b for a, b in pairwise(starts)
                ):
                    raise ValueError("not a bucket table")
                offset = ids._end
                left = count * ID_SIZE
                while left:
                    piece = _exactly(read, min(left, _COPY_IDS * ID_SIZE))
                    ids._append(piece)
                    left -= len(piece)
                if count:
                    ids._runs.append(_Run(offset, count, starts))
                ids._count += count
        except BaseException:
            ids.close()
            raise
        return ids

    def __contains__(self, blob_id: object) -> bool:
        if not isinstance(blob_id, bytes) or len(blob_id) != ID_SIZE:
            return False
        if blob_id in self._buffer:
            return True
        probe = int.from_bytes(blob_id[:8], "little")
        first, second = probe & self._mask, (probe >> 32) & self._mask
        bits = self._filter
        if not (bits[first >> 3] >> (first & 7) & 1 and bits[second >> 3] >> (second & 7) & 1):
            return False
        return self._on_disk(blob_id)

    def _on_disk(self, blob_id: bytes) -> bool:
        if self._fd is None:
            return False
        bucket = _bucket(blob_id)
        for run in self._runs:
            starts = run.starts
            assert starts is not None
            lo, hi = starts[bucket], starts[bucket + 1]
            if lo == hi:
                continue
            data = os.pread(self._fd, (hi - lo) * ID_SIZE, run.offset + lo * ID_SIZE)
            pos = data.find(blob_id)
            # A match must start an id (an id's bytes might also appear across two ids).
            while pos >= 0 and pos % ID_SIZE:
                pos = data.find(blob_id, pos + 1)
            if pos >= 0:
                return True
        return False

    def _starts(self, ids: list[bytes]) -> array[int]:
        # Where each bucket starts in the sorted run: a bisection per bucket, in C.
        starts = array("I", bytes(4 * (_BUCKETS + 1)))
        shift = 16 - _BUCKET_BITS
        for bucket in range(1, _BUCKETS):
            prefix = (bucket << shift).to_bytes(2, "big")
            starts[bucket] = bisect_left(ids, prefix)
        starts[_BUCKETS] = len(ids)
        return starts

    def _keeps_starts(self) -> bool:
        return True

    def _bucket_firsts(self, block: list[bytes], base: int) -> list[tuple[int, int]]:
        """(bucket, position) of the first id of each bucket that starts in this block."""
        firsts = []
        previous = -1
        for i, blob_id in enumerate(block):
            bucket = _bucket(blob_id)
            if bucket != previous:
                firsts.append((bucket, base + i))
                previous = bucket
        return firsts

    def _starts_from_firsts(self, firsts: list[tuple[int, int]], count: int) -> array[int]:
        starts = array("I", bytes(4 * (_BUCKETS + 1)))
        starts[_BUCKETS] = count
        known = dict(firsts)  # a bucket split across blocks keeps its first position
        for bucket, position in reversed(firsts):
            known[bucket] = position
        following = count
        for bucket in range(_BUCKETS - 1, -1, -1):
            following = known.get(bucket, following)
            starts[bucket] = following
        return starts
