"""Content-defined chunking: exact cover, size bounds, streaming = whole buffer, seeds, shift resistance."""

from __future__ import annotations

import io
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from timevault.core import crypto
from timevault.core.chunker import MIB, Chunker, ChunkerParams, Readable

# The smallest bounds pyfastcdc accepts: min >= 64, avg >= 256, max >= 1024.
TINY = ChunkerParams(min_size=64, avg_size=256, max_size=1024)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def buffers(draw: st.DrawFn, max_size: int = 24_000) -> bytes:
    """Random, low-entropy and repetitive buffers (those exercise max-size cuts)."""
    kind = draw(st.sampled_from(["random", "zeros", "pattern", "mixed"]))
    size = draw(st.integers(0, max_size))
    seed = draw(st.integers(0, 2**32))
    rng = random.Random(seed)
    if kind == "random":
        return rng.randbytes(size)
    if kind == "zeros":
        return bytes(size)
    if kind == "pattern":
        unit = rng.randbytes(rng.randint(1, 300))
        return (unit * (size // len(unit) + 1))[:size]
    parts = [rng.randbytes(rng.randint(0, 3000)) + bytes(rng.randint(0, 3000)) for _ in range(5)]
    return b"".join(parts)[:size]


params_strategy = st.builds(
    ChunkerParams,
    min_size=st.sampled_from([64, 128, 256]),
    avg_size=st.sampled_from([256, 512, 1024]),
    max_size=st.sampled_from([1024, 2048, 4096]),
    seed=st.integers(0, 2**63 - 1),
)


@SETTINGS
@given(data=buffers(), params=params_strategy)
def test_chunks_cover_input_within_bounds(data: bytes, params: ChunkerParams) -> None:
    chunks = [bytes(c) for c in Chunker(params, segment_size=params.max_size).chunks_of(data)]
    assert b"".join(chunks) == data
    assert all(chunks), "no empty chunks"
    for chunk in chunks[:-1]:
        assert params.min_size <= len(chunk) <= params.max_size
    if chunks:
        assert 0 < len(chunks[-1]) <= params.max_size


@SETTINGS
@given(
    data=buffers(),
    params=params_strategy,
    extra=st.integers(0, 5000),
    short_reads=st.booleans(),
)
def test_stream_equals_whole_buffer(
    data: bytes, params: ChunkerParams, extra: int, short_reads: bool
) -> None:
    """Segment boundaries (small segments, many per buffer) never change where chunks are cut."""
    chunker = Chunker(params, segment_size=params.max_size + extra)
    whole = [bytes(c) for c in chunker.chunks_of(data)]
    stream: Readable = _ShortReads(data) if short_reads else io.BytesIO(data)
    streamed = list(chunker.chunks_of_stream(stream))
    assert [len(c) for c in streamed] == [len(c) for c in whole]
    assert streamed == whole


class _ShortReads:
    """A stream that returns at most 700 bytes per call, like a pipe or a slow network file."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readinto(self, buffer: memoryview) -> int:
        view = memoryview(buffer)
        return self._data.readinto(view[: min(len(view), 700)])


def test_stream_over_real_file_with_segments(tmp_path: os.PathLike[str]) -> None:
    data = random.Random(7).randbytes(300_000) + bytes(50_000) + random.Random(8).randbytes(100_000)
    path = os.path.join(tmp_path, "f")
    with open(path, "wb") as f:
        f.write(data)
    for segment in (1024, 1031, 4096, 65_536):
        chunker = Chunker(TINY, segment_size=segment)
        with open(path, "rb", buffering=0) as f:
            streamed = list(chunker.chunks_of_stream(f))
        assert streamed == [bytes(c) for c in chunker.chunks_of(data)], segment
    assert len(streamed) > 100


def test_segment_smaller_than_max_is_refused() -> None:
    with pytest.raises(ValueError):
        Chunker(TINY, segment_size=TINY.max_size - 1)


@SETTINGS
@given(data=buffers(), seed=st.integers(0, 2**63 - 1))
def test_deterministic(data: bytes, seed: int) -> None:
    params = ChunkerParams(64, 256, 1024, seed)
    first = [bytes(c) for c in Chunker(params, 1024).chunks_of(data)]
    again = [bytes(c) for c in Chunker(params, 1024).chunks_of(data)]
    reused = Chunker(params, 1024)
    list(reused.chunks_of(b"something else first" * 100))
    assert first == again == [bytes(c) for c in reused.chunks_of(data)]


def test_different_seeds_cut_differently() -> None:
    data = random.Random(1).randbytes(200_000)

    def cuts(seed: int) -> list[int]:
        out, pos = [], 0
        for chunk in Chunker(ChunkerParams(64, 256, 1024, seed), 1024).chunks_of(data):
            pos += len(chunk)
            out.append(pos)
        return out

    boundaries = [set(cuts(seed)) for seed in (1, 2, 3, 2**40 + 5)]
    for i, a in enumerate(boundaries):
        for b in boundaries[i + 1 :]:
            shared = len(a & b) / len(a | b)
            assert shared < 0.5, f"seeds share {shared:.0%} of their cut points"


@pytest.fixture(scope="module")
def big_buffer() -> tuple[bytes, set[bytes]]:
    data = os.urandom(64 * MIB)
    return data, {crypto.blob_id(_KEY, c) for c in Chunker(ChunkerParams()).chunks_of(data)}


_KEY = b"k" * 32


@pytest.mark.parametrize("where", [10, 3 * MIB + 17])
def test_shift_resistance_default_params(where: int, big_buffer: tuple[bytes, set[bytes]]) -> None:
    """Inserting a few bytes into 64 MiB moves only the chunks around the insert."""
    data, before = big_buffer
    edited = data[:where] + b"INSERTED" + data[where:]
    after = {crypto.blob_id(_KEY, c) for c in Chunker(ChunkerParams()).chunks_of(edited)}
    assert len(before) > 30  # ~1 MiB average with the defaults
    shared = len(before & after)
    assert shared >= 0.95 * len(before), f"only {shared}/{len(before)} chunks survived the insert"
    assert len(after - before) <= 3


def test_segments_are_reused_only_when_no_chunk_of_them_is_left() -> None:
    """File segments are pooled: a chunk still held must never see its bytes overwritten."""
    from timevault.core import chunker as chunker_module

    rng = random.Random(11)
    files = [rng.randbytes(rng.randint(3_000, 40_000)) for _ in range(60)]
    chunker = Chunker(TINY, segment_size=4096)
    held: list[tuple[memoryview, bytes]] = []
    for i, data in enumerate(files):
        for j, chunk in enumerate(chunker.chunks_of_stream(io.BytesIO(data))):
            if (i + j) % 7 == 0:  # keep some chunks alive across later files, drop the rest
                held.append((chunk, bytes(chunk)))
    assert len(held) > 50
    assert all(bytes(view) == copy for view, copy in held)
    del held, chunk
    for data in files:  # each chunk dropped once used: segments come back from the pool
        copy = bytearray()
        for chunk in chunker.chunks_of_stream(io.BytesIO(data)):
            copy += chunk
        assert copy == data
    # The segment in use, the one before it (its last chunk is carried over) and `keep` free.
    assert len(chunker_module._segments._handed_out) <= chunker_module._segments._keep + 2
    del chunk
    chunker_module.trim_segments()  # what the archiver does after each batch
    assert len(chunker_module._segments._handed_out) == chunker_module._segments._keep


@SETTINGS
@given(data=buffers(max_size=600), params=params_strategy)
def test_short_buffers_cut_as_fastcdc_cuts_them(data: bytes, params: ChunkerParams) -> None:
    """`chunks_of` skips FastCDC for a buffer of at most min_size bytes: the cut must be FastCDC's
    (one chunk, none for nothing), so that ids, and so deduplication, do not change."""
    ours = [bytes(chunk) for chunk in Chunker(params, segment_size=params.max_size).chunks_of(data)]
    theirs = [data[c.offset : c.offset + c.length] for c in params.make().cut_buf(memoryview(data))]
    assert ours == theirs
