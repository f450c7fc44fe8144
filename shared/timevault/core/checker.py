"""`check`: is the repository whole? Structure by default, every blob with `read_data`."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from timevault.core import crypto
from timevault.core.repository.blobs import CorruptBlob
from timevault.core.repository.format import BlobType, Snapshot
from timevault.core.repository.index import Index, pack_object_name
from timevault.core.repository.pack import CorruptPack, read_pack_header
from timevault.core.repository.repo import Repository, RepositoryError
from timevault.core.storage import ObjectNotFound, StorageError


@dataclass
class CheckResult:
    snapshots: int = 0
    packs: int = 0
    blobs: int = 0
    trees_read: int = 0
    packs_read: int = 0
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


async def used_blobs(
    repo: Repository,
    index: Index,
    errors: list[str],
    snapshots: list[tuple[str, Snapshot]] | None = None,
) -> set[bytes]:
    """Every blob id that `snapshots` (default: every snapshot) need; trees walked once each."""
    used: set[bytes] = set()

    async def walk(tree_id: bytes, where: str) -> None:
        if tree_id in used:
            return
        used.add(tree_id)
        try:
            tree = await repo.load_tree(tree_id)
        except (CorruptBlob, StorageError) as exc:
            errors.append(f"{where}: {exc}")
            return
        for node in tree.nodes:
            path = f"{where}/{os.fsdecode(node.name)}"
            if node.type == "dir" and node.subtree is not None:
                await walk(node.subtree, path)
            for blob_id in node.content:
                used.add(blob_id)
                if blob_id not in index:
                    errors.append(f"{path}: data blob {blob_id.hex()[:16]} is missing")

    if snapshots is None:
        snapshots = await repo.list_snapshots()
    for snapshot_id, snapshot in snapshots:
        await walk(snapshot.tree, f"snapshot {snapshot_id[:8]}:")
    return used


async def check(
    repo: Repository, *, read_data: bool = False, progress: Callable[[int, int], None] | None = None
) -> CheckResult:
    result = CheckResult()
    index = await Index.load(repo.storage, repo.write_keys.meta_key, result.errors)
    # Read trees through this index: loading it again would raise on the damage just reported.
    repo._index = index
    result.packs = len(index.packs)
    result.blobs = len(index.blobs)
    stored = {info.name.rsplit("/", 1)[-1]: info.size async for info in repo.storage.list("data/")}
    for pack_id, pack in index.packs.items():
        if pack_id not in stored:
            result.errors.append(f"pack {pack_id[:12]} is in the index but missing from storage")
        elif stored[pack_id] != pack.size:
            result.errors.append(
                f"pack {pack_id[:12]} has size {stored[pack_id]}, the index says {pack.size}"
            )
    unindexed = set(stored) - set(index.packs)
    if unindexed:
        result.notes.append(
            f"{len(unindexed)} pack(s) are not in the index (left by an interrupted "
            "backup; prune removes them)"
        )
    # One by one, so that a damaged snapshot is reported and the others are still checked.
    snapshots: list[tuple[str, Snapshot]] = []
    async for info in repo.storage.list("snapshots/"):
        snapshot_id = info.name.removeprefix("snapshots/")
        try:
            snapshots.append((snapshot_id, await repo.load_snapshot(snapshot_id)))
        except RepositoryError as exc:
            result.errors.append(str(exc))
    result.snapshots = len(snapshots)
    if not repo.can_read:
        result.notes.append("trees and data were not read: that needs the password")
        return result
    for snapshot_id, snapshot in snapshots:
        if snapshot.tree not in index:
            result.errors.append(f"snapshot {snapshot_id[:8]}: root tree is missing")
    used = await used_blobs(repo, index, result.errors, snapshots)
    result.trees_read = len([b for b in used if b in index and index.blobs[b].type == BlobType.TREE])
    if read_data:
        await _read_all_packs(repo, index, result, progress)
    return result


async def _read_all_packs(
    repo: Repository, index: Index, result: CheckResult, progress: Callable[[int, int], None] | None
) -> None:
    sem = asyncio.Semaphore(2)
    total = len(index.packs)

    async def verify(pack_id: str) -> None:
        async with sem:
            try:
                data = await repo.storage.get(pack_object_name(pack_id))
            except ObjectNotFound:
                return  # already reported as missing
            except StorageError as exc:
                result.errors.append(f"pack {pack_id[:12]}: {exc}")
                return
            errors = await asyncio.to_thread(_verify_pack, repo, index, pack_id, data)
            result.errors.extend(errors)
            result.packs_read += 1
            if progress:
                progress(result.packs_read, total)

    await asyncio.gather(*(verify(pack_id) for pack_id in index.packs))


def _verify_pack(repo: Repository, index: Index, pack_id: str, data: bytes) -> list[str]:
    errors = []
    if crypto.content_hash(data).hex() != pack_id:
        errors.append(f"pack {pack_id[:12]}: content does not match its id (damaged)")
    try:
        read_pack_header(repo.write_keys.meta_key, data)
    except CorruptPack as exc:
        errors.append(f"pack {pack_id[:12]}: {exc}")
    for blob in index.packs[pack_id].blobs:
        payload = memoryview(data)[blob.offset : blob.offset + blob.length]
        try:
            repo.decode_blob(blob.id, blob.type, payload)
        except CorruptBlob as exc:
            errors.append(f"pack {pack_id[:12]}: {exc}")
    return errors
