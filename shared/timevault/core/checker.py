"""`check`: is the repository whole and its history authentic? Structure by default, every blob
with `read_data`.

Besides objects that are missing or damaged, `check` reports as errors: a `config` that is not
authentic or holds values this version cannot use, snapshots whose names do not match their
content (renamed, copied or rewritten), snapshots that contradict the endorsed history (put
back after being forgotten, or written behind the password holder's back), forged endorsements,
and lists of references that differ from what the snapshot's trees need (with the password:
the write tier's lists are what the services prune by).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from timevault.core import crypto
from timevault.core.names import name_problem
from timevault.core.repository import gcstate
from timevault.core.repository.blobs import CorruptBlob
from timevault.core.repository.compact import IdMap, IdSet
from timevault.core.repository.format import BlobType, Node, Snapshot
from timevault.core.repository.history import UNENDORSED, History, describe_removed
from timevault.core.repository.index import Index, pack_object_name
from timevault.core.repository.pack import CorruptPack, read_pack_header
from timevault.core.repository.references import ID_SIZE
from timevault.core.repository.repo import Repository, RepositoryError
from timevault.core.storage import ObjectNotFound, StorageError


@dataclass
class CheckResult:
    snapshots: int = 0
    packs: int = 0
    blobs: int = 0
    trees_read: int = 0
    packs_read: int = 0
    endorsed: int = 0
    unendorsed: int = 0
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class TreeWalk:
    """Reads every tree of some snapshots once, remembering each tree's direct children, so
    that what any one snapshot needs can then be computed without reading trees again.

    A tree's children are kept as ids packed back to back (32 bytes each, about a third of a
    list of bytes objects): this is the one record of the walk that grows with the files."""

    def __init__(self, repo: Repository, index: Index, errors: list[str],
                 name_errors: list[str] | None = None) -> None:
        self.repo = repo
        self.index = index
        self.errors = errors
        # Where unsafe or repeated names in trees go (restore refuses them, so they are damage
        # for check; prune does not need to stop for them): None leaves names unchecked.
        self.name_errors = name_errors
        self.children: dict[bytes, tuple[bytes, bytes]] = {}  # tree → (subtrees, data), packed ids

    async def walk(self, tree_id: bytes, where: str) -> None:
        stack = [(tree_id, where)]
        while stack:
            tree_id, where = stack.pop()
            if tree_id in self.children:
                continue
            self.children[tree_id] = (b"", b"")
            try:
                tree = await self.repo.load_tree(tree_id)
            except (CorruptBlob, StorageError) as exc:
                self.errors.append(f"{where}: {exc}")
                continue
            subtrees: list[bytes] = []
            data: list[bytes] = []
            if self.name_errors is not None:
                _check_names(tree.nodes, where, self.name_errors)
            for node in tree.nodes:
                if node.type == "dir" and node.subtree is not None:
                    subtrees.append(node.subtree)
                    stack.append((node.subtree, f"{where}/{os.fsdecode(node.name)}"))
                for blob_id in node.content:
                    data.append(blob_id)
                    if blob_id not in self.index:
                        self.errors.append(f"{where}/{os.fsdecode(node.name)}: data blob {blob_id.hex()[:16]} is missing")
            self.children[tree_id] = (_pack(subtrees), _pack(data))

    def needed(self, root: bytes) -> IdMap:
        """Every blob (trees included) below `root`, from what `walk` read; held compactly
        (a snapshot of a million files needs a million ids)."""
        found = IdSet()
        stack = [root] if len(root) == ID_SIZE else []  # a hostile snapshot's root: reported by walk
        while stack:
            tree_id = stack.pop()
            if not found.add(tree_id):
                continue
            subtrees, data = self.children.get(tree_id, (b"", b""))
            found.update(_unpack(data))
            stack.extend(_unpack(subtrees))
        return found

    def all_blobs(self) -> set[bytes]:
        used = set(self.children)
        for _, data in self.children.values():
            used.update(_unpack(data))
        return used


def _pack(ids: list[bytes]) -> bytes:
    """Ids back to back. An id of another length (a damaged or hostile tree) is left out: no
    index holds it, so `walk` has reported it missing already."""
    return b"".join(blob_id for blob_id in ids if len(blob_id) == ID_SIZE)


def _unpack(packed: bytes) -> list[bytes]:
    return [packed[i : i + ID_SIZE] for i in range(0, len(packed), ID_SIZE)]


def _check_names(nodes: list[Node], where: str, errors: list[str]) -> None:
    seen: set[bytes] = set()
    for node in nodes:
        problem = name_problem(node.name)
        if problem is None and node.name in seen:
            problem = f"the name {os.fsdecode(node.name)!r} more than once"
        seen.add(node.name)
        if problem is not None:
            errors.append(f"{where}: the folder holds {problem} (restore refuses it)")


async def used_blobs(
    repo: Repository,
    index: Index,
    errors: list[str],
    snapshots: list[tuple[str, Snapshot]] | None = None,
) -> set[bytes]:
    """Every blob id that `snapshots` (default: every snapshot) need; trees walked once each."""
    if snapshots is None:
        snapshots = await repo.list_snapshots(allow_unverified=True)
    walk = TreeWalk(repo, index, errors)
    for snapshot_id, snapshot in snapshots:
        await walk.walk(snapshot.tree, f"snapshot {snapshot_id[:8]}:")
    return walk.all_blobs()


async def check(
    repo: Repository, *, read_data: bool = False, progress: Callable[[int, int], None] | None = None
) -> CheckResult:
    result = CheckResult()
    result.errors.extend(repo.config_problems)
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
    try:
        marked = unindexed & (await gcstate.load(repo.storage, repo.write_keys.meta_key)).pending_packs()
    except RepositoryError as exc:
        result.errors.append(str(exc))
        marked = set()
    if marked:
        result.notes.append(
            f"{len(marked)} pack(s) hold only data no snapshot needs: prune marked them and deletes them "
            "once the backups that were running then have ended"
        )
    if unindexed - marked:
        result.notes.append(
            f"{len(unindexed - marked)} pack(s) are not in the index (left by an interrupted "
            "backup; prune removes them, `timevault repo rebuild-index` indexes them)"
        )
    await _note_leftovers(repo, result)
    history, by_id = await repo.load_history(result.errors)
    snapshots = sorted(by_id.items(), key=lambda item: (item[1].time, item[0]))
    result.snapshots = len(snapshots)
    _report_history(history, result)
    if not repo.can_read:
        await _check_references(repo, index, snapshots, result, None)
        result.notes.append("trees and data were not read: that needs the password")
        return result
    for snapshot_id, snapshot in snapshots:
        if snapshot.tree not in index:
            result.errors.append(f"snapshot {snapshot_id[:8]}: root tree is missing")
    walk = TreeWalk(repo, index, result.errors, name_errors=result.errors)
    for snapshot_id, snapshot in snapshots:
        await walk.walk(snapshot.tree, f"snapshot {snapshot_id[:8]}:")
    await _check_references(repo, index, snapshots, result, walk)
    result.trees_read = sum(1 for b in walk.children if b in index and index.blobs[b].type == BlobType.TREE)
    if read_data:
        await _read_all_packs(repo, index, result, progress)
    return result


def _report_history(history: History, result: CheckResult) -> None:
    result.errors.extend(history.problems)
    result.errors.extend(describe_removed(history))
    for snapshot_id in history.contradicting():
        result.errors.append(history.describe(snapshot_id))
    result.notes.extend(history.notes)
    result.endorsed = sum(1 for status in history.status.values() if status == "endorsed")
    result.unendorsed = sum(1 for status in history.status.values() if status == UNENDORSED)
    if result.unendorsed:
        when = history.endorsement.time[:16].replace("T", " ") + " UTC" if history.endorsement else "never"
        result.notes.append(
            f"{result.unendorsed} snapshot(s) were written since the password was last used ({when}); "
            "they are consistent with the endorsed history and are endorsed the next time the password is used"
        )


async def _check_references(
    repo: Repository, index: Index, snapshots: list[tuple[str, Snapshot]], result: CheckResult,
    walk: TreeWalk | None,
) -> None:
    """Every snapshot's list of references must load and name only blobs the index has
    (checkable with the write tier alone), and, with the trees read (`walk`), list exactly what
    they need. One snapshot's list at a time: never every snapshot's at once."""
    for snapshot_id, snapshot in snapshots:
        try:
            listed = await repo.snapshot_reference_ids(snapshot_id)
        except (RepositoryError, StorageError) as exc:
            result.errors.append(f"snapshot {snapshot_id[:8]}: {exc}")
            continue
        missing = [blob_id for blob_id in listed if blob_id not in index]
        if missing:
            result.errors.append(
                f"snapshot {snapshot_id[:8]}: {len(missing)} referenced blob(s) are missing from the index, "
                f"first {missing[0].hex()[:16]}"
            )
        if snapshot.tree not in listed:
            result.errors.append(f"snapshot {snapshot_id[:8]}: its list of references lacks its root tree")
        if walk is None:
            continue
        needed = walk.needed(snapshot.tree)
        if len(listed) != len(needed) or listed.sorted_ids() != needed.sorted_ids():
            not_listed = sum(1 for blob_id in needed if blob_id not in listed)
            not_needed = sum(1 for blob_id in listed if blob_id not in needed)
            result.errors.append(
                f"snapshot {snapshot_id[:8]}: its list of references does not match its trees "
                f"({not_listed} needed blob(s) not listed, {not_needed} listed blob(s) "
                "not needed): prune by the services would go wrong"
            )
        del listed, needed


async def _note_leftovers(repo: Repository, result: CheckResult) -> None:
    """Temporary files of interrupted writes and stale locks: nothing is lost, prune removes them."""
    leftovers = getattr(repo.storage, "leftovers", None)
    if leftovers is not None:
        found = await leftovers()
        if found:
            size = sum(leftover.size for leftover in found)
            result.notes.append(
                f"{len(found)} temporary file(s) ({size} bytes) left by writes that did not finish "
                "(prune removes them)"
            )
    stale = await repo.stale_locks()
    if stale:
        result.notes.append(f"{len(stale)} stale lock(s) of backups that ended without removing them "
                            "(prune removes them)")


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
    pack = index.packs[pack_id]
    for blob in pack.blobs:
        payload = memoryview(data)[blob.offset : blob.offset + blob.length]
        sealed = pack.keys[blob.key] if 0 <= blob.key < len(pack.keys) else b""
        try:
            repo.decode_blob(blob.id, blob.type, payload, sealed)
        except CorruptBlob as exc:
            errors.append(f"pack {pack_id[:12]}: {exc}")
    return errors
