"""Warm the kernel's inode cache ahead of a backup's walk, from a separate process.

On a cold cache every `lstat` of the walk waits for the disk (inode tables are read a block at
a time, synchronously), and those waits add to the walk, which holds one core with its Python
work: at 1,000,000 files about a third of an incremental backup. A child process that makes
the same `lstat` calls in the same order (depth first, by name), running ahead, turns the
walk's calls into cache hits; it works on the other core and the disk meanwhile. A thread
would not do: it needs the GIL back after each call, and the walk rarely lets go of it.

Advisory only. The walk makes its own calls and trusts only their answers; nothing waits for
the child; it is killed when the backup ends and dies with its parent (a parent killed with -9
does not leave it walking). It stays on each source's file system and reads no file contents.

This file runs as a script (`python -I -S warmup.py PARENT_PID`, the sources on its standard
input, NUL-separated, so that other users' process listings do not show them): no imports of
TimeVault, so the child starts in ~20 ms.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from operator import attrgetter

_by_name = attrgetter("name")


def start(sources: list[bytes]) -> subprocess.Popen[bytes] | None:
    """Start warming the inode cache below `sources`; None when a child cannot be started."""
    try:
        child = subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.abspath(__file__), str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
    except OSError:
        return None  # no process to spare: the walk is only slower
    assert child.stdin is not None
    try:
        with child.stdin:
            child.stdin.write(b"\0".join(sources))
    except OSError:  # the child is gone already
        stop(child)
        return None
    return child


@contextlib.asynccontextmanager
async def warming(sources: list[bytes]) -> AsyncIterator[subprocess.Popen[bytes] | None]:
    """The warm-up child for the duration of a block (`stop` may end it sooner)."""
    child = start(sources)
    try:
        yield child
    finally:
        stop(child)


def stop(child: subprocess.Popen[bytes] | None) -> None:
    if child is None:
        return
    with contextlib.suppress(OSError):
        child.kill()
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        child.wait(timeout=5)


def warm(root: bytes) -> None:
    """`lstat` every entry below `root`: a folder's entries by name, then its subfolders in
    order, as the archiver's walk does (`list_dir`, then depth first)."""
    try:
        device = os.lstat(root).st_dev
    except OSError:
        return
    stack = [root]
    while stack:
        path = stack.pop()
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=_by_name)
        except OSError:
            continue
        folders = []
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode) and st.st_dev == device:
                folders.append(entry.path)
        stack.extend(reversed(folders))


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this process when its parent dies; elsewhere, or if the parent is
    already gone, stop now."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, 9, 0, 0, 0)
    if os.getppid() != parent:
        sys.exit(0)


def main(argv: list[str]) -> int:
    _die_with_parent(int(argv[0]))
    for source in sys.stdin.buffer.read().split(b"\0"):
        if source:
            warm(source)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
