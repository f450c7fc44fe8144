"""What the previous backup knew about each file, so unchanged files are not read again.

A file is unchanged when its size, mtime and inode match the previous snapshot's entry; its
blob ids are then reused without reading it. The previous state comes from:

- the parent snapshot's trees, when the repository is open with the password, or
- a local files cache (like borg's), for the write-only tier that cannot read trees. The cache
  is encrypted with the metadata key (which the services hold) and trusted only for the
  snapshot it was written with. It holds no names or paths: each file is found under a keyed
  hash of its path (16 bytes), with the stat fields that tell whether it changed and its blob
  ids. docs/security.md says what that still tells a holder of the write keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import msgspec

from timevault.core import crypto
from timevault.core.archiver.walk import PreviousDir
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


class _FilesCache(msgspec.Struct):
    snapshot: str
    files: dict[bytes, CachedFile]


PATH_KEY_SIZE = 16


class ParentLookup:
    """No previous state: every file is read."""

    def __init__(self, repo: Repository, cache_path: str | None = None) -> None:
        self._repo = repo
        self._cache_path = cache_path
        self._path_key = crypto.subkey(repo.write_keys.meta_key, "files cache path")
        self._recorded: dict[bytes, CachedFile] = {}

    async def previous_dir(self, path: bytes) -> PreviousDir:
        return {}

    def path_key(self, path: bytes) -> bytes:
        """The name of a file in the cache: a keyed hash of its path, never the path."""
        return crypto.keyed_hash(self._path_key, path)[:PATH_KEY_SIZE]

    def record(self, path: bytes, nodes: list[Node]) -> None:
        if self._cache_path is None:
            return
        recorded = self._recorded
        for node in nodes:
            if node.type == "file" and not node.changed_while_reading:  # a torn read is read again
                recorded[self.path_key(os.path.join(path, node.name))] = CachedFile(
                    node.mode, node.mtime_ns, node.size, node.content, node.inode, node.device, node.uid, node.gid
                )

    def close(self) -> None:
        """Stop any background work (see _TreeLookup)."""

    async def save(self, snapshot_id: str) -> None:
        if self._cache_path is None:
            return
        data = msgspec.msgpack.encode(_FilesCache(snapshot_id, self._recorded))
        sealed = self._repo.encrypt_meta(data, b"files-cache")
        os.makedirs(os.path.dirname(self._cache_path), mode=0o700, exist_ok=True)
        temp = f"{self._cache_path}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(sealed)
        os.replace(temp, self._cache_path)

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
            cached = _load_cache(repo, cache_path)
            if cached is not None and cached.snapshot == parent_id:
                return parent_id, _CacheLookup(repo, cache_path, cached)
        if repo.can_read:
            return parent_id, _TreeLookup(repo, cache_path, parent.tree)
        return parent_id, ParentLookup(repo, cache_path)


class _CachedDir:
    """One folder's view of the files cache: entries are found by the hash of their path."""

    def __init__(self, lookup: _CacheLookup, path: bytes) -> None:
        self._lookup = lookup
        self._path = path

    def get(self, name: bytes, /) -> Node | None:
        lookup = self._lookup
        cached = lookup.files.get(lookup.path_key(os.path.join(self._path, name)))
        if cached is None:
            return None
        return Node(
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


class _CacheLookup(ParentLookup):
    def __init__(self, repo: Repository, cache_path: str, cached: _FilesCache) -> None:
        super().__init__(repo, cache_path)
        self.files = cached.files

    async def previous_dir(self, path: bytes) -> PreviousDir:
        return _CachedDir(self, path)


class _TreeLookup(ParentLookup):
    def __init__(self, repo: Repository, cache_path: str | None, root: bytes) -> None:
        super().__init__(repo, cache_path)
        self._root = root
        self._dirs: dict[bytes, dict[bytes, Node]] = {}
        self._prefetched: dict[bytes, asyncio.Task[dict[bytes, Node]]] = {}
        self._prefetch_slots = asyncio.Semaphore(8)

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

    def close(self) -> None:
        for task in self._prefetched.values():
            task.cancel()
        self._prefetched.clear()

    async def _load(self, tree_id: bytes) -> dict[bytes, Node]:
        task = self._prefetched.pop(tree_id, None)
        return await task if task is not None else await self._fetch(tree_id)

    async def _fetch(self, tree_id: bytes) -> dict[bytes, Node]:
        try:
            tree = await self._repo.load_tree(tree_id)
        except (CorruptBlob, RepositoryError):
            return {}  # a damaged parent only costs re-reading files
        # The walk will ask for the subfolders next: fetch their trees meanwhile.
        for node in tree.nodes:
            if node.type == "dir" and node.subtree and node.subtree not in self._prefetched:
                self._prefetched[node.subtree] = asyncio.create_task(self._fetch_limited(node.subtree))
        return {node.name: node for node in tree.nodes}

    async def _fetch_limited(self, tree_id: bytes) -> dict[bytes, Node]:
        async with self._prefetch_slots:
            return await self._fetch(tree_id)


def _load_cache(repo: Repository, path: str) -> _FilesCache | None:
    with contextlib.suppress(OSError, crypto.Unauthenticated, msgspec.DecodeError):
        with open(path, "rb") as f:
            return msgspec.msgpack.decode(repo.decrypt_meta(f.read(), b"files-cache"), type=_FilesCache)
    return None
