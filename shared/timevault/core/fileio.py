"""Whole ranges of a file by position: what the engine's temporary files (the id runs and parts,
the blob location table, check's and prune's spill files) read and write.

`os.pread` and `os.pwrite` may move fewer bytes than asked (a signal, a full pipe, a file cut
short by someone else); these loop until the whole range is done, and a read that meets the
end of the file early is an error that names the file.
"""

from __future__ import annotations

import os

from timevault.core.buffers import BytesLike


def pread_exactly(fd: int, size: int, offset: int, what: str) -> bytes:
    """`size` bytes of `fd` from `offset`; OSError naming `what` if the file ends before."""
    data = os.pread(fd, size, offset)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            raise OSError(f"{what} is shorter than expected ({offset + got} < {offset + size})")
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def pwrite_all(fd: int, data: BytesLike, offset: int) -> None:
    """All of `data` into `fd` at `offset`."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
