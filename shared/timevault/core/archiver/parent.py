"""What the previous backup knew about each file, so unchanged files are not read again.

A file is unchanged when its size, mtime and inode match the previous snapshot's entry; its
blob ids are then reused without reading it. The previous state comes from:

- the parent snapshot's trees, when the repository is open with the password, or
- a local files cache (like borg's), for the write-only tier that cannot read trees. The cache
  holds only names, stat fields and blob ids, encrypted with the metadata key, and is trusted
  only for the snapshot it was written with.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import msgspec

from timevault.core import crypto
from timevault.core.repository.blobs import CorruptBlob
from timevault.core.repository.format import Node
from timevault.core.repository.repo import Repository, RepositoryError


class _FilesCache(msgspec.Struct):
    snapshot: str
    dirs: dict[bytes, list[Node]]


class ParentLookup:
    """No previous state: every file is read."""

    def __init__(self, repo: Repository, cache_path: str | None = None) -> None:
        self._repo = repo
        self._cache_path = cache_path
        self._recorded: dict[bytes, list[Node]] = {}

    async def previous_dir(self, path: bytes) -> dict[bytes, Node]:
        return {}

    def record(self, path: bytes, nodes: list[Node]) -> None:
        if self._cache_path is not None:
            self._recorded[path] = [node for node in nodes if node.type == "file"]

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


class _CacheLookup(ParentLookup):
    def __init__(self, repo: Repository, cache_path: str, cached: _FilesCache) -> None:
        super().__init__(repo, cache_path)
        self._dirs = cached.dirs

    async def previous_dir(self, path: bytes) -> dict[bytes, Node]:
        return {node.name: node for node in self._dirs.get(path, [])}


class _TreeLookup(ParentLookup):
    def __init__(self, repo: Repository, cache_path: str | None, root: bytes) -> None:
        super().__init__(repo, cache_path)
        self._root = root
        self._dirs: dict[bytes, dict[bytes, Node]] = {}
        self._prefetched: dict[bytes, asyncio.Task[dict[bytes, Node]]] = {}
        self._prefetch_slots = asyncio.Semaphore(8)

    async def previous_dir(self, path: bytes) -> dict[bytes, Node]:
        if path in self._dirs:
            return self._dirs[path]
        if path == b"/":
            found = await self._load(self._root)
        else:
            parent_dir, name = os.path.split(path)
            node = (await self.previous_dir(parent_dir)).get(name)
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
