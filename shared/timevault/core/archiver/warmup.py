"""Warm the kernel's caches ahead of a backup's walk, from a separate process.

On a cold cache every `lstat` of the walk waits for the disk (inode tables are read a block at
a time, synchronously), and those waits add to the walk, which holds one core with its Python
work: at 1,000,000 files about a third of an incremental backup. A child process that makes
the same `lstat` calls in the same order (depth first, by name), running ahead, turns the
walk's calls into cache hits; it works on the other core and the disk meanwhile. A thread
would not do: it needs the GIL back after each call, and the walk rarely lets go of it.

A backup that reads every file (one without a parent snapshot) also asks the child to warm
small files' contents: it opens each and asks the kernel to read it (`POSIX_FADV_WILLNEED`),
without reading it itself. The backup's reads then find the pages cached, and the disk gets
many requests at once instead of one folder's. The child never runs more than WINDOW_BYTES
ahead of the backup's own reads, so that pages are not evicted before they are used: the
backup reports each folder it has read (`Warming.scanned`), and the child waits when it is too
far ahead. Folders the backup never reads (left out by its rules) are skipped, not warmed.

Advisory only. The walk makes its own calls and trusts only their answers; nothing waits for
the child; it is killed when the backup ends and dies with its parent (a parent killed with -9
does not leave it walking). It stays on each source's file system and follows no symlink.

This file runs as a script (`python -I -S warmup.py PARENT_PID`): no imports of TimeVault, so
the child starts in ~20 ms. Its standard input carries the sources first (NUL-separated, ended
by an empty one, so that other users' process listings do not show them), then the backup's
messages, each ended by a NUL: CONTENTS (warm contents from now on) or a folder's path (its
files are read).
"""

from __future__ import annotations

import contextlib
import os
import select
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from operator import attrgetter

_by_name = attrgetter("name")

# Files up to this size are warmed: the archiver reads them whole in its scans (walk.SMALL_FILE;
# not imported, see above). Larger ones are read in order by one reader, with the kernel's own
# read-ahead.
SMALL_FILE = 4 * 1024 * 1024
WINDOW_BYTES = 64 * 1024 * 1024
CONTENTS = b"+"
# Folders warmed and not yet reported read; beyond this many (folders of no small files, or
# reports lost), the oldest are forgotten: the child then only waits longer.
MAX_AHEAD_FOLDERS = 100_000
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
_WILLNEED = getattr(os, "POSIX_FADV_WILLNEED", None)


class Warming:
    """The backup's side of a running child: it asks for contents and reports folders read.

    Writes never block the backup: a message the pipe has no room for is dropped (the child
    then only waits longer), and a child gone is not written to again.
    """

    def __init__(self, child: subprocess.Popen[bytes]) -> None:
        self.child = child
        self.contents = False

    def warm_contents(self) -> None:
        """Warm small files' contents from here on, paced by `scanned`."""
        self.contents = True
        self._send(CONTENTS)

    def scanned(self, folder: bytes) -> None:
        """`folder`'s files are read: the child may warm that much further."""
        if self.contents:
            self._send(folder)

    def _send(self, message: bytes) -> None:
        pipe = self.child.stdin
        if pipe is None or len(message) >= select.PIPE_BUF:  # only whole messages: one write
            return
        try:
            os.write(pipe.fileno(), message + b"\0")
        except BlockingIOError:
            pass
        except (OSError, ValueError):  # gone, or closed by `stop`
            self.contents = False

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.child.kill()
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            self.child.wait(timeout=5)
        if self.child.stdin is not None:
            with contextlib.suppress(OSError):
                self.child.stdin.close()


def start(sources: list[bytes]) -> Warming | None:
    """Start warming the caches below `sources`; None when a child cannot be started."""
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
    warming = Warming(child)
    assert child.stdin is not None
    try:
        child.stdin.write(b"".join(source + b"\0" for source in sources) + b"\0")
        child.stdin.flush()
        os.set_blocking(child.stdin.fileno(), False)
    except OSError:  # the child is gone already
        warming.stop()
        return None
    return warming


@contextlib.asynccontextmanager
async def warming(sources: list[bytes]) -> AsyncIterator[Warming | None]:
    """The warm-up child for the duration of a block (`stop` may end it sooner)."""
    child = start(sources)
    try:
        yield child
    finally:
        stop(child)


def stop(child: Warming | None) -> None:
    if child is not None:
        child.stop()


# ---- the child ---------------------------------------------------------------------------


class Pacing:
    """How far the child may warm contents: WINDOW_BYTES past what the backup has read.

    Both sides visit folders in one order, depth first by name: the order of their paths'
    components (`order`). The child counts the bytes of small files it has warmed (`warmed`)
    and remembers each folder it passes with that count; the backup's report of a folder moves
    `read` to it. A folder reported that the child has not passed yet (the backup is ahead of
    it: at the start, or past a folder its rules leave out) stops contents until the child gets
    there, so that nothing the backup has read or skipped is warmed.
    """

    def __init__(self, messages: int | None, pending: bytes = b"") -> None:
        self.messages = messages
        self.contents = False
        self.warmed = 0
        self.read = 0
        self._passed: dict[bytes, int] = {}
        self._last: list[bytes] | None = None
        self._behind_until: list[bytes] | None = None
        self._pending = b""
        if messages is not None:
            os.set_blocking(messages, False)
            self._feed(pending)
            self.receive()

    def may_warm(self, size: int) -> bool:
        """Whether to warm a small file of `size` bytes now (it may wait for the backup)."""
        while self.contents and self._behind_until is None and self.warmed - self.read > WINDOW_BYTES:
            self.receive(wait=True)
        if not self.contents or self._behind_until is not None:
            return False
        self.warmed += size
        return True

    def folder_passed(self, folder: bytes) -> None:
        key = order(folder)
        self._last = key
        if self._behind_until is not None:
            if key >= self._behind_until:
                self._behind_until = None  # caught up with the backup
                self.read = self.warmed
            return
        self._passed[folder] = self.warmed
        if len(self._passed) > MAX_AHEAD_FOLDERS:
            del self._passed[next(iter(self._passed))]

    def receive(self, wait: bool = False) -> None:
        """Take the backup's messages (waiting for some if `wait`); at their end, no contents."""
        if self.messages is None:
            self.contents = False
            return
        if wait:
            select.select([self.messages], [], [])
        try:
            data = os.read(self.messages, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the backup closed its end: nothing left to pace by
            self.messages = None
            self.contents = False
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        *messages, self._pending = (self._pending + data).split(b"\0")
        for message in messages:
            if message == CONTENTS:
                self.contents = True
                self.read = self.warmed
            elif message:
                self._reported(message)

    def _reported(self, folder: bytes) -> None:
        key = order(folder)
        if self._last is None or key > self._last:
            self._passed.clear()
            self._behind_until = key
            return
        for passed in list(self._passed):
            if order(passed) > key:
                break
            self.read = self._passed.pop(passed)


def order(path: bytes) -> list[bytes]:
    """A path's place in the walk: depth first, by name, is the order of its components."""
    return path.split(b"/")


def _warm_contents(path: bytes) -> None:
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return
    try:
        if _WILLNEED is not None:
            os.posix_fadvise(fd, 0, 0, _WILLNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


def warm(root: bytes, pacing: Pacing | None = None) -> None:
    """`lstat` every entry below `root`: a folder's entries by name, then its subfolders in
    order, as the archiver's walk does (`list_dir`, then depth first); with `pacing`, warm
    small files' contents too, as far as it allows."""
    try:
        device = os.lstat(root).st_dev
    except OSError:
        return
    pacing = pacing or Pacing(None)
    stack = [root]
    while stack:
        path = stack.pop()
        if pacing.messages is not None:
            pacing.receive()
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
            elif stat.S_ISREG(st.st_mode) and 0 < st.st_size <= SMALL_FILE and pacing.may_warm(st.st_size):
                _warm_contents(entry.path)
        pacing.folder_passed(path)
        stack.extend(reversed(folders))


def in_walk_order(sources: list[bytes]) -> list[bytes]:
    """The sources in the order the backup walks them, without those inside another."""
    ordered: list[bytes] = []
    for source in sorted(sources, key=order):
        if not ordered or not source.startswith(ordered[-1].rstrip(b"/") + b"/"):
            ordered.append(source)
    return ordered


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this process when its parent dies; elsewhere, or if the parent is
    already gone, stop now."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, 9, 0, 0, 0)
    if os.getppid() != parent:
        sys.exit(0)


def read_sources(fd: int) -> tuple[list[bytes], bytes]:
    """The sources at the start of the input (up to an empty one, or its end), and what came
    after them."""
    data = b""
    while b"\0\0" not in data and not data.startswith(b"\0"):
        part = os.read(fd, 65536)
        if not part:
            return [source for source in data.split(b"\0") if source], b""
        data += part
    if data.startswith(b"\0"):
        return [], data[1:]
    head, rest = data.split(b"\0\0", 1)
    return head.split(b"\0"), rest


def main(argv: list[str]) -> int:
    _die_with_parent(int(argv[0]))
    # Below the backup: on a core the backup leaves idle it runs as fast; where both are busy
    # (a first backup is bound by CPU) the backup goes first.
    with contextlib.suppress(OSError):
        os.nice(10)
    messages = sys.stdin.fileno()
    sources, pending = read_sources(messages)
    pacing = Pacing(messages, pending)
    for source in in_walk_order(sources):
        warm(source, pacing)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
