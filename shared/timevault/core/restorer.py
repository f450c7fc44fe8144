"""Restoring a snapshot (or chosen paths of it) into a target folder.

Everything is written into a fresh temporary folder beside the target and moved into place
at the end, so an interrupted restore never leaves half-written files in the target. Every
blob is verified (AEAD tag and id). Names from the repository are checked before use: a
hostile repository cannot write outside the target (no '/', '..', duplicates, or writing
through a symlink — files are created with O_EXCL|O_NOFOLLOW in folders we just made).
A damaged blob fails only the files that need it, a damaged folder listing only the folder
below it; the rest still restore, and `RestoreResult.errors` names every loss.

The way to the target is walked from a trusted starting folder one component at a time
with ``O_NOFOLLOW`` (openat-style, `target.py`), and from then on everything happens relative
to open folder descriptors, so a symlink planted on the way cannot redirect the restore.
Set-user-ID and set-group-ID bits are dropped unless the caller asks to keep them: a restore
must not hand out privileges that a (possibly forged) snapshot claims. The snapshot must not
contradict the history the password holder endorsed (`history.py`) unless allowed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from timevault.core.archiver.archiver import ByteBudget, Progress
from timevault.core.buffers import BytesLike
from timevault.core.errors import HistoryError, RestoreCanceled, RestoreError
from timevault.core.gcsettings import fewer_collections
from timevault.core.names import safe_name
from timevault.core.repository.blobs import CorruptBlob
from timevault.core.repository.format import BlobType, Node
from timevault.core.repository.history import CONTRADICTS, ENDORSED
from timevault.core.repository.index import BlobLocation, BlobLookup, pack_object_name
from timevault.core.repository.repo import Repository
from timevault.core.restore_target import TargetError, check_under_roots, merge_into, open_parent
from timevault.core.restore_writer import (
    CHMOD,
    CHOWN,
    FINISH,
    NEW,
    NEW_FILE,
    Job,
    ThreadWriter,
    Writers,
    apply_finish,
)
from timevault.core.restore_writer import start as start_writers
from timevault.core.storage import StorageError

PARALLEL_PACKS = 4
# A hostile snapshot can make a small repository describe a huge tree (one subtree listed
# twice per level doubles the tree at every level): the walk stops at these.
MAX_DEPTH = 256
MAX_ITEMS = 5_000_000
SETID_BITS = stat.S_ISUID | stat.S_ISGID
DECODE_GROUP_BYTES = 4 * 1024 * 1024
DECODED_BYTES = 32 * 1024 * 1024
# The snapshot is restored in batches, read from its trees folder by folder while the previous
# batch is written: memory holds one batch (and the folders on the way to it), never the whole
# snapshot. A batch ends at whichever limit comes first. Each folder of a batch keeps a
# descriptor open until the batch ends (files are created relative to it: a path lookup of
# one component), hence the bound on folders.
BATCH_FILES = 8192
BATCH_BLOBS = 32768
BATCH_FOLDERS = 256
BATCHES_AHEAD = 1
BATCHES_IN_FLIGHT = 2
DECODERS = 2
# Blobs of one pack needed by one batch are read in runs: neighbours closer than READ_GAP are
# read together (one request), a run stops growing at READ_RUN_MAX.
READ_GAP = 256 * 1024
READ_RUN_MAX = 8 * 1024 * 1024
# Files are created by writer processes (`restore_writer.py`), each for its own folders; the
# restore's own thread makes folders, symlinks, empty files and files of several blobs.
WRITER_PROCESSES = min(4, max(2, os.cpu_count() or 2))
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class RestoreResult:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)
    snapshot_id: str = ""
    history: str = ""  # the snapshot's standing: endorsed | unendorsed | contradicts
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Creator:
    """Who creates the restored files: lets a restore skip system calls that would change nothing.

    Every system call costs, and one that releases and retakes a contended GIL costs a hand-over
    between threads (the maker thread's calls; the writer processes have no GIL to share).
    """

    uid: int
    gid: int
    umask: int | None  # None when unknown: then modes are always set explicitly
    keep_setid: bool = False
    _set_mode: dict[int, bool] = field(default_factory=dict, compare=False)  # mode → chmod needed

    @classmethod
    def current(cls, keep_setid: bool = False) -> _Creator:
        umask = None
        with contextlib.suppress(OSError, ValueError):
            with open("/proc/self/status", encoding="ascii", errors="replace") as status:
                for line in status:
                    if line.startswith("Umask:"):
                        umask = int(line.split()[1], 8)
        return cls(os.geteuid(), os.getegid(), umask, keep_setid)

    def mode_of(self, node: Node) -> int:
        """The permission bits to restore: set-id bits only when asked for."""
        mode = stat.S_IMODE(node.mode)
        return mode if self.keep_setid else mode & ~SETID_BITS

    def creation_mode(self, node: Node) -> int:
        """The mode to create a file with: its own when the owner may write it (later blobs reopen
        it), else owner read/write until it is complete. The folder is private meanwhile."""
        mode = node.mode
        return mode if mode & 0o200 and not mode & ~0o777 else 0o600

    def finish_flags(self, node: Node) -> int:
        """What finishing a completely written file takes (`restore_writer.apply_finish`): a
        chown as root when the owner differs, a chmod when creation left another mode; the
        chmod decision is remembered per mode, as this runs once per file."""
        flags = FINISH
        if self.uid == 0 and (node.uid != self.uid or node.gid != self.gid):
            flags |= CHOWN
        mode = node.mode
        set_mode = self._set_mode.get(mode)
        if set_mode is None:
            set_mode = self._set_mode[mode] = (
                self.umask is None or self.creation_mode(node) & ~self.umask != self.mode_of(node)
            )
        return flags | CHMOD if set_mode else flags

    def finish(self, fd: int, node: Node) -> None:
        """Owner (as root), mode and mtime of a completely written file, through its descriptor."""
        apply_finish(fd, self.finish_flags(node), self.mode_of(node), node.uid, node.gid, node.mtime_ns)

    def finish_folder(self, fd: int, node: Node) -> None:
        """A folder's owner, mode and mtime, once everything inside it is written."""
        with contextlib.suppress(OSError):
            if self.uid == 0:
                os.fchown(fd, node.uid, node.gid)
        with contextlib.suppress(OSError):
            os.fchmod(fd, self.mode_of(node))
        with contextlib.suppress(OSError):
            os.utime(fd, ns=(node.mtime_ns, node.mtime_ns))

    def finish_symlink(self, folder_fd: int, node: Node) -> None:
        with contextlib.suppress(OSError):
            if self.uid == 0:
                os.chown(node.name, node.uid, node.gid, dir_fd=folder_fd, follow_symlinks=False)
        with contextlib.suppress(OSError, NotImplementedError):
            os.utime(node.name, ns=(node.mtime_ns, node.mtime_ns), dir_fd=folder_fd, follow_symlinks=False)


class _Folder:
    """A folder being restored: open (`fd`) from its creation until the batch it ends in is done,
    in the restore and in the one writer process that creates its files (`writer`, which knows
    it by `slot`)."""

    __slots__ = ("fd", "node", "parent", "relative", "slot", "writer")

    def __init__(
        self, relative: str, node: Node | None, parent: _Folder | None, fd: int = -1, slot: int = 0
    ) -> None:
        self.relative = relative  # '/'-joined with a trailing '/' ('' for the root), for messages
        self.node = node  # None for the restore's root
        self.parent = parent
        self.fd = fd
        self.slot = slot  # numbered in walk order, the root 0
        self.writer = slot % WRITER_PROCESSES


class _File:
    """A regular file of the current batch. `remaining` counts down as its blobs are written."""

    __slots__ = ("created", "error", "folder", "node", "remaining")

    def __init__(self, folder: _Folder, node: Node) -> None:
        self.folder = folder
        self.node = node
        self.remaining = node.size
        self.error: str | None = None
        self.created = False

    @property
    def relative(self) -> str:
        return self.folder.relative + os.fsdecode(self.node.name)


class _Batch:
    """A part of the snapshot in walk order: what to create first (folders, symlinks, empty and
    multi-blob files), its files, and the folders that end in it (children first)."""

    __slots__ = ("blobs", "ended", "files", "folders", "make")

    def __init__(self) -> None:
        self.make: list[tuple[int, _Folder, Node | _File | _Folder]] = []
        self.files: list[_File] = []
        self.ended: list[_Folder] = []
        self.folders = 0
        self.blobs = 0

    def full(self) -> bool:
        return len(self.files) >= BATCH_FILES or self.blobs >= BATCH_BLOBS or self.folders >= BATCH_FOLDERS

    def __bool__(self) -> bool:
        return bool(self.make or self.files or self.ended)


_MKDIR, _SYMLINK, _EMPTY, _PRECREATE = range(4)
_Targets = list[tuple[_File, int]]  # (file, offset) that one blob goes to


def _parse_includes(includes: list[str]) -> list[tuple[bytes, ...]]:
    parsed = []
    for include in includes:
        parts = tuple(part for part in os.fsencode(include).split(b"/") if part not in (b"", b"."))
        if b".." in parts:
            raise RestoreError(f"--include {include}: '..' is not allowed")
        parsed.append(parts)
    return parsed


def _wanted(parts: tuple[bytes, ...], includes: list[tuple[bytes, ...]]) -> tuple[bool, bool]:
    """(inside an include: restore whole, on the way to one: create the folder only)."""
    if not includes:
        return True, False
    inside = any(parts[: len(inc)] == inc for inc in includes)
    on_path = any(inc[: len(parts)] == parts and len(inc) > len(parts) for inc in includes)
    return inside, on_path


class Restorer:
    def __init__(
        self,
        repo: Repository,
        progress: Callable[[Progress], None] | None,
        cancel: asyncio.Event | None,
        *,
        keep_setid: bool = False,
        max_depth: int = MAX_DEPTH,
        max_items: int = MAX_ITEMS,
        locations: BlobLookup | None = None,
    ) -> None:
        self.repo = repo
        # Where blobs lie: `restore` gives the table on disk (memory flat in the blobs); without
        # it, the repository's index in memory.
        self._locations = locations
        self.keep_setid = keep_setid
        self.max_depth = max_depth
        self.max_items = max_items
        self.result = RestoreResult()
        self.progress = Progress(started=time.monotonic())
        self._on_progress = progress
        self._cancel = cancel
        self._last_report = 0.0
        self._lock = threading.Lock()
        # Makes folders, symlinks, empty files and files of several blobs, and ends folders.
        self._maker = ThreadPoolExecutor(1, thread_name_prefix="restore-maker")
        self._writers: Writers | ThreadWriter | None = None
        # Decoding is C code that releases the GIL for large blobs only; more threads than
        # cores just contend with the event loop for the GIL.
        self._decoder = ThreadPoolExecutor(DECODERS, thread_name_prefix="restore-decoder")
        self._made: asyncio.Future[None] | None = None
        self._decoded = ByteBudget(DECODED_BYTES)
        # Read runs in flight, over both batches in flight (one semaphore each held twice the
        # spans): a batch's runs queue before the next one's, so the older batch goes first.
        self._reads = asyncio.Semaphore(PARALLEL_PACKS)
        self._creator = _Creator.current(keep_setid)
        self._open: set[int] = set()  # descriptors of folders made and not yet ended

    async def _lookup(self) -> BlobLookup:
        if self._locations is None:
            self._locations = await self.repo.index()
        return self._locations

    # --- surveying the snapshot --------------------------------------------------------------

    async def survey(self, tree_id: bytes, includes: list[tuple[bytes, ...]]) -> bool:
        """Read the trees the restore will walk, once each, before anything is created: refuse
        unsafe or repeated names, folders nested too deep and trees that describe too many
        entries (a hostile snapshot listing one subtree twice per level doubles the tree at
        every level), and count the files and bytes to restore. Returns whether any entry
        lies inside an include (always, without includes).

        Only a count per distinct tree is kept (folders, not files), so a subtree that is
        listed many times is read and counted once.
        """
        known: dict[bytes, tuple[int, int, int, int]] = {}  # tree → (entries, files, bytes, levels below)
        totals = [0, 0, 0]  # entries, files, bytes

        def add(entries: int, files: int, size: int) -> None:
            totals[0] += entries
            totals[1] += files
            totals[2] += size
            if totals[0] > self.max_items:
                raise RestoreError(f"the snapshot holds more than {self.max_items} entries; refusing to restore it")

        def too_deep(where: str) -> RestoreError:
            return RestoreError(
                f"the snapshot's folders nest deeper than {self.max_depth} levels at {where!r}; refusing it"
            )

        async def listing(tree_id: bytes, depth: int) -> list[Node] | None:
            try:
                tree = await self.repo.load_tree(tree_id, await self._lookup())
            except (CorruptBlob, StorageError):
                if depth == 0:
                    raise  # the root: there is nothing to restore
                return None  # the walk restores the folder empty and names the loss
            _check_names(tree.nodes)
            return tree.nodes

        async def whole(tree_id: bytes, depth: int, where: str) -> tuple[int, int, int, int]:
            if depth >= self.max_depth:
                raise too_deep(where)
            counted = known.get(tree_id)
            if counted is None:
                nodes = await listing(tree_id, depth)
                entries, files, size, below = len(nodes or ()), 0, 0, 0
                for node in nodes or ():
                    if node.type == "file":
                        files += 1
                        size += node.size
                    elif node.type == "dir" and node.subtree is not None:
                        sub = await whole(node.subtree, depth + 1, f"{where}{os.fsdecode(node.name)}/")
                        entries, files, size, below = (
                            entries + sub[0], files + sub[1], size + sub[2], max(below, sub[3] + 1)
                        )
                        if entries > self.max_items:
                            raise RestoreError(
                                f"the snapshot holds more than {self.max_items} entries; refusing to restore it"
                            )
                counted = known[tree_id] = (entries, files, size, below)
            if depth + counted[3] >= self.max_depth:
                raise too_deep(where)
            return counted

        async def spine(tree_id: bytes, parents: tuple[bytes, ...], where: str) -> bool:
            """The folders on the way to includes (only those are read), and what is inside them."""
            if len(parents) >= self.max_depth:
                raise too_deep(where)
            matched = False
            for node in await listing(tree_id, len(parents)) or ():
                parts = (*parents, node.name)
                inside, on_path = _wanted(parts, includes)
                path = f"{where}{os.fsdecode(node.name)}/"
                if inside:
                    matched = True
                    add(1, node.type == "file", node.size if node.type == "file" else 0)
                    if node.type == "dir" and node.subtree is not None:
                        add(*(await whole(node.subtree, len(parts), path))[:3])
                elif on_path and node.type == "dir":
                    add(1, 0, 0)
                    if node.subtree is not None:
                        matched = await spine(node.subtree, parts, path) or matched
            return matched

        if includes:
            matched = await spine(tree_id, (), "")
        else:
            add(*(await whole(tree_id, 0, ""))[:3])
            matched = True
        self.progress.files_total, self.progress.bytes_total = totals[1], totals[2]
        return matched

    # --- walking the snapshot ---------------------------------------------------------------

    async def _walk(
        self, tree_id: bytes, includes: list[tuple[bytes, ...]], root: _Folder, batches: asyncio.Queue[_Batch | None]
    ) -> None:
        """Read the snapshot's trees depth first and hand them on in batches (a bounded queue)."""
        batch = _Batch()
        slots = 0

        async def hand_on() -> None:
            nonlocal batch
            await batches.put(batch)
            batch = _Batch()

        async def visit(tree_id: bytes, folder: _Folder, parents: tuple[bytes, ...]) -> None:
            if len(parents) >= self.max_depth:
                raise RestoreError(
                    f"the snapshot's folders nest deeper than {self.max_depth} levels at {folder.relative!r}; refusing it"
                )
            try:
                tree = await self.repo.load_tree(tree_id, await self._lookup())
            except (CorruptBlob, StorageError) as exc:
                if not parents:
                    raise  # the root: there is nothing to restore
                # A damaged folder listing costs that folder's contents, not the restore: the
                # folder itself is restored (empty) and its loss is named.
                self.result.errors.append(f"{folder.relative.rstrip('/')}/: the folder's contents are lost: {exc}")
                return
            _check_names(tree.nodes)  # the survey did; the walk does not rely on it
            for node in tree.nodes:
                kind = node.type
                if includes:
                    parts = (*parents, node.name)
                    inside, on_path = _wanted(parts, includes)
                    if not inside and not on_path:
                        continue
                    if on_path and kind != "dir":
                        continue
                if kind == "file":
                    file = _File(folder, node)
                    if not node.content:
                        batch.make.append((_EMPTY, folder, file))
                    elif len(node.content) > 1:  # written in parts, maybe by several writers
                        batch.make.append((_PRECREATE, folder, file))
                    batch.files.append(file)
                    batch.blobs += len(node.content)
                elif kind == "dir":
                    nonlocal slots
                    slots += 1
                    child = _Folder(folder.relative + os.fsdecode(node.name) + "/", node, folder, slot=slots)
                    batch.make.append((_MKDIR, folder, child))
                    batch.folders += 1
                    if node.subtree is not None:
                        if batch.full():
                            await hand_on()
                        await visit(node.subtree, child, (*parents, node.name))
                    batch.ended.append(child)
                elif kind == "symlink" and node.target is not None:
                    batch.make.append((_SYMLINK, folder, node))
                # other types (devices, sockets) are not restored
                if batch.full():
                    await hand_on()

        try:
            await visit(tree_id, root, ())
            if batch:
                await batches.put(batch)
        finally:
            await batches.put(None)

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._on_progress and (force or now - self._last_report >= 0.1):
            self._last_report = now
            self._on_progress(self.progress)

    # --- restoring ------------------------------------------------------------------------------

    async def run(self, tree_id: bytes, includes: list[tuple[bytes, ...]], root_fd: int) -> None:
        """Restore the tree `tree_id` into the open folder `root_fd`, batch by batch."""
        writers, note = await start_writers(WRITER_PROCESSES)
        if note is not None:
            self.result.notes.append(note)
        self._writers = writers
        try:
            await self._run(tree_id, includes, root_fd)
        except ChildProcessError as exc:  # a writer process ended
            raise RestoreError(str(exc)) from exc
        finally:
            self._writers = None
            await writers.close()

    async def _run(self, tree_id: bytes, includes: list[tuple[bytes, ...]], root_fd: int) -> None:
        root = _Folder("", None, None, root_fd)
        assert self._writers is not None
        await self._writers.open_folders(root.writer, [(root.slot, root_fd)])
        batches: asyncio.Queue[_Batch | None] = asyncio.Queue(BATCHES_AHEAD)
        walker = asyncio.create_task(self._walk(tree_id, includes, root, batches))
        # Two batches overlap: the next one's packs are read and decoded while the writers
        # finish this one, so they never wait at a batch's start.
        in_flight: collections.deque[asyncio.Task[None]] = collections.deque()
        try:
            while (batch := await batches.get()) is not None:
                if self._cancel is not None and self._cancel.is_set():
                    raise RestoreCanceled("restore canceled")
                previous = in_flight[-1] if in_flight else None
                in_flight.append(asyncio.create_task(self._restore_batch(batch, previous)))
                if len(in_flight) >= BATCHES_IN_FLIGHT:
                    await in_flight.popleft()
                self._report()
            while in_flight:
                await in_flight.popleft()
            await walker  # its errors (refusals) are the restore's
        finally:
            for task in [walker, *in_flight]:
                if not task.done():
                    task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            # A canceled restore must not leave a write running into the folder being removed.
            self._maker.shutdown(wait=True, cancel_futures=True)
            self._decoder.shutdown(wait=True, cancel_futures=True)
            for fd in list(self._open):  # folders of batches that never finished
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._open.clear()
        self._report(force=True)

    async def _restore_batch(self, batch: _Batch, previous: asyncio.Task[None] | None) -> None:
        loop = asyncio.get_running_loop()
        # Folders, symlinks and empty files are made by the maker thread before any data of the
        # batch is written, and after the previous batch's (which made their parents); the
        # batch's packs are read and decoded meanwhile.
        if self._made is not None:
            await self._made
        made = self._made = asyncio.ensure_future(self._make_and_hand(batch.make))
        try:
            targets, by_pack = await self._plan_reads(batch.files)

            async def read_run(pack_id: str, run: list[tuple[BlobLocation, bytes]]) -> None:
                async with self._reads:
                    if self._cancel is not None and self._cancel.is_set():
                        raise RestoreCanceled("restore canceled")
                    await self._restore_run(pack_id, run, targets, made)
                    self._report()

            await asyncio.gather(
                made, *(read_run(pack_id, run) for pack_id, pack_runs in by_pack.items() for run in pack_runs)
            )
        except BaseException:
            with contextlib.suppress(BaseException):
                await made  # never leave the maker making entries into a folder about to go
            raise
        # Files that failed are removed and folders get their times only once the batches
        # before are complete too (they write into the same folders).
        if previous is not None:
            await previous
        result = self.result
        for file in batch.files:
            if file.error is None and file.remaining != 0:
                file.error = f"restored {file.node.size - file.remaining} of {file.node.size} bytes"
            if file.error is not None:
                result.errors.append(f"{file.relative}: {file.error}")
                if file.created:
                    with contextlib.suppress(OSError):
                        os.unlink(file.node.name, dir_fd=file.folder.fd)
            else:
                result.files += 1
                result.bytes += file.node.size
        if batch.ended:
            assert self._writers is not None
            for writer, slots in _slots_by_writer(batch.ended).items():
                await self._writers.close_folders(writer, slots)
            await loop.run_in_executor(self._maker, self._end_folders, batch.ended)

    async def _make_and_hand(self, make: list[tuple[int, _Folder, Node | _File | _Folder]]) -> None:
        """`_make` in the restore's thread, then the new folders to their writers."""
        await asyncio.get_running_loop().run_in_executor(self._maker, self._make, make)
        by_writer: dict[int, list[tuple[int, int]]] = {}
        for op, _, what in make:
            if op == _MKDIR:
                assert isinstance(what, _Folder)
                by_writer.setdefault(what.writer, []).append((what.slot, what.fd))
        assert self._writers is not None
        for writer, folders in by_writer.items():
            await self._writers.open_folders(writer, folders)

    def _make(self, make: list[tuple[int, _Folder, Node | _File | _Folder]]) -> None:
        """Create a batch's folders (opening each), symlinks, empty files, and the files that
        receive several blobs (so that any writer may then open them); in walk order."""
        creator = self._creator
        for op, folder, what in make:
            if op == _MKDIR:
                assert isinstance(what, _Folder) and what.node is not None
                name = what.node.name
                os.mkdir(name, 0o700, dir_fd=folder.fd)
                what.fd = os.open(name, _FOLDER, dir_fd=folder.fd)
                self._open.add(what.fd)
                self.result.dirs += 1
            elif op == _SYMLINK:
                assert isinstance(what, Node) and what.target is not None
                os.symlink(what.target, what.name, dir_fd=folder.fd)
                creator.finish_symlink(folder.fd, what)
            else:
                assert isinstance(what, _File)
                node = what.node
                try:
                    fd = os.open(node.name, NEW_FILE, creator.creation_mode(node), dir_fd=folder.fd)
                except OSError as exc:
                    what.error = exc.strerror or str(exc)
                    continue
                what.created = True
                try:
                    if op == _EMPTY:
                        creator.finish(fd, node)
                        with self._lock:
                            self.progress.files_done += 1
                finally:
                    os.close(fd)

    def _end_folders(self, ended: list[_Folder]) -> None:
        """Metadata of folders whose contents are complete (children first), then close them."""
        for folder in ended:
            if folder.fd < 0:
                continue
            if folder.node is not None:
                self._creator.finish_folder(folder.fd, folder.node)
            self._open.discard(folder.fd)
            os.close(folder.fd)
            folder.fd = -1

    async def _plan_reads(
        self, files: list[_File]
    ) -> tuple[dict[bytes, _Targets], dict[str, list[list[tuple[BlobLocation, bytes]]]]]:
        """Which (file, offset) each blob of the batch goes to, and the reads: per pack, runs of
        nearby blobs in stored order (each blob read once per batch)."""
        locate = (await self._lookup()).locate
        targets: dict[bytes, _Targets] = {}
        by_pack: dict[str, list[tuple[BlobLocation, bytes]]] = {}
        for file in files:
            offset = 0
            for blob_id in file.node.content:
                location = locate(blob_id)
                if location is None:
                    file.error = f"data blob {blob_id.hex()[:16]} is missing from the repository"
                    break
                wanted = targets.get(blob_id)
                if wanted is None:
                    targets[blob_id] = [(file, offset)]
                    by_pack.setdefault(location.pack, []).append((location, blob_id))
                else:
                    wanted.append((file, offset))
                offset += location.raw_length
        runs = {pack_id: _runs(locations) for pack_id, locations in by_pack.items()}
        return targets, runs

    async def _restore_run(
        self,
        pack_id: str,
        run: list[tuple[BlobLocation, bytes]],
        targets: dict[bytes, _Targets],
        made: asyncio.Future[None],
    ) -> None:
        start = run[0][0].offset
        end = max(location.offset + location.length for location, _ in run)
        try:
            span = await self.repo.storage.get(pack_object_name(pack_id), start, end - start)
        except StorageError as exc:
            for _, blob_id in run:
                for file, _ in targets[blob_id]:
                    file.error = file.error or f"pack {pack_id[:12]} cannot be read: {exc}"
            return
        loop = asyncio.get_running_loop()

        async def write(decoded: list[tuple[BytesLike, _Targets]], size: int) -> None:
            try:
                await made
                await self._write_decoded(decoded)
            finally:
                await self._decoded.release(size)

        # A run is decoded a few MiB at a time, each part handed to a writer as it is ready;
        # the bytes decoded but not yet written stay within DECODED_BYTES (memory stays flat):
        # a part's plain size is reserved before it is decoded, not after.
        writes = []
        try:
            for group in _groups(run, DECODE_GROUP_BYTES):
                size = sum(max(location.raw_length, 0) for location, _ in group)
                await self._decoded.acquire(size)
                try:
                    decoded = await loop.run_in_executor(
                        self._decoder, self._decode_blobs, span, start, group, targets
                    )
                except BaseException:
                    await self._decoded.release(size)
                    raise
                writes.append(asyncio.create_task(write(decoded, size)))
        finally:
            del span
            await asyncio.gather(*writes)

    def _decode_blobs(
        self,
        span: bytes,
        start: int,
        locations: list[tuple[BlobLocation, bytes]],
        targets: dict[bytes, _Targets],
    ) -> list[tuple[BytesLike, _Targets]]:
        """Decrypt, decompress and verify wanted blobs (mostly C code without the GIL)."""
        view = memoryview(span)
        decoded = []
        decode = self.repo.decode_blob
        for location, blob_id in locations:
            wanted = [target for target in targets[blob_id] if target[0].error is None]
            if not wanted:
                continue
            payload = view[location.offset - start : location.offset - start + location.length]
            try:
                if len(payload) != location.length:
                    raise CorruptBlob(f"pack {location.pack[:12]} is truncated")
                decoded.append((decode(blob_id, BlobType.DATA, payload, location.sealed_key), wanted))
            except CorruptBlob as exc:
                for file, _ in wanted:
                    file.error = file.error or str(exc)
        return decoded

    async def _write_decoded(self, decoded: list[tuple[BytesLike, _Targets]]) -> None:
        """Have the writers write decoded blobs into their files, each file by its folder's writer.

        A file of one blob (most small files) costs its writer four system calls: create
        relative to its folder's descriptor (O_EXCL|O_NOFOLLOW: never through anything that was
        already there), write, set its time (and mode or owner when they differ from what
        creation gave), close. Files of several blobs were created empty by `_make`; each blob
        reopens them. A writer writes its pieces in the order given, so the piece that brings a
        file's count of bytes left to zero is the last one written, and it finishes the file.
        """
        creator = self._creator
        jobs: dict[int, tuple[Job, list[tuple[_File, int, bool]]]] = {}
        for data, targets in decoded:
            size = len(data)
            for file, offset in targets:
                if file.error is not None:
                    continue
                node = file.node
                folder = file.folder
                flags = 0
                if not file.created:  # the file's one blob
                    flags = NEW
                    file.created = True
                file.remaining -= size
                if file.remaining == 0:
                    flags |= creator.finish_flags(node)
                entry = jobs.get(folder.writer)
                if entry is None:
                    entry = jobs[folder.writer] = (Job(), [])
                entry[0].add(
                    folder.slot, node.name, data, flags, creator.creation_mode(node), creator.mode_of(node),
                    node.uid, node.gid, node.mtime_ns, offset,
                )
                entry[1].append((file, size, bool(flags & FINISH)))
        assert self._writers is not None
        writers = self._writers
        answers = await asyncio.gather(*(writers.write(writer, job) for writer, (job, _) in jobs.items()))
        files_done = bytes_done = 0
        for (_, pieces), failures in zip(jobs.values(), answers, strict=True):
            failed = dict(failures)
            for index, (file, size, finishes) in enumerate(pieces):
                message = failed.get(index)
                if message is not None:
                    file.error = file.error or message
                    continue
                bytes_done += size
                files_done += finishes
        with self._lock:
            self.progress.bytes_done += bytes_done
            self.progress.files_done += files_done


def _slots_by_writer(folders: list[_Folder]) -> dict[int, list[int]]:
    by_writer: dict[int, list[int]] = {}
    for folder in folders:
        by_writer.setdefault(folder.writer, []).append(folder.slot)
    return by_writer


def _check_names(nodes: list[Node]) -> None:
    seen: set[bytes] = set()
    for node in nodes:
        if not safe_name(node.name) or node.name in seen:
            raise RestoreError(f"the snapshot holds an unsafe or repeated name {os.fsdecode(node.name)!r}")
        seen.add(node.name)


def _runs(locations: list[tuple[BlobLocation, bytes]]) -> list[list[tuple[BlobLocation, bytes]]]:
    """A pack's wanted blobs in stored order, cut into runs of near neighbours (one read each)."""
    locations.sort(key=lambda item: item[0].offset)
    runs: list[list[tuple[BlobLocation, bytes]]] = []
    start = end = 0
    for item in locations:
        location = item[0]
        if runs and location.offset - end <= READ_GAP and location.offset + location.length - start <= READ_RUN_MAX:
            runs[-1].append(item)
            end = max(end, location.offset + location.length)
        else:
            runs.append([item])
            start, end = location.offset, location.offset + location.length
    return runs


def _groups(
    locations: list[tuple[BlobLocation, bytes]], limit: int
) -> list[list[tuple[BlobLocation, bytes]]]:
    """Consecutive runs of blobs of about `limit` stored bytes each."""
    groups: list[list[tuple[BlobLocation, bytes]]] = [[]]
    size = 0
    for item in locations:
        if groups[-1] and size + item[0].length > limit:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += item[0].length
    return groups


async def restore(
    repo: Repository,
    snapshot_ref: str,
    target: str,
    *,
    includes: list[str] | None = None,
    progress: Callable[[Progress], None] | None = None,
    cancel: asyncio.Event | None = None,
    allow_unverified: bool = False,
    keep_setid: bool = False,
    roots: list[str] | None = None,
    max_depth: int = MAX_DEPTH,
    max_items: int = MAX_ITEMS,
) -> RestoreResult:
    """Restore a snapshot into `target` (created if missing). Returns counts and per-file errors.

    `roots`, when given, are the only folders a restore may land in (never in a dot-folder
    below them); the services pass their configured restore roots, the command line none.
    """
    if not os.path.isabs(target):
        raise RestoreError(f"restore target must be an absolute path: {target}")
    target = os.path.normpath(target)
    try:
        if roots is not None:
            check_under_roots(target, roots)
    except TargetError as exc:
        raise RestoreError(str(exc)) from exc
    snapshot_id = await repo.resolve_snapshot(snapshot_ref)
    snapshot = await repo.load_snapshot(snapshot_id)
    history = await repo.history()
    standing = history.status.get(snapshot_id, CONTRADICTS)
    if standing == CONTRADICTS and not allow_unverified:
        raise HistoryError(
            f"{history.describe(snapshot_id)}; refusing to restore it (pass --allow-unverified to restore it anyway)"
        )
    parsed = _parse_includes(includes or [])
    # Damaged or missing index files cost nothing here: the index is completed from the packs'
    # own headers (`timevault repo rebuild-index` writes it back). It is read into a table on
    # disk, not memory: a restore looks each blob up once, and memory must not grow with them.
    locations, index_notes = await repo.blob_locations()
    with locations, fewer_collections():
        restorer = Restorer(
            repo, progress, cancel, keep_setid=keep_setid, max_depth=max_depth, max_items=max_items,
            locations=locations,
        )
        restorer.result.snapshot_id, restorer.result.history = snapshot_id, standing
        if standing != ENDORSED:
            restorer.result.notes.append(history.describe(snapshot_id))
        restorer.result.notes.extend(index_notes)
        await _restore_into(restorer, snapshot.tree, parsed, target, roots)
    return restorer.result


async def _restore_into(
    restorer: Restorer, tree_id: bytes, parsed: list[tuple[bytes, ...]], target: str, roots: list[str] | None
) -> None:
    """Survey the snapshot, then restore it into a private folder beside `target` and move
    (or merge) it into place."""
    # Folders on the way to an include are restored too; they alone are not a match.
    if not await restorer.survey(tree_id, parsed):
        raise RestoreError("no path in the snapshot matches the --include patterns")
    try:
        parent_fd, name = open_parent(target, roots)
    except TargetError as exc:
        raise RestoreError(str(exc)) from exc
    temp_name = f".{name}.restore-{secrets.token_hex(4)}"
    temp_fd: int | None = None
    try:
        try:
            existing = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            existing = None
        if existing is not None and not stat.S_ISDIR(existing.st_mode):
            raise RestoreError(f"restore target {target} exists and is not a folder")
        os.mkdir(temp_name, 0o700, dir_fd=parent_fd)
        temp_fd = os.open(temp_name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
        await restorer.run(tree_id, parsed, temp_fd)
        if existing is not None:
            target_fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
            try:
                merge_into(temp_fd, target_fd, target, restorer.result.errors)
            finally:
                os.close(target_fd)
        else:
            os.fchmod(temp_fd, 0o755)
            os.rename(temp_name, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
    finally:
        if temp_fd is not None:
            os.close(temp_fd)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(temp_name, dir_fd=parent_fd)
        os.close(parent_fd)

