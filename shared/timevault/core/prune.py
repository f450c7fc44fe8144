"""`forget` removes snapshots; `prune` removes the data no remaining snapshot needs.

Prune holds the repository's exclusive lock; every backup holds a shared one, so the two never
overlap (a backup started during prune fails at once with a clear "locked" error, and prune
refuses to start while a backup runs). Within prune the order keeps every step crash-safe:

1. copy still-used blobs out of partly-used packs into new packs (blobs are self-contained
   ciphertext, so nothing is decrypted or re-encrypted),
2. write one index for all remaining packs that supersedes every older index file,
3. delete the superseded index files,
4. delete packs that are no longer referenced.

A crash before 2 leaves extra packs (removed by the next prune); after 2 only garbage.
Last, lists of references (`references/`) that no remaining snapshot names, directly or as the
base of its delta, are removed.

Prune also removes what interrupted work left behind: temporary files of writes whose writer
died (older than `TEMP_STALE_AFTER`: a live write touches its file every moment) and lock
files that are expired or whose process on this host is gone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from timevault.core.checker import used_blobs
from timevault.core.repository.blobs import EncodedBlob
from timevault.core.repository.format import IndexPack
from timevault.core.repository.index import pack_object_name, write_index_file
from timevault.core.repository.pack import Packer
from timevault.core.repository.repo import ReadAccessRequired, Repository, RepositoryError


@dataclass
class PruneResult:
    packs_deleted: int = 0
    packs_repacked: int = 0
    bytes_freed: int = 0
    blobs_removed: int = 0
    temp_files_removed: int = 0
    locks_removed: int = 0


# A temporary file this long unchanged has no writer any more (a pack is written in seconds).
TEMP_STALE_AFTER = 10 * 60


async def forget(repo: Repository, refs: list[str]) -> list[str]:
    """Remove the named snapshots (ids, prefixes or 'latest'); returns the removed ids."""
    ids = [await repo.resolve_snapshot(ref) for ref in refs]
    for snapshot_id in dict.fromkeys(ids):
        await repo.storage.delete(f"snapshots/{snapshot_id}")
    if repo.can_endorse:
        # Endorse the history without them: put back later, they contradict it.
        await repo.endorse()
    return list(dict.fromkeys(ids))


async def _drop_unused_references(repo: Repository) -> None:
    keep: set[str] = set()
    for _, snapshot in await repo.list_snapshots(allow_unverified=True):
        if snapshot.references:
            keep.add(snapshot.references)
            base = await repo.references_base(snapshot.references)
            if base is not None:
                keep.add(base)
    async for info in repo.storage.list("references/"):
        if info.name.removeprefix("references/") not in keep:
            await repo.storage.delete(info.name)


async def prune(repo: Repository) -> PruneResult:
    if not repo.can_read:
        raise ReadAccessRequired("prune needs the password: it must read which data snapshots use")
    repo.require_valid_config()
    result = PruneResult()
    async with repo.lock(exclusive=True):
        index = await repo.index(reload=True)
        errors: list[str] = []
        used = await used_blobs(repo, index, errors)
        if errors:
            raise RepositoryError("prune stopped, the repository has damage (run check): " + errors[0])
        keep: list[IndexPack] = []
        drop: list[IndexPack] = []
        repack: list[IndexPack] = []
        for pack in index.packs.values():
            live = [b for b in pack.blobs if b.id in used and index.blobs[b.id].pack == pack.id]
            if len(live) == len(pack.blobs):
                keep.append(pack)
            elif live:
                repack.append(pack)
            else:
                drop.append(pack)
        packer = Packer(repo.storage, repo.write_keys.meta_key)
        for pack in repack:
            for blob in pack.blobs:
                if blob.id in used and index.blobs[blob.id].pack == pack.id:
                    payload = await repo.storage.get(pack_object_name(pack.id), blob.offset, blob.length)
                    sealed = pack.keys[blob.key]  # blobs move with their own data key: never re-encrypted
                    await packer.add(EncodedBlob(blob.id, blob.type, blob.raw_length, payload, sealed))
        new_packs = await packer.flush()
        stored = {info.name.rsplit("/", 1)[-1]: info.size async for info in repo.storage.list("data/")}
        orphans = [
            name for name in stored if name not in index.packs and name not in {p.id for p in new_packs}
        ]
        old_index_files = [info.name.removeprefix("index/") async for info in repo.storage.list("index/")]
        await write_index_file(
            repo.storage, repo.write_keys.meta_key, keep + new_packs, supersedes=old_index_files
        )
        for file_id in old_index_files:
            await repo.storage.delete(f"index/{file_id}")
        for pack in drop + repack:
            await repo.storage.delete(pack_object_name(pack.id))
            result.bytes_freed += pack.size
        for pack_id in orphans:
            await repo.storage.delete(pack_object_name(pack_id))
            result.bytes_freed += stored[pack_id]
        await _drop_unused_references(repo)
        result.bytes_freed -= sum(p.size for p in new_packs)
        result.packs_deleted = len(drop) + len(orphans)
        result.packs_repacked = len(repack)
        result.blobs_removed = sum(len(p.blobs) for p in drop + repack) - sum(len(p.blobs) for p in new_packs)
        result.temp_files_removed, freed = await _remove_leftovers(repo)
        result.bytes_freed += freed
        for name in await repo.stale_locks():
            await repo.storage.delete(name)
            result.locks_removed += 1
    await repo.index(reload=True)
    await repo.endorse()
    return result


async def _remove_leftovers(repo: Repository) -> tuple[int, int]:
    """(files, bytes) of stale temporary files removed (locations without them: none)."""
    leftovers = getattr(repo.storage, "leftovers", None)
    if leftovers is None:
        return 0, 0
    cutoff = time.time() - TEMP_STALE_AFTER
    removed = freed = 0
    for leftover in await leftovers():
        if leftover.mtime < cutoff:
            await repo.storage.remove_leftover(leftover.name)  # type: ignore[attr-defined]
            removed += 1
            freed += leftover.size
    return removed, freed
