"""What the previous backup knew about each file, so unchanged files are not read again.

A file is unchanged when its size, mtime and inode match the previous snapshot's entry; its
blob ids are then reused without reading it. The previous state comes from:

- the parent snapshot's trees, when the repository is open with the password, or
- a local files cache (like borg's), for the write-only tier that cannot read trees. The cache
  is encrypted with the metadata key (which the services hold) and trusted only for the
  snapshot it was written with. It holds no names or paths: each file is found under a keyed
  hash of its path (16 bytes), with the stat fields that tell whether it changed and its blob
  ids. docs/security.md says what that still tells a holder of the write keys.

Neither is held whole: memory must not grow with the number of files. The cache is an SQLite
file with one encrypted row per folder, read when the walk reaches the folder and written
when the folder is done; the parent's trees are read folder by folder and dropped once the
folder has been archived.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import secrets
import sqlite3
from collections.abc import Callable
from typing import TypeAlias

import msgspec

from timevault.core import crypto
from timevault.core.archiver.walk import PreviousDir, folder_prefix
from timevault.core.repository.blobs import CorruptBlob
from timevault.core.repository.format import Node
from timevault.core.repository.repo import Repository, RepositoryError


class CachedFile(msgspec.Struct, array_like=True):
    """What the files cache keeps of one file: enough to tell it is unchanged, and its blobs."""

    mode: int
    mtime_ns: int
    size: int
    content: list[bytes]
    inode: int
    device: int
    uid: int
    gid: int


log = logging.getLogger(__name__)
PATH_KEY_SIZE = 16
GENERATION_SIZE = 16
PREFETCH_TREES = 4
# SQLite's page cache for the files cache, in KiB (negative: a size, not a page count).
_CACHE_PAGES_KIB = -2048
_folder_encoder = msgspec.msgpack.Encoder()
_folder_decoder = msgspec.msgpack.Decoder(dict[bytes, CachedFile])


_Known: TypeAlias = tuple[bytes, Node | None, CachedFile | None]
"""What a lookup found of a name: (path key, the node handed out, its cache entry)."""


def _row_aad(generation: bytes, folder_key: bytes) -> bytes:
    """A row is bound to its folder and to the one cache it was written into: rows cannot be
    swapped between folders, nor mixed in from an older cache."""
    return b"files-cache-folder" + generation + folder_key


class _CacheWriter:
    """The next files cache, written folder by folder into `<path>.tmp`, renamed by `commit`."""

    def __init__(self, repo: Repository, path: str) -> None:
        self._repo = repo
        self._path = path
        self._temp = f"{path}.tmp"
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temp)  # left by a backup that did not finish
        os.close(os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self.generation = secrets.token_bytes(GENERATION_SIZE)
        self._db: sqlite3.Connection | None = sqlite3.connect(
            self._temp, isolation_level=None, check_same_thread=False
        )
        # A cache lost in a crash is only re-read files: no journal, no fsync.
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(f"PRAGMA cache_size={_CACHE_PAGES_KIB}")
        self._db.execute("CREATE TABLE meta (value BLOB NOT NULL)")
        self._db.execute("CREATE TABLE folders (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID")
        self._db.execute("BEGIN")

    def put(self, folder_key: bytes, files: dict[bytes, CachedFile]) -> None:
        if self._db is None:
            return
        sealed = self._repo.encrypt_meta(_folder_encoder.encode(files), _row_aad(self.generation, folder_key))
        self._db.execute("INSERT OR REPLACE INTO folders VALUES (?, ?)", (folder_key, sealed))

    def commit(self, snapshot_id: str) -> None:
        """Name the snapshot the cache describes and put it in place of the previous one."""
        if self._db is None:
            return
        meta = self._repo.encrypt_meta(self.generation + snapshot_id.encode(), b"files-cache")
        self._db.execute("INSERT INTO meta VALUES (?)", (meta,))
        self._db.execute("COMMIT")
        self._db.close()
        self._db = None
        os.replace(self._temp, self._path)

    def discard(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temp)


class _CacheReader:
    """The files cache of the parent snapshot, read one folder at a time."""

    def __init__(self, repo: Repository, db: sqlite3.Connection, generation: bytes) -> None:
        self._repo = repo
        self._db = db
        self._generation = generation

    @staticmethod
    def open(repo: Repository, path: str, snapshot_id: str) -> _CacheReader | None:
        """The cache at `path` if it is intact and describes `snapshot_id`; else None."""
        try:
            db = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error:
            return None
        try:
            db.execute(f"PRAGMA cache_size={_CACHE_PAGES_KIB}")
            row = db.execute("SELECT value FROM meta").fetchone()
            meta = repo.decrypt_meta(row[0], b"files-cache") if row else b""
        except (sqlite3.Error, crypto.Unauthenticated, TypeError):
            meta = b""
        generation, named = meta[:GENERATION_SIZE], meta[GENERATION_SIZE:]
        if len(generation) != GENERATION_SIZE or named != snapshot_id.encode():
            db.close()
            return None
        return _CacheReader(repo, db, generation)

    def folder(self, folder_key: bytes) -> dict[bytes, CachedFile]:
        """The folder's files by path key; empty when the row is missing or damaged (re-read)."""
        try:
            row = self._db.execute("SELECT value FROM folders WHERE key = ?", (folder_key,)).fetchone()
            if row is None:
                return {}
            return _folder_decoder.decode(
                self._repo.decrypt_meta(row[0], _row_aad(self._generation, folder_key))
            )
        except (sqlite3.Error, crypto.Unauthenticated, msgspec.DecodeError, TypeError):
            return {}

    def close(self) -> None:
        self._db.close()


class ParentLookup:
    """No previous state: every file is read."""

    reads_trees = False  # whether it reads the parent's trees (and so needs blob locations)
    knows_files = False  # whether it knows any file from before (else every file is read)

    def __init__(self, repo: Repository, cache_path: str | None = None) -> None:
        self._repo = repo
        self._cache_path = cache_path
        self._path_key = crypto.subkey(repo.write_keys.meta_key, "files cache path")
        self._writer: _CacheWriter | None = None
        # What a folder's lookups found, by folder, until `record` writes the folder's row:
        # name -> (path key, the node handed out, its cache entry). One keyed hash per file,
        # and an unchanged file's entry goes into the next cache as it was read.
        self._known: dict[bytes, dict[bytes, _Known]] = {}

    async def previous_dir(self, path: bytes) -> PreviousDir:
        return {}

    def path_key(self, path: bytes) -> bytes:
        """The name of a file (or folder) in the cache: a keyed hash of its path, never the path."""
        return crypto.keyed_hash(self._path_key, path)[:PATH_KEY_SIZE]

    def name_keys(self, folder: bytes) -> Callable[[bytes], bytes]:
        """`path_key` of each name in `folder`, the folder's path hashed once for them all."""
        return crypto.PrefixedKeyedHash(self._path_key, folder_prefix(folder), PATH_KEY_SIZE)

    def record(self, path: bytes, nodes: list[Node]) -> None:
        """The folder `path` is archived: write its files' row of the next cache."""
        known = self._known.pop(path, None) or {}
        if self._cache_path is None:
            return
        name_key: Callable[[bytes], bytes] | None = None
        files: dict[bytes, CachedFile] = {}
        for node in nodes:
            if node.type != "file" or node.changed_while_reading:  # a torn read is read again
                continue
            found = known.get(node.name)
            if found is not None and found[1] is node and found[2] is not None:  # reused as it was
                files[found[0]] = found[2]
                continue
            if found is not None:
                key = found[0]
            else:
                name_key = name_key or self.name_keys(path)
                key = name_key(node.name)
            files[key] = CachedFile(
                node.mode, node.mtime_ns, node.size, node.content, node.inode, node.device, node.uid, node.gid
            )
        if files:
            self._cache_step(lambda writer: writer.put(self.path_key(path), files))

    def _cache_step(self, step: Callable[[_CacheWriter], None]) -> None:
        """Run one step of writing the next cache. A cache that cannot be written (a full or
        read-only disk) never fails the backup: it is dropped, and the next backup reads the
        parent's trees, or the files, instead."""
        try:
            if self._writer is None:
                assert self._cache_path is not None
                self._writer = _CacheWriter(self._repo, self._cache_path)
            step(self._writer)
        except (OSError, sqlite3.Error) as exc:
            log.warning("the files cache is not written: %s", exc)
            self.abandon()
            self._cache_path = None

    def close(self) -> None:
        """Stop any background work and let go of the previous state (see _TreeLookup)."""

    def abandon(self) -> None:
        """The backup failed: the next cache is not written (the previous one stays)."""
        if self._writer is not None:
            self._writer.discard()
            self._writer = None

    async def save(self, snapshot_id: str) -> None:
        if self._cache_path is None:
            return
        # Nothing recorded (every source left out) still writes an empty cache for this snapshot.
        await asyncio.to_thread(self._cache_step, lambda writer: writer.commit(snapshot_id))
        self._writer = None

    @staticmethod
    async def choose(
        repo: Repository, paths: list[str], plan: str | None, cache_dir: str | None
    ) -> tuple[str | None, ParentLookup]:
        """Pick the latest snapshot of the same paths (and plan) and a way to read its state."""
        cache_path = os.path.join(cache_dir, f"{repo.config.id}.files") if cache_dir else None
        candidates = [
            (snapshot_id, snapshot)
            for snapshot_id, snapshot in await repo.list_snapshots(damaged=[])
            if snapshot.paths == paths and (plan is None or snapshot.plan == plan)
        ]
        if not candidates:
            return None, ParentLookup(repo, cache_path)
        parent_id, parent = candidates[-1]
        if cache_path is not None:
            reader = await asyncio.to_thread(_CacheReader.open, repo, cache_path, parent_id)
            if reader is not None:
                return parent_id, _CacheLookup(repo, cache_path, reader)
        if repo.can_read:
            return parent_id, _TreeLookup(repo, cache_path, parent.tree)
        return parent_id, ParentLookup(repo, cache_path)


class _CachedDir:
    """One folder's view of the files cache: entries are found by the hash of their path."""

    def __init__(
        self, lookup: ParentLookup, path: bytes, files: dict[bytes, CachedFile], known: dict[bytes, _Known]
    ) -> None:
        self._name_key = lookup.name_keys(path) if files else None
        self._files = files
        self._known = known  # what was found here, for the next cache's row of this folder

    def get(self, name: bytes, /) -> Node | None:
        if self._name_key is None:
            return None
        key = self._name_key(name)
        cached = self._files.get(key)
        if cached is None:
            self._known[name] = (key, None, None)
            return None
        node = Node(
            name=name,
            type="file",
            mode=cached.mode,
            mtime_ns=cached.mtime_ns,
            size=cached.size,
            content=cached.content,
            inode=cached.inode,
            device=cached.device,
            uid=cached.uid,
            gid=cached.gid,
        )
        self._known[name] = (key, node, cached)
        return node


class _CacheLookup(ParentLookup):
    knows_files = True

    def __init__(self, repo: Repository, cache_path: str, reader: _CacheReader) -> None:
        super().__init__(repo, cache_path)
        self._reader: _CacheReader | None = reader

    async def previous_dir(self, path: bytes) -> PreviousDir:
        if self._reader is None:
            return {}
        # One indexed read and one decryption per folder: cheaper on the event loop than a hop.
        known = self._known[path] = {}
        return _CachedDir(self, path, self._reader.folder(self.path_key(path)), known)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class _TreeLookup(ParentLookup):
    reads_trees = True
    knows_files = True

    def __init__(self, repo: Repository, cache_path: str | None, root: bytes) -> None:
        super().__init__(repo, cache_path)
        self._root = root
        # Folders being archived (and their ancestors): each is dropped when `record` says it
        # is done, so this holds one path from the root down, not the whole parent snapshot.
        self._dirs: dict[bytes, dict[bytes, Node]] = {}
        # Trees fetched ahead, in the walk's (depth-first, name) order, at most PREFETCH_TREES.
        self._prefetched: dict[bytes, asyncio.Task[dict[bytes, Node]]] = {}
        self._upcoming: collections.deque[bytes] = collections.deque()
        self._order: collections.deque[asyncio.Task[dict[bytes, Node]]] = collections.deque()

    async def previous_dir(self, path: bytes) -> PreviousDir:
        if path in self._dirs:
            return self._dirs[path]
        if path == b"/":
            found = await self._load(self._root)
        else:
            parent_dir, name = os.path.split(path)
            node = (await self.previous_dir(parent_dir)).get(name)  # a dict here
            found = await self._load(node.subtree) if node and node.type == "dir" and node.subtree else {}
        self._dirs[path] = found
        return found

    def record(self, path: bytes, nodes: list[Node]) -> None:
        super().record(path, nodes)
        self._dirs.pop(path, None)

    def close(self) -> None:
        for task in self._prefetched.values():
            task.cancel()
        self._prefetched.clear()
        self._upcoming.clear()
        self._order.clear()
        self._dirs.clear()

    async def _load(self, tree_id: bytes) -> dict[bytes, Node]:
        task = self._prefetched.pop(tree_id, None)
        if task is not None:
            # Trees fetched ahead of this one that the walk did not ask for (their folders were
            # deleted or left out) would hold their place forever: let them go.
            for skipped in list(itertools.takewhile(lambda t: t != task, self._order)):
                self._order.popleft()
                for other_id, other in list(self._prefetched.items()):
                    if other is skipped:
                        other.cancel()
                        del self._prefetched[other_id]
            if self._order and self._order[0] is task:
                self._order.popleft()
        found = await task if task is not None else await self._fetch(tree_id)
        self._prefetch()
        return found

    async def _fetch(self, tree_id: bytes) -> dict[bytes, Node]:
        try:
            tree = await self._repo.load_tree(tree_id)
        except (CorruptBlob, RepositoryError):
            return {}  # a damaged parent only costs re-reading files
        # The walk visits these subfolders next (before this folder's later siblings).
        subtrees = [node.subtree for node in tree.nodes if node.type == "dir" and node.subtree]
        self._upcoming.extendleft(reversed(subtrees))
        return {node.name: node for node in tree.nodes}

    def _prefetch(self) -> None:
        """Fetch the next few trees the walk will want; a few, not a whole folder's worth of
        subfolders (each fetched tree is held until the walk gets to it)."""
        while len(self._prefetched) < PREFETCH_TREES and self._upcoming:
            tree_id = self._upcoming.popleft()
            if tree_id not in self._prefetched:
                task = asyncio.create_task(self._fetch(tree_id))
                self._prefetched[tree_id] = task
                self._order.append(task)
