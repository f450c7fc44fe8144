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
from timevault.core.names import safe_name
from timevault.core.repository.blobs import CorruptBlob
from timevault.core.repository.format import BlobType, Node
from timevault.core.repository.history import CONTRADICTS, ENDORSED
from timevault.core.repository.index import BlobLocation, pack_object_name
from timevault.core.repository.repo import Repository
from timevault.core.restore_target import TargetError, check_under_roots, fd_path, merge_into, open_parent
from timevault.core.storage import StorageError

PARALLEL_PACKS = 4
# A hostile snapshot can make a small repository describe a huge tree (one subtree listed
# twice per level doubles the tree at every level): the planner stops at these.
MAX_DEPTH = 256
MAX_ITEMS = 5_000_000
SETID_BITS = stat.S_ISUID | stat.S_ISGID
DECODE_GROUP_BYTES = 4 * 1024 * 1024
DECODED_BYTES = 32 * 1024 * 1024
# Planning reads every tree of the snapshot. Tree packs hold only trees, and one backup's trees
# sit together in a few of them, so each is read whole, once, and kept while the walk needs it:
# one request per tree pack instead of one per folder (a round trip each on S3).


@dataclass
class RestoreResult:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)
    snapshot_id: str = ""
    history: str = ""  # the snapshot's standing: endorsed | unendorsed | contradicts
    notes: list[str] = field(default_factory=list)


@dataclass
class _Item:
    relative: str  # '/'-joined, for messages
    parts: tuple[bytes, ...]
    node: Node


@dataclass(frozen=True)
class _Creator:
    """Who creates the restored files: lets a restore skip system calls that would change nothing.

    Every system call releases and retakes the GIL, and with several writer threads each one is a
    hand-over between threads; a restore of 25,000 files made ~870,000 futex calls.
    """

    uid: int
    gid: int
    umask: int | None  # None when unknown: then modes are always set explicitly
    keep_setid: bool = False

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

    def finish(self, fd: int, node: Node) -> None:
        """Owner (as root), mode and mtime of a completely written file, through its descriptor."""
        chowned = False
        if self.uid == 0 and (node.uid, node.gid) != (self.uid, self.gid):
            with contextlib.suppress(OSError):
                os.fchown(fd, node.uid, node.gid)  # before chmod: chown clears set-id bits
                chowned = True
        wanted = self.mode_of(node)
        if chowned or self.umask is None or self.creation_mode(node) & ~self.umask != wanted:
            with contextlib.suppress(OSError):
                os.fchmod(fd, wanted)
        with contextlib.suppress(OSError):
            os.utime(fd, ns=(node.mtime_ns, node.mtime_ns))


@dataclass
class _FileJob:
    item: _Item
    path: str
    remaining: int
    creator: _Creator
    error: str | None = None
    created: bool = False

    def create(self) -> None:
        """Create an empty file, with its metadata."""
        fd = self.open()
        try:
            self.creator.finish(fd, self.item.node)
        finally:
            os.close(fd)

    def open(self) -> int:
        """Open for writing; the first open creates the file with O_EXCL|O_NOFOLLOW, so a restore
        never writes through anything that was already there (or that another entry made).

        Only the restore's one writer thread opens files, so `created` needs no lock."""
        if self.created:
            return os.open(self.path, os.O_WRONLY | os.O_NOFOLLOW)
        mode = self.creator.creation_mode(self.item.node)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        self.created = True
        return fd


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
    ) -> None:
        self.repo = repo
        self.keep_setid = keep_setid
        self.max_depth = max_depth
        self.max_items = max_items
        self.result = RestoreResult()
        self.progress = Progress(started=time.monotonic())
        self._on_progress = progress
        self._cancel = cancel
        self._last_report = 0.0
        self._lock = threading.Lock()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="restore-writer")
        self._decoded = ByteBudget(DECODED_BYTES)

    async def plan(self, tree_id: bytes, includes: list[tuple[bytes, ...]]) -> list[_Item]:
        items: list[_Item] = []

        async def visit(tree_id: bytes, parents: tuple[bytes, ...], prefix: str) -> None:
            if len(parents) >= self.max_depth:
                raise RestoreError(
                    f"the snapshot's folders nest deeper than {self.max_depth} levels at {prefix!r}; refusing it"
                )
            try:
                tree = await self.repo.load_tree(tree_id)
            except (CorruptBlob, StorageError) as exc:
                if not parents:
                    raise  # the root: there is nothing to restore
                # A damaged folder listing costs that folder's contents, not the restore: the
                # folder itself is restored (empty) and its loss is named.
                self.result.errors.append(f"{prefix.rstrip('/')}/: the folder's contents are lost: {exc}")
                return
            if len(items) + len(tree.nodes) > self.max_items:
                raise RestoreError(f"the snapshot holds more than {self.max_items} entries; refusing to plan it")
            seen: set[bytes] = set()
            for node in tree.nodes:
                if not safe_name(node.name) or node.name in seen:
                    raise RestoreError(f"the snapshot holds an unsafe or repeated name {os.fsdecode(node.name)!r}")
                seen.add(node.name)
                parts = (*parents, node.name)
                if includes:
                    inside, on_path = _wanted(parts, includes)
                    if not inside and not on_path:
                        continue
                    if on_path and node.type != "dir":
                        continue
                relative = prefix + os.fsdecode(node.name)
                items.append(_Item(relative, parts, node))
                if node.type == "dir" and node.subtree is not None:
                    await visit(node.subtree, parts, relative + "/")

        await visit(tree_id, (), "")
        return items

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._on_progress and (force or now - self._last_report >= 0.1):
            self._last_report = now
            self._on_progress(self.progress)

    async def run(self, items: list[_Item], root: str) -> None:
        creator = _Creator.current(self.keep_setid)
        files = [
            _FileJob(item, os.path.join(root, item.relative), item.node.size, creator)  # names were checked
            for item in items
            if item.node.type == "file"
        ]
        self.progress.files_total = len(files)
        self.progress.bytes_total = sum(job.remaining for job in files)
        # Folders, symlinks and empty files are made by the writer thread, first in its queue, so
        # every file's folder exists before its first write; packs are read and decoded meanwhile.
        loop = asyncio.get_running_loop()
        created = loop.run_in_executor(self._writer, self._create_entries, items, root, files)
        by_pack = await self._group_by_pack(files)
        sem = asyncio.Semaphore(PARALLEL_PACKS)

        async def restore_pack(pack_id: str, wanted: dict[bytes, list[tuple[_FileJob, int]]]) -> None:
            async with sem:
                if self._cancel is not None and self._cancel.is_set():
                    raise RestoreCanceled("restore canceled")
                await self._restore_pack(pack_id, wanted)
                self._report()

        try:
            # A failure to create (none expected: names were checked) is the restore's failure.
            await asyncio.gather(created, *(restore_pack(pack_id, wanted) for pack_id, wanted in by_pack.items()))
        finally:
            # A canceled restore must not leave a write running into the folder being removed.
            self._writer.shutdown(wait=True, cancel_futures=True)
        for job in files:
            if job.error is None and job.remaining != 0:
                job.error = f"restored {job.item.node.size - job.remaining} of {job.item.node.size} bytes"
            if job.error is not None:
                self.result.errors.append(f"{job.item.relative}: {job.error}")
                if job.created:
                    with contextlib.suppress(OSError):
                        os.unlink(job.path)
            else:
                self.result.files += 1
                self.result.bytes += job.item.node.size
        # Folders' and symlinks' metadata last, deepest first, so creating children does not
        # bump folder mtimes. Files got theirs when their last byte was written.
        for item in sorted(items, key=lambda i: len(i.parts), reverse=True):
            if item.node.type == "file":
                continue
            _apply_metadata(os.path.join(root, item.relative), item.node, creator)
        self._report(force=True)

    def _create_entries(self, items: list[_Item], root: str, files: list[_FileJob]) -> None:
        empty = {id(job.item): job for job in files if not job.item.node.content}
        for item in items:
            if item.node.type == "dir":
                os.mkdir(os.path.join(root, item.relative), 0o700)
                self.result.dirs += 1
            elif item.node.type == "symlink" and item.node.target is not None:
                os.symlink(item.node.target, os.path.join(root, item.relative))
            elif id(item) in empty:
                empty[id(item)].create()

    async def _group_by_pack(
        self, files: list[_FileJob]
    ) -> dict[str, dict[bytes, list[tuple[_FileJob, int]]]]:
        """pack → blob → every (file, offset) that needs it: each pack is read once."""
        index = await self.repo.index()
        by_pack: dict[str, dict[bytes, list[tuple[_FileJob, int]]]] = {}
        for job in files:
            offset = 0
            for blob_id in job.item.node.content:
                location = index.blobs.get(blob_id)
                if location is None:
                    job.error = f"data blob {blob_id.hex()[:16]} is missing from the repository"
                    break
                by_pack.setdefault(location.pack, {}).setdefault(blob_id, []).append((job, offset))
                offset += location.raw_length
        return by_pack

    async def _restore_pack(self, pack_id: str, wanted: dict[bytes, list[tuple[_FileJob, int]]]) -> None:
        index = await self.repo.index()
        locations = sorted(((index.blobs[blob_id], blob_id) for blob_id in wanted), key=lambda x: x[0].offset)
        start = locations[0][0].offset
        end = max(location.offset + location.length for location, _ in locations)
        try:
            span = await self.repo.storage.get(pack_object_name(pack_id), start, end - start)
        except StorageError as exc:
            for targets in wanted.values():
                for job, _ in targets:
                    job.error = job.error or f"pack {pack_id[:12]} cannot be read: {exc}"
            return
        loop = asyncio.get_running_loop()

        async def write(decoded: list[tuple[BytesLike, list[tuple[_FileJob, int]]]], size: int) -> None:
            try:
                await loop.run_in_executor(self._writer, self._write_decoded, decoded)
            finally:
                await self._decoded.release(size)

        # A pack is decoded a few MiB at a time, each part handed to the writer as it is ready;
        # the bytes decoded but not yet written stay within DECODED_BYTES (memory stays flat).
        writes = []
        for group in _groups(locations, DECODE_GROUP_BYTES):
            decoded = await asyncio.to_thread(self._decode_blobs, span, start, group, wanted)
            size = sum(len(data) for data, _ in decoded)
            await self._decoded.acquire(size)
            writes.append(asyncio.create_task(write(decoded, size)))
        del span
        await asyncio.gather(*writes)

    def _decode_blobs(
        self,
        span: bytes,
        start: int,
        locations: list[tuple[BlobLocation, bytes]],
        wanted: dict[bytes, list[tuple[_FileJob, int]]],
    ) -> list[tuple[BytesLike, list[tuple[_FileJob, int]]]]:
        """Decrypt, decompress and verify a pack's wanted blobs (mostly C code without the GIL)."""
        view = memoryview(span)
        decoded = []
        for location, blob_id in locations:
            targets = [(job, offset) for job, offset in wanted[blob_id] if job.error is None]
            if not targets:
                continue
            payload = view[location.offset - start : location.offset - start + location.length]
            try:
                if len(payload) != location.length:
                    raise CorruptBlob(f"pack {location.pack[:12]} is truncated")
                decoded.append((self.repo.decode_blob(blob_id, BlobType.DATA, payload, location.sealed_key), targets))
            except CorruptBlob as exc:
                for job, _ in targets:
                    job.error = job.error or str(exc)
        return decoded

    def _write_decoded(self, decoded: list[tuple[BytesLike, list[tuple[_FileJob, int]]]]) -> None:
        """Write decoded blobs into their files; runs in the one writer thread.

        All file system calls of a restore happen in this thread. Each call releases and retakes
        the GIL; spread over several threads, every one of them became a hand-over between
        threads (futex waits and context switches), which cost more than the calls themselves.
        """
        for data, targets in decoded:
            for job, offset in targets:
                if job.error is not None:
                    continue
                try:
                    fd = job.open()
                    try:
                        _pwrite_all(fd, data, offset)
                        job.remaining -= len(data)
                        with self._lock:
                            self.progress.bytes_done += len(data)
                            if job.remaining == 0:
                                self.progress.files_done += 1
                        if job.remaining == 0:  # here, on its open fd, rather than by path at the end
                            job.creator.finish(fd, job.item.node)
                    finally:
                        os.close(fd)
                except OSError as exc:
                    job.error = job.error or exc.strerror or str(exc)


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


def _pwrite_all(fd: int, data: BytesLike, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _apply_metadata(path: str, node: Node, creator: _Creator) -> None:
    if not os.path.lexists(path):
        return
    with contextlib.suppress(OSError):
        if os.geteuid() == 0:
            os.lchown(path, node.uid, node.gid)
    if node.type != "symlink":
        with contextlib.suppress(OSError):
            os.chmod(path, creator.mode_of(node))
    with contextlib.suppress(OSError, NotImplementedError):
        os.utime(path, ns=(node.mtime_ns, node.mtime_ns), follow_symlinks=False)


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
    restorer = Restorer(repo, progress, cancel, keep_setid=keep_setid, max_depth=max_depth, max_items=max_items)
    restorer.result.snapshot_id, restorer.result.history = snapshot_id, standing
    if standing != ENDORSED:
        restorer.result.notes.append(history.describe(snapshot_id))
    # Damaged or missing index files cost nothing here: the index is completed from the packs'
    # own headers (in memory; `timevault repo rebuild-index` writes it back).
    index_notes = await repo.repair_index()
    restorer.result.notes.extend(index_notes)
    items = await restorer.plan(snapshot.tree, parsed)
    # Folders on the way to an include are planned too; they alone are not a match.
    if parsed and not any(_wanted(item.parts, parsed)[0] for item in items):
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
        root = fd_path(temp_fd) or os.path.join(os.path.dirname(target), temp_name)
        await restorer.run(items, root)
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
    return restorer.result
