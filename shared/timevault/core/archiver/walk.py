"""Reading the file system for a backup: directory scans and file chunking, run in threads.

Paths are bytes throughout, so names that are not valid UTF-8 survive a round trip.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from stat import S_ISREG
from typing import Protocol

from timevault.core import crypto
from timevault.core.archiver.excludes import CACHEDIR_TAG, Excludes
from timevault.core.chunker import Chunker, ChunkerParams
from timevault.core.repository.format import Node

# Files up to this size are read whole during the directory scan, many per thread hop.
SMALL_FILE = 4 * 1024 * 1024
SCAN_BATCH_BYTES = 16 * 1024 * 1024
READ_BATCH_BYTES = 16 * 1024 * 1024

_local = threading.local()


def _chunker(params: ChunkerParams) -> Chunker:
    chunker = getattr(_local, "chunker", None)
    if chunker is None or chunker.params != params:
        chunker = _local.chunker = Chunker(params)
    return chunker


@dataclass(slots=True)
class Chunked:
    """A file's content as blob ids, plus the chunks' bytes (only those read this time)."""

    ids: list[bytes] = field(default_factory=list)
    chunks: list[tuple[bytes, memoryview]] = field(default_factory=list)
    size: int = 0


@dataclass(slots=True)
class Entry:
    """One directory entry as scanned; `chunked` is set for small files read during the scan."""

    name: bytes
    path: bytes
    st: os.stat_result
    kind: str  # file | dir | symlink | other
    target: bytes | None = None
    unchanged: Node | None = None
    chunked: Chunked | None = None
    changed_while_reading: bool = False
    error: str | None = None


class PreviousDir(Protocol):
    """A folder's entries in the previous snapshot, looked up by name."""

    def get(self, name: bytes, /) -> Node | None: ...


def kind_of(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def node_for(entry: Entry) -> Node:
    st = entry.st
    return Node(
        name=entry.name,
        type=entry.kind,
        mode=stat.S_IMODE(st.st_mode),
        mtime_ns=st.st_mtime_ns,
        size=st.st_size if entry.kind == "file" else 0,
        inode=st.st_ino,
        device=st.st_dev,
        uid=st.st_uid,
        gid=st.st_gid,
        target=entry.target,
    )


def same_file(previous: Node | None, st: os.stat_result) -> bool:
    """Whether the file's content can be taken from the previous snapshot without reading it.

    A file that changed while it was read last time is read again: its stored content may be torn.
    """
    return (
        previous is not None
        and previous.type == "file"
        and previous.size == st.st_size
        and previous.mtime_ns == st.st_mtime_ns
        and previous.inode == st.st_ino
        and not previous.changed_while_reading
    )


def same_metadata(previous: Node, st: os.stat_result) -> bool:
    """Whether `node_for` would describe this unchanged file exactly as `previous` does."""
    return (
        previous.mode == stat.S_IMODE(st.st_mode)
        and previous.uid == st.st_uid
        and previous.gid == st.st_gid
        and previous.device == st.st_dev
    )


def folder_prefix(path: bytes) -> bytes:
    """`path` with one trailing slash: prefix + name is os.path.join(path, name), cheaper."""
    return path if path.endswith(b"/") else path + b"/"


def list_dir(
    path: bytes, previous: PreviousDir, excludes: Excludes | None = None
) -> tuple[list[Entry | Node], list[Entry], list[str]]:
    """List a directory sorted by name: (entries, small changed files to read, warnings).

    An unchanged file whose metadata is unchanged too comes as the previous snapshot's `Node`,
    to be reused as it is; everything else as an `Entry`. (Most files of an incremental backup
    are such: no `Entry` and no further call for each.)

    Only metadata: cheap enough to run on the event loop, which saves a thread hop per folder.
    Most folders of an incremental backup have nothing to read, and hops cost more than the
    listing (threads contending for the GIL at every system call). Excluded entries are
    dropped before they are stat'ed or read.

    Entries are listed and stat'ed relative to the folder's descriptor (`fstatat`): the
    kernel then resolves one name per call, not the whole path again, which took a third of
    each `lstat` (1,000,000 files: ~2 s of an incremental backup).
    """
    warnings: list[str] = []
    entries: list[Entry | Node] = []
    to_read: list[Entry] = []
    prefix = folder_prefix(path)
    dir_fd = os.open(path, _DIR_FLAGS)
    try:
        # A descriptor's listing names entries as str: back to bytes (losslessly, as
        # os.fsencode does), and sorted as bytes, the order of trees.
        with os.scandir(dir_fd) as it:
            listed = sorted((dir_entry.name.encode(_FS_ENCODING, _FS_ERRORS), dir_entry) for dir_entry in it)
        rules = excludes.for_dir(path, (name for name, _ in listed)) if excludes is not None else None
        if rules is not None and rules.tag_only:
            listed = [(name, e) for name, e in listed if name == CACHEDIR_TAG]
            rules = None
        budget = SCAN_BATCH_BYTES
        for name, dir_entry in listed:
            if rules is not None and rules.excluded(name, _is_dir(dir_entry)):
                continue
            try:
                st = dir_entry.stat(follow_symlinks=False)
            except OSError as exc:
                warnings.append(f"skipped {os.fsdecode(prefix + name)}: {exc.strerror}")
                continue
            if rules is not None and rules.other_device(st):
                continue
            mode = st.st_mode
            if S_ISREG(mode):
                prev = previous.get(name)
                if same_file(prev, st):
                    assert prev is not None
                    if same_metadata(prev, st):
                        entries.append(prev)
                        continue
                    entries.append(Entry(name, prefix + name, st, "file", unchanged=prev))
                    continue
                entry = Entry(name, prefix + name, st, "file")
                if st.st_size <= SMALL_FILE and st.st_size <= budget:
                    budget -= st.st_size
                    to_read.append(entry)
                entries.append(entry)
                continue
            entry = Entry(name, prefix + name, st, kind_of(mode))
            if entry.kind == "symlink":
                try:
                    entry.target = os.readlink(name, dir_fd=dir_fd)
                except OSError as exc:
                    warnings.append(f"skipped {os.fsdecode(entry.path)}: {exc.strerror}")
                    continue
            elif entry.kind == "other":
                warnings.append(f"skipped {os.fsdecode(entry.path)}: not a regular file, folder or symlink")
                continue
            entries.append(entry)
    finally:
        os.close(dir_fd)
    return entries, to_read, warnings


_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
# O_NOFOLLOW: a folder swapped for a symlink after its parent was listed is not followed.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def read_small_files(entries: list[Entry], params: ChunkerParams, id_key: bytes) -> list[str]:
    """Read and chunk small files whole (in a thread, many per hop); returns warnings.

    A file that cannot be read gets `error` set and must be left out of the snapshot.
    The kernel is asked to read files (`POSIX_FADV_WILLNEED`) READ_AHEAD_FILES ahead of the
    one being read: on a cold cache, reading many small files one after the other waits for
    the disk once per file; queued together, the disk serves them in parallel and in its own
    order. Each file is opened once, for both; at most READ_AHEAD_FILES are open at a time.
    """
    warnings: list[str] = []
    fds: dict[int, int | None] = {}
    ahead = 0
    try:
        for i, entry in enumerate(entries):
            while ahead < len(entries) and ahead <= i + READ_AHEAD_FILES:
                fds[ahead] = _open_ahead(entries[ahead])
                ahead += 1
            fd = fds.pop(i)
            if fd is not None:
                _read_open(entry, fd, params, id_key)
            if entry.error:
                warnings.append(entry.error)
    finally:
        for fd in fds.values():
            if fd is not None:
                os.close(fd)
    return warnings


READ_AHEAD_FILES = 256
_WILLNEED = getattr(os, "POSIX_FADV_WILLNEED", None)


def _open_ahead(entry: Entry) -> int | None:
    """Open the listed file and ask the kernel to start reading it; None (and `error`) if not."""
    try:
        fd = open_listed(entry)
    except OSError as exc:
        entry.error = f"skipped {os.fsdecode(entry.path)}: {exc.strerror}"
        return None
    if _WILLNEED is not None:
        try:
            os.posix_fadvise(fd, 0, 0, _WILLNEED)
        except OSError:
            pass
    return fd


# O_NOFOLLOW: a symlink swapped in after the listing is not followed (a backup running as root
# would store its target). O_NONBLOCK: a FIFO swapped in does not hang the open.
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK


def open_listed(entry: Entry) -> int:
    """Open the regular file `entry` was listed as, or raise OSError (with a strerror).

    Checked on the descriptor: whatever was swapped in between the listing and the open (a
    symlink, a FIFO, a device, another file) is refused, never read.
    """
    fd = os.open(entry.path, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (entry.st.st_dev, entry.st.st_ino):
            raise OSError(0, "replaced by something other than the file listed")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_file(entry: Entry, params: ChunkerParams, id_key: bytes) -> None:
    """Read a small file whole and chunk it; sets entry.chunked or entry.error."""
    fd = _open_ahead(entry)
    if fd is not None:
        _read_open(entry, fd, params, id_key)


def _read_open(entry: Entry, fd: int, params: ChunkerParams, id_key: bytes) -> None:
    """Read the file open at `fd` to its end, chunk it, close it."""
    try:
        # One read for the listed size and one byte more: a short read of a regular file is
        # its end, so an unchanged file costs one read (a file that grew is read to its end).
        want = entry.st.st_size + 1
        data = os.read(fd, want)
        if len(data) == want:
            parts = [data]
            while part := os.read(fd, 1 << 20):
                parts.append(part)
            data = b"".join(parts)
        after = os.fstat(fd)
    except OSError as exc:
        entry.error = f"skipped {os.fsdecode(entry.path)}: {exc.strerror}"
        return
    finally:
        os.close(fd)
    chunked = Chunked(size=len(data))
    for chunk in _chunker(params).chunks_of(data):
        blob_id = crypto.blob_id(id_key, chunk)
        chunked.ids.append(blob_id)
        chunked.chunks.append((blob_id, chunk))
    entry.chunked = chunked
    entry.changed_while_reading = _changed(entry.st, after) or len(data) != entry.st.st_size


def _changed(before: os.stat_result, after: os.stat_result) -> bool:
    return before.st_mtime_ns != after.st_mtime_ns or before.st_size != after.st_size


class LargeFileReader:
    """Reads a large file in batches of chunks, one thread hop per batch."""

    def __init__(self, entry: Entry, params: ChunkerParams, id_key: bytes) -> None:
        self.entry = entry
        self._id_key = id_key
        self._params = params
        self._file = os.fdopen(open_listed(entry), "rb", buffering=0)
        self._chunks: Iterator[memoryview] | None = None
        self.size = 0

    def next_batch(self) -> list[tuple[bytes, memoryview]]:
        if self._chunks is None:
            # Its own chunker: this generator lives across thread hops while scans use theirs.
            self._chunks = Chunker(self._params).chunks_of_stream(self._file)
        batch: list[tuple[bytes, memoryview]] = []
        total = 0
        for chunk in self._chunks:
            batch.append((crypto.blob_id(self._id_key, chunk), chunk))
            total += len(chunk)
            if total >= READ_BATCH_BYTES:
                break
        self.size += total
        return batch

    def close(self) -> bool:
        """Close the file; returns True when it changed while being read."""
        after = os.fstat(self._file.fileno())
        self._file.close()
        return _changed(self.entry.st, after) or self.size != self.entry.st.st_size


def count_tree(paths: list[bytes], excludes: Excludes | None = None) -> tuple[int, int]:
    """(files, bytes) below `paths`, for progress totals.

    Runs beside the backup, so it stays cheap: folder entries' types come from the directory
    listing itself, and only regular files are stat'ed (for their size).
    """
    if excludes is not None:
        return _count_excluding(paths, excludes)
    files = size = 0
    stack: list[bytes] = []
    for path in paths:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            stack.append(path)
        elif stat.S_ISREG(st.st_mode):
            files += 1
            size += st.st_size
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            files += 1
                            size += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return files, size


def _count_excluding(paths: list[bytes], excludes: Excludes) -> tuple[int, int]:
    """`count_tree` with the backup's exclude rules (the same folders and files it will read)."""
    files = size = 0
    stack: list[bytes] = []
    for path in paths:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            stack.append(path)
        elif stat.S_ISREG(st.st_mode):
            files += 1
            size += st.st_size
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue
        rules = excludes.for_dir(folder, (e.name for e in entries))
        if rules is not None and rules.tag_only:
            entries = [e for e in entries if e.name == CACHEDIR_TAG]
            rules = None
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                if rules is not None and rules.excluded(entry.name, is_dir):
                    continue
                if is_dir:
                    if rules is None or not rules.other_device(entry.stat(follow_symlinks=False)):
                        stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    files += 1
                    size += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return files, size
