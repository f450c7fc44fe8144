"""Positional whole-range reads and writes (`core.fileio`), used by every temporary file of the
engine's scale work."""

from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timevault.core.fileio import pread_exactly, pwrite_all


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=8), st.integers(min_value=0, max_value=5000))
def test_what_is_written_where_is_read_back(pieces: list[bytes], gap: int) -> None:
    with tempfile.TemporaryFile() as handle:
        fd = handle.fileno()
        offset = gap
        for piece in pieces:
            pwrite_all(fd, memoryview(piece), offset)
            offset += len(piece)
        assert pread_exactly(fd, offset - gap, gap, "the test file") == b"".join(pieces)


def test_a_short_file_is_an_error_that_names_it() -> None:
    with tempfile.TemporaryFile() as handle:
        pwrite_all(handle.fileno(), b"x" * 10, 0)
        with pytest.raises(OSError, match=r"the test file is shorter than expected \(10 < 12\)"):
            pread_exactly(handle.fileno(), 8, 4, "the test file")
        assert os.fstat(handle.fileno()).st_size == 10
