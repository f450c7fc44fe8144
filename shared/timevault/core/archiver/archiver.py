"""The backup engine: walk → chunk → id → dedup → compress → encrypt → pack → index → tree → snapshot.

Stages meet at two small interfaces so the NATS services can run them in different processes:

- `KnownBlobs` answers "which of these blob ids are not stored yet?" (the repository index
  in-process; the catalog service over NATS).
- `BlobSink` receives encoded (compressed, sealed) blobs and makes them durable (a `Packer`
  in-process; uploader services over NATS). `flush` returns only when every blob is durable.

Only the write tier is used: a backup never needs the password. The snapshot is written last,
after the sink confirmed every blob, so a crash never exposes a snapshot with missing data.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeAlias

import msgspec

from timevault.core import crypto
from timevault.core.archiver import warmup
from timevault.core.archiver.excludes import ExcludeOptions, Excludes
from timevault.core.archiver.known_ids import StoredIds
from timevault.core.archiver.parent import ParentLookup
from timevault.core.archiver.walk import (
    Entry,
    LargeFileReader,
    count_tree,
    kind_of,
    list_dir,
    node_for,
    read_small_files,
    same_file,
    same_metadata,
)
from timevault.core.buffers import BytesLike
from timevault.core.chunker import trim_segments
from timevault.core.errors import BackupCanceled, BackupError, RepositoryError
from timevault.core.gcsettings import fewer_collections
from timevault.core.repository import blobs
from timevault.core.repository.blobs import EncodedBlob
from timevault.core.repository.format import BlobType, IndexPack, Node, Snapshot, SnapshotStats, Tree
from timevault.core.repository.idruns import DiskIdSet, IdRuns
from timevault.core.repository.index import Index
from timevault.core.repository.pack import Packer
from timevault.core.repository.repo import Repository

IN_FLIGHT_BYTES = 48 * 1024 * 1024
ENCODE_BATCH_BYTES = 4 * 1024 * 1024
DEDUP_BATCH = 500
PREFETCH_SCANS = 2
# One reader: a second one pinned another file's segments while their chunks waited to be
# encoded, and peak RSS grew by ~100 MiB for no measurable gain on this machine.
LARGE_READERS = 1
_tree_encoder = msgspec.msgpack.Encoder()


class BlobSink(Protocol):
    async def add(self, blob: EncodedBlob) -> None: ...

    async def flush(self) -> None: ...


class KnownBlobs(Protocol):
    async def filter_unknown(self, ids: list[bytes]) -> set[bytes]: ...


CHANGED_WHILE_READ = "changed while it was read"


def left_out(warnings: Sequence[str]) -> list[str]:
    """The warnings about items the snapshot lacks (missing, unreadable, not a file or folder).

    The other warnings are about files that changed while they were read: they are in the
    snapshot, as they were read.
    """
    return [warning for warning in warnings if not warning.endswith(CHANGED_WHILE_READ)]


@dataclass
class Progress:
    """Live counters of a running backup or restore."""

    files_done: int = 0
    bytes_done: int = 0
    files_total: int | None = None
    bytes_total: int | None = None
    started: float = 0.0
    current: str = ""


ProgressCallback = Callable[[Progress], None]


class IndexKnownBlobs:
    """In-process dedup against the repository index."""

    def __init__(self, index: Index) -> None:
        self._index = index

    async def filter_unknown(self, ids: list[bytes]) -> set[bytes]:
        return {blob_id for blob_id in ids if blob_id not in self._index}


class PackerSink:
    """In-process sink: packs blobs straight into the repository and grows its index (if any:
    a backup that deduplicates against `Repository.stored_ids` keeps no index)."""

    def __init__(self, repo: Repository, index: Index | None) -> None:
        async def written(pack: IndexPack) -> None:
            assert index is not None
            index.add_pack(pack)

        # The archiver hands each blob over once (`Archiver.scheduled`): no second set of ids.
        self.packer = Packer(
            repo.storage, repo.write_keys.meta_key, on_written=written if index is not None else None, dedup=False
        )

    async def add(self, blob: EncodedBlob) -> None:
        await self.packer.add(blob)

    async def flush(self) -> None:
        await self.packer.flush()


class _NothingStored:
    """Every blob is new: the archiver's set of handed-on ids already holds what is stored."""

    async def filter_unknown(self, ids: list[bytes]) -> set[bytes]:
        return set(ids)


class ByteBudget:
    """Bounds the bytes of chunks read but not yet packed (memory does not grow with data)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._cond = asyncio.Condition()

    async def acquire(self, n: int) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self._used == 0 or self._used + n <= self._limit)
            self._used += n

    async def release(self, n: int) -> None:
        async with self._cond:
            self._used -= n
            self._cond.notify_all()


class Archiver:
    def __init__(
        self,
        repo: Repository,
        *,
        sink: BlobSink,
        known: KnownBlobs,
        parent: ParentLookup,
        progress: ProgressCallback | None,
        cancel: asyncio.Event | None,
        workers: int,
        in_flight: int = IN_FLIGHT_BYTES,
        excludes: Excludes | None = None,
        scheduled: DiskIdSet | None = None,
        spill_dir: str | None = None,
        on_scanned: Callable[[bytes], None] | None = None,
    ) -> None:
        self.repo = repo
        self.excludes = excludes
        self.sink = sink
        self.known = known
        self.parent = parent
        self.params = repo.chunker_params
        self.id_key = repo.write_keys.id_key
        self.session = crypto.SealingSession(repo.write_keys.public_key)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="encode")
        self.budget = ByteBudget(in_flight)
        # Blob ids handed on in this run (and, given `scheduled`, those stored before), and
        # every blob the snapshot needs (data and trees, for its list of references): one
        # per blob of the whole tree, so both are kept on disk (`idruns`), not in memory.
        self.scheduled = scheduled if scheduled is not None else DiskIdSet(spill_dir)
        self._batch: list[tuple[bytes, BlobType, BytesLike]] = []
        # Folder scans started ahead of the walk, in its order (depth first, by name), and the
        # folders not scanned yet, in that order: a folder's subfolders, then its later siblings.
        self._scans: dict[bytes, asyncio.Task[tuple[list[Entry | Node], list[str]]]] = {}
        self._upcoming: collections.deque[bytes] = collections.deque()
        self._on_scanned = on_scanned  # a folder's small files are read (paces the warm-up child)
        self._large_reads: dict[bytes, asyncio.Task[tuple[list[bytes], int] | None]] = {}
        self._read_slots = asyncio.Semaphore(LARGE_READERS)
        self._batch_bytes = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.failure: BaseException | None = None
        self.stats = SnapshotStats()
        self.warnings: list[str] = []
        self.referenced = IdRuns(spill_dir)
        self.progress = Progress(started=time.monotonic())
        self._on_progress = progress
        self._cancel = cancel
        self._last_report = 0.0

    # --- blobs ---------------------------------------------------------------------------

    async def _store_new(self, chunks: Sequence[tuple[bytes, BytesLike]], blob_type: BlobType) -> None:
        """Queue chunks not seen in this run; they are checked and encoded in batches.

        Batching keeps the dedup lookups (a NATS request each in the services) and the thread
        hops per batch of chunks, not per small file.
        """
        for blob_id, data in chunks:
            if not self.scheduled.add(blob_id):
                continue
            self._batch.append((blob_id, blob_type, data))
            self._batch_bytes += len(data)
            if self._batch_full():
                await self._dispatch()

    def _queue_new(self, chunks: Sequence[tuple[bytes, BytesLike]], blob_type: BlobType) -> None:
        """`_store_new` without handing the batch on: the caller dispatches it when full."""
        for blob_id, data in chunks:
            if self.scheduled.add(blob_id):
                self._batch.append((blob_id, blob_type, data))
                self._batch_bytes += len(data)

    def _batch_full(self) -> bool:
        return len(self._batch) >= DEDUP_BATCH or self._batch_bytes >= ENCODE_BATCH_BYTES

    async def _dispatch(self) -> None:
        """Hand the batch to a task that asks which blobs are new, encodes and sinks those.

        The walk goes on meanwhile: over NATS the question is a round trip to the catalog, and
        waiting for it here held up reading for ~300 round trips per GiB.
        """
        batch, size = self._batch, self._batch_bytes
        self._batch, self._batch_bytes = [], 0
        if not batch:
            return
        self._raise_if_failed()
        await self.budget.acquire(size)
        task = asyncio.create_task(self._encode_and_sink(batch, size))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _encode_and_sink(self, batch: list[tuple[bytes, BlobType, BytesLike]], size: int) -> None:
        try:
            unknown = await self.known.filter_unknown([blob_id for blob_id, _, _ in batch])
            batch = [item for item in batch if item[0] in unknown]
            if not batch:
                return
            loop = asyncio.get_running_loop()
            encoded = await loop.run_in_executor(self.pool, _encode_many, self.session, batch)
            # The plaintext chunks (views that keep file segments alive) are not needed
            # while the sink takes its time: over NATS it may wait for the upload window.
            batch.clear()
            for blob in encoded:
                await self.sink.add(blob)
                self.stats.added_size += len(blob.payload)
                self.stats.added_blobs += 1
        except BaseException as exc:  # kept and re-raised by the main flow
            if self.failure is None:
                self.failure = exc
        finally:
            del batch
            trim_segments()
            await self.budget.release(size)

    def _raise_if_failed(self) -> None:
        if self.failure is not None:
            raise self.failure
        if self._cancel is not None and self._cancel.is_set():
            raise BackupCanceled("backup canceled")

    async def _store_tree(self, nodes: list[Node]) -> bytes:
        data = _tree_encoder.encode(Tree(nodes))
        tree_id = crypto.blob_id(self.id_key, data)
        self.referenced.add(tree_id)
        await self._store_new([(tree_id, data)], BlobType.TREE)
        return tree_id

    # --- files and folders ---------------------------------------------------------------

    def _report(self, path: bytes, force: bool = False) -> None:
        if self._on_progress is None:
            return
        now = time.monotonic()
        if force or now - self._last_report >= 0.1:
            self._last_report = now
            self.progress.current = os.fsdecode(path)
            self._on_progress(self.progress)

    async def _scan(self, path: bytes) -> tuple[list[Entry | Node], list[str]]:
        previous = await self.parent.previous_dir(path)
        entries, to_read, warnings = list_dir(path, previous, self.excludes)
        if to_read:
            warnings += await asyncio.to_thread(read_small_files, to_read, self.params, self.id_key)
            entries = [entry for entry in entries if isinstance(entry, Node) or entry.error is None]
        return entries, warnings

    def _prefetch_scans(self) -> None:
        """Scan the next few folders of the walk in the background while this one is processed:
        its subfolders first, then its later siblings (a folder of files only has no subfolders
        to look ahead to, and most folders are such)."""
        while len(self._scans) < PREFETCH_SCANS and self._upcoming:
            path = self._upcoming.popleft()
            self._scans[path] = asyncio.create_task(self._scan(path))

    def _take_scan(self, path: bytes) -> asyncio.Task[tuple[list[Entry | Node], list[str]]]:
        """This folder's scan: the one started ahead, or one started now."""
        if path not in self._scans:
            if self._upcoming and self._upcoming[0] == path:
                self._upcoming.popleft()
            return asyncio.create_task(self._scan(path))
        # A scan of a folder that comes before this one was skipped by the walk: it would hold
        # its place ahead forever.
        here = warmup.order(path)
        for started in list(self._scans):
            if warmup.order(started) < here:
                self._scans.pop(started).cancel()
        return self._scans.pop(path)

    async def archive_dir(self, path: bytes) -> bytes:
        self._raise_if_failed()
        scan = self._take_scan(path)
        try:
            entries, warnings = await scan
        except OSError as exc:
            self.warnings.append(f"skipped {os.fsdecode(path)}: {exc.strerror}")
            return await self._store_tree([])
        self.warnings.extend(warnings)
        if self._on_scanned is not None:
            self._on_scanned(path)  # here, not when the scan ends: in the walk's order
        self._upcoming.extendleft(
            reversed([entry.path for entry in entries if type(entry) is Entry and entry.kind == "dir"])
        )
        self._prefetch_scans()
        self._start_large_reads(entries)
        nodes: list[Node] = []
        reused = reused_bytes = 0
        for entry in entries:
            # Most files of an incremental backup are reused as they were (the scan gives their
            # previous nodes), and most of a first backup were read by the scan: no coroutine
            # for either.
            if isinstance(entry, Node):
                nodes.append(entry)
                reused += 1
                reused_bytes += entry.size
                continue
            node = self._without_reading(entry)
            if node is None:
                node = await self.archive_entry(entry)
            elif self._batch_full():
                await self._dispatch()
            if node is not None:
                nodes.append(node)
        if reused:
            self._count_reused(path, reused, reused_bytes)
        return await self._folder_done(path, nodes)

    async def _folder_done(self, path: bytes, nodes: list[Node]) -> bytes:
        """Its files' blobs are referenced (one call for the folder), its row of the next files
        cache is written, and its tree is stored; returns the tree's id."""
        self.referenced.update([blob_id for node in nodes for blob_id in node.content])
        self.parent.record(path, nodes)
        return await self._store_tree(nodes)

    def _start_large_reads(self, entries: list[Entry | Node]) -> None:
        """Start reading a folder's large changed files in the background (LARGE_READERS at a
        time); nodes are still assembled in name order."""
        for entry in entries:
            if type(entry) is Entry and entry.kind == "file" and entry.unchanged is None and entry.chunked is None:
                self._large_reads[entry.path] = asyncio.create_task(self._read_large_limited(entry))

    def _without_reading(self, entry: Entry) -> Node | None:
        """The node of a file that needs no more reading (unchanged, or read whole by the scan:
        its new chunks then join the batch); None for anything else."""
        node = self._reused(entry)
        if node is None and entry.chunked is not None and entry.unchanged is None:
            node = self._read_file_node(entry)
        return node

    def _read_file_node(self, entry: Entry) -> Node:
        """The node of a file the scan read whole; its new chunks join the batch to encode."""
        chunked = entry.chunked
        assert chunked is not None
        node = node_for(entry)
        node.content = chunked.ids
        node.size = chunked.size  # what was read, even if the file changed meanwhile
        self._queue_new(chunked.chunks, BlobType.DATA)
        chunked.chunks = []
        if entry.changed_while_reading:
            node.changed_while_reading = True
            self.warnings.append(f"{os.fsdecode(entry.path)} {CHANGED_WHILE_READ}")
        return self._counted(entry, node)

    async def _read_large_limited(self, entry: Entry) -> tuple[list[bytes], int] | None:
        async with self._read_slots:
            return await self._read_large(entry)

    async def archive_entry(self, entry: Entry) -> Node | None:
        done = self._without_reading(entry)
        if done is not None:
            if self._batch_full():
                await self._dispatch()
            return done
        node = node_for(entry)
        if entry.kind == "dir":
            node.subtree = await self.archive_dir(entry.path)
            self.stats.dirs += 1
            return node
        if entry.kind != "file":
            return node
        if entry.unchanged is not None:
            node.content = entry.unchanged.content
            self.stats.unchanged_files += 1
        else:
            reading = self._large_reads.pop(entry.path, None)
            read = await reading if reading is not None else await self._read_large(entry)
            if read is None:
                return None
            node.content, node.size = read  # the bytes actually read, even if the file changed
        if entry.changed_while_reading:
            node.changed_while_reading = True
            self.warnings.append(f"{os.fsdecode(entry.path)} {CHANGED_WHILE_READ}")
        return self._counted(entry, node)

    def _reused(self, entry: Entry) -> Node | None:
        """The previous node, as it was, for an unchanged file whose metadata matches too."""
        previous = entry.unchanged
        if previous is None or not same_metadata(previous, entry.st):
            return None
        self.stats.unchanged_files += 1
        return self._counted(entry, previous)

    def _count_reused(self, folder: bytes, files: int, size: int) -> None:
        """`_counted` for a folder's files reused as they were, at once."""
        self.stats.files += files
        self.stats.unchanged_files += files
        self.stats.size += size
        self.progress.files_done += files
        self.progress.bytes_done += size
        if self._on_progress is not None:
            self._report(folder)

    def _counted(self, entry: Entry, node: Node) -> Node:
        self.stats.files += 1
        self.stats.size += node.size
        self.progress.files_done += 1
        self.progress.bytes_done += node.size
        if self._on_progress is not None:
            self._report(entry.path)
        return node

    async def _read_large(self, entry: Entry) -> tuple[list[bytes], int] | None:
        """(blob ids, bytes read) of a large file, or None when it cannot be read (a warning)."""
        try:
            reader = await asyncio.to_thread(LargeFileReader, entry, self.params, self.id_key)
        except OSError as exc:
            self.warnings.append(f"skipped {os.fsdecode(entry.path)}: {exc.strerror}")
            return None
        ids: list[bytes] = []
        try:
            while True:
                self._raise_if_failed()
                try:
                    batch = await asyncio.to_thread(reader.next_batch)
                except OSError as exc:
                    self.warnings.append(f"skipped {os.fsdecode(entry.path)}: {exc.strerror}")
                    return None
                if not batch:
                    break
                ids.extend(blob_id for blob_id, _ in batch)
                await self._store_new(batch, BlobType.DATA)
        finally:
            entry.changed_while_reading = await asyncio.to_thread(reader.close)
        return ids, reader.size

    # --- the whole backup ----------------------------------------------------------------

    async def archive_roots(self, sources: list[bytes]) -> bytes:
        """The root tree mirrors the sources' absolute paths, like restic's."""
        return await self._archive_level(b"/", _path_trie(sources))

    async def _archive_level(self, path: bytes, trie: _Trie) -> bytes:
        nodes: list[Node] = []
        for name in sorted(trie):
            below = trie[name]  # None: a source itself; else the folders on the way to sources
            full = os.path.join(path, name)
            st = await asyncio.to_thread(os.lstat, full)
            entry = Entry(name, full, st, kind_of(st.st_mode))
            if below is not None and entry.kind == "symlink":
                # A folder on the way to a source may be a symlink (/home -> /usr/home): follow
                # it, or every source below it would silently be left out of the snapshot.
                st = await asyncio.to_thread(os.stat, full)
                entry = Entry(name, full, st, kind_of(st.st_mode))
            if below is not None and entry.kind == "dir":
                node = node_for(entry)
                node.subtree = await self._archive_level(full, below)
                nodes.append(node)
                continue
            if entry.kind == "symlink":
                entry.target = await asyncio.to_thread(os.readlink, full)
            elif entry.kind == "file":
                previous = await self.parent.previous_dir(path)
                before = previous.get(name)
                if same_file(before, st):
                    entry.unchanged = before
            elif entry.kind == "other":
                self.warnings.append(f"skipped {os.fsdecode(full)}: not a regular file, folder or symlink")
                continue
            archived = await self.archive_entry(entry)
            if archived is not None:
                nodes.append(archived)
        return await self._folder_done(path, nodes)

    async def finish(self) -> None:
        """Wait for every blob to be encoded and durably stored."""
        await self._dispatch()
        while self.tasks:
            await asyncio.gather(*list(self.tasks))
        self._raise_if_failed()
        await self.sink.flush()

    async def abort(self) -> None:
        pending = [*self.tasks, *self._scans.values(), *self._large_reads.values()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.scheduled.close()


class _Finished:
    """Stands in for the sink and the dedup index once every blob is stored."""

    async def add(self, blob: EncodedBlob) -> None:
        raise RuntimeError("the backup's blobs are all stored")

    async def flush(self) -> None:
        pass

    async def filter_unknown(self, ids: list[bytes]) -> set[bytes]:
        raise RuntimeError("the backup's blobs are all stored")


_NOTHING_KNOWN: KnownBlobs = _Finished()
_NO_SINK: BlobSink = _Finished()


def _encode_many(session: crypto.SealingSession,
                 batch: list[tuple[bytes, BlobType, BytesLike]]) -> list[EncodedBlob]:
    return blobs.encode_many(session, batch)


_Trie: TypeAlias = "dict[bytes, _Trie | None]"


def _path_trie(sources: list[bytes]) -> _Trie:
    """Nested dict of path components; a None leaf is a source archived whole."""
    trie: _Trie = {}
    for source in sorted(sources, key=len):
        parts = [part for part in source.split(b"/") if part]
        level = trie
        for i, part in enumerate(parts):
            if part in level and level[part] is None:
                break  # an enclosing source already covers this one
            if i == len(parts) - 1:
                level[part] = None
            else:
                below = level.setdefault(part, {})
                assert below is not None  # a None here ended the loop above
                level = below
    return trie


def _spill_dir(cache_dir: str | None) -> str | None:
    """Where a backup's sets of ids spill: beside the files cache (on disk, unlike a /tmp that
    may be memory), else the system's temp folder."""
    if cache_dir is None:
        return None
    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
    except OSError:
        return None
    return cache_dir


def normalize_sources(paths: list[str]) -> list[bytes]:
    sources = []
    for path in paths:
        absolute = os.path.abspath(os.path.expanduser(path))
        if not os.path.lexists(absolute):
            raise BackupError(f"source {path} does not exist")
        sources.append(os.fsencode(absolute))
    if not sources:
        raise BackupError("nothing to back up: give at least one path")
    if any(source == b"/" for source in sources):
        raise BackupError("backing up / as a whole is not supported; name the folders")
    return sources


async def backup(
    repo: Repository,
    paths: list[str],
    *,
    sink: BlobSink | None = None,
    known: KnownBlobs | None = None,
    progress: ProgressCallback | None = None,
    cancel: asyncio.Event | None = None,
    cache_dir: str | None = None,
    plan: str | None = None,
    tags: list[str] | None = None,
    workers: int = 2,
    in_flight: int = IN_FLIGHT_BYTES,
    excludes: ExcludeOptions | None = None,
    on_locked: Callable[[], Awaitable[None]] | None = None,
) -> tuple[str, Snapshot]:
    """Back up `paths` into `repo`; returns (snapshot id, snapshot).

    `in_flight` bounds the bytes of chunks read but not yet handed to the sink (memory).
    `excludes` says what to leave out (`timevault.core.archiver.excludes`); None leaves out nothing.
    `on_locked` runs once the backup holds its lock, before anything is deduplicated: the
    services bring their chunk index up to date with the repository there (a prune that
    marked data after that moment waits for this backup; see `timevault.core.prune`).
    """
    sources = normalize_sources(paths)
    repo.require_valid_config()  # a changed or out-of-range config is never obeyed
    rules = Excludes(excludes, sources) if excludes is not None and excludes.active else None
    started = datetime.now(UTC).isoformat()
    with fewer_collections():  # millions of small objects, freed by reference counting
        async with repo.lock(kind="backup") as held, warmup.warming(sources) as warming_child:
            if on_locked is not None:
                await on_locked()
            source_names = sorted(os.fsdecode(s) for s in sources)
            parent_id, parent = await ParentLookup.choose(repo, source_names, plan, cache_dir)
            if warming_child is not None and not parent.knows_files:
                warming_child.warm_contents()  # every file is read: warm them ahead too
            spill_dir = _spill_dir(cache_dir)
            own_index = False
            index: Index | None = None
            stored: DiskIdSet | None = None
            stored_ids: StoredIds | None = None
            if sink is None or known is None:  # in-process: pack and dedup against the index here
                # Deduplicating needs only which blobs exist; reading the parent's trees needs their
                # locations too, and then the one index with locations serves both.
                if parent.reads_trees:
                    index = await repo.current_index()
                    known = known or IndexKnownBlobs(index)
                elif known is None:
                    # Which blobs exist, on disk: they seed the archiver's set of handed-on ids,
                    # so one lookup answers "stored or already scheduled". Kept between backups
                    # in the cache folder (`known_ids`).
                    stored_ids = await StoredIds.load(repo, cache_dir, spill_dir)
                    stored = stored_ids.ids
                    known = _NothingStored()
                own_index = index is None
                sink = sink or PackerSink(repo, index)
            archiver = Archiver(
                repo,
                sink=sink,
                known=known,
                parent=parent,
                progress=progress,
                cancel=cancel,
                workers=workers,
                in_flight=in_flight,
                excludes=rules,
                scheduled=stored,
                spill_dir=spill_dir,
                on_scanned=warming_child.scanned if warming_child is not None else None,
            )
            # Totals only matter to someone watching; counting competes with the backup for I/O.
            counter = asyncio.create_task(asyncio.to_thread(count_tree, sources, rules)) if progress else None

            def totals_known(task: asyncio.Task[tuple[int, int]]) -> None:
                if not task.cancelled() and task.exception() is None:
                    archiver.progress.files_total, archiver.progress.bytes_total = task.result()

            if counter is not None:
                counter.add_done_callback(totals_known)
            try:
                root = await archiver.archive_roots(sources)
                await archiver.finish()
                if stored_ids is not None and isinstance(sink, PackerSink):
                    # Every blob is durable and indexed now, whether or not the snapshot follows.
                    await asyncio.to_thread(stored_ids.save, sink.packer.index_files)
            except BaseException:
                parent.abandon()
                await archiver.abort()
                archiver.referenced.close()  # its file: the services' snapshotter runs on
                raise
            finally:
                warmup.stop(warming_child)
                if counter is not None:
                    counter.cancel()
                parent.close()
                archiver.close()
                if own_index:
                    repo.forget_index()  # this backup's packs went to its own index, not the cached one
            # What only deduplication needed goes before the list of references is built.
            archiver.known = known = _NOTHING_KNOWN
            archiver.sink = sink = _NO_SINK
            del index
            # Garbage collection trusts that a backup whose lock lapsed does not save (HeldLock).
            try:
                held.ensure_unbroken()
            except BaseException:
                archiver.referenced.close()
                raise
            near = None
            if parent_id is not None:
                with contextlib.suppress(RepositoryError):
                    near = (await repo.load_snapshot(parent_id)).references or None
            try:
                references = await repo.save_references(archiver.referenced, near)
            finally:
                archiver.referenced.close()
            if rules is not None:  # ignore files that could not be used: said once each
                archiver.warnings.extend(dict.fromkeys(rules.warnings))
            snapshot = Snapshot(
                time=started,
                finished=datetime.now(UTC).isoformat(),
                hostname=socket.gethostname(),
                paths=source_names,
                tree=root,
                stats=archiver.stats,
                parent=parent_id,
                references=references,
                warnings=len(archiver.warnings),
                sealed_warnings=repo.seal_warnings(archiver.session, archiver.warnings),
                tags=tags or [],
                plan=plan,
            )
            await repo.verify_intact()  # a vanished or replaced location fails the backup, never commits
            snapshot_id = await repo.save_snapshot(snapshot)
            if repo.can_endorse:  # the password is here: its holder vouches for what it just wrote
                await repo.endorse()
            await parent.save(snapshot_id)
            archiver._report(b"", force=True)
            return snapshot_id, snapshot
