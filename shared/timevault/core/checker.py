"""`check`: is the repository whole and its history authentic? Structure by default, every blob
with `read_data`.

Besides objects that are missing or damaged, `check` reports as errors: a `config` that is not
authentic or holds values this version cannot use, snapshots whose names do not match their
content (renamed, copied or rewritten), snapshots that contradict the endorsed history (put
back after being forgotten, or written behind the password holder's back), forged endorsements,
and lists of references that differ from what the snapshot's trees need (with the password:
the write tier's lists are what the services prune by).

Memory does not grow with the files: the index is read into a table on disk (`locations`), the
walk keeps each tree's children in a file (`FlatTreeWalk`), and each snapshot's listed and
needed ids go to disk split into parts by their leading bits (`idparts`), compared with the
same stretch of the index one part at a time. `--read-data` reads the index files again one at
a time for the packs' entries. (`used_blobs`, for prune, still walks into memory: `TreeWalk`.)
"""

from __future__ import annotations

import asyncio
import os
import struct
import tempfile
from collections.abc import Callable, Container
from dataclasses import dataclass, field

from timevault.core import crypto
from timevault.core.errors import CorruptIndex
from timevault.core.fileio import pread_exactly, pwrite_all
from timevault.core.names import name_problem
from timevault.core.repository import gcstate
from timevault.core.repository.blobs import CorruptBlob
from timevault.core.repository.compact import IdMap, IdSet
from timevault.core.repository.format import BlobType, IndexPack, Node, Snapshot
from timevault.core.repository.history import UNENDORSED, History, describe_removed
from timevault.core.repository.idparts import PartitionedIds, bits_for, bucket_range, part_of
from timevault.core.repository.index import BlobLookup, Index, decode_index_file, pack_object_name
from timevault.core.repository.locations import BlobLocations, load_locations
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
            subtrees, data = _children(tree.nodes, where, stack, self.name_errors, self.errors, self._not_indexed)
            self.children[tree_id] = (_pack(subtrees), _pack(data))

    def _not_indexed(self, blob_id: bytes) -> bool:
        return blob_id not in self.index

    def all_blobs(self) -> set[bytes]:
        used = set(self.children)
        for _, data in self.children.values():
            used.update(_unpack(data))
        return used


def _children(
    nodes: list[Node],
    where: str,
    stack: list[tuple[bytes, str]],
    name_errors: list[str] | None,
    errors: list[str],
    missing: Callable[[bytes], bool],
) -> tuple[list[bytes], list[bytes]]:
    """A tree's subtrees and (32-byte) data blob ids; its subfolders go on the walk's `stack`,
    its names are checked into `name_errors` (None: unchecked), and data blobs that `missing`
    says are absent are reported into `errors`."""
    subtrees: list[bytes] = []
    data: list[bytes] = []
    if name_errors is not None:
        _check_names(nodes, where, name_errors)
    for node in nodes:
        if node.type == "dir" and node.subtree is not None:
            subtrees.append(node.subtree)
            stack.append((node.subtree, f"{where}/{os.fsdecode(node.name)}"))
        for blob_id in node.content:
            if len(blob_id) == ID_SIZE:
                data.append(blob_id)
            if missing(blob_id):
                errors.append(f"{where}/{os.fsdecode(node.name)}: data blob {blob_id.hex()[:16]} is missing")
    return subtrees, data


def _not_an_id(blob_id: bytes) -> bool:
    return len(blob_id) != ID_SIZE


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


# Where a walked tree's children lie in the walk's file: offset, number of subtrees, of data blobs.
_TREE_RECORD = struct.Struct("<QII")
# Children written at once to the walk's file (fewer, larger writes).
_WRITE_AT = 1 << 20


class FlatTreeWalk:
    """Reads every tree of some snapshots once, like `TreeWalk`, but keeps each tree's
    children (subtrees, then data blobs, ids back to back) in an unnamed temporary file, and in
    memory only where they lie (~50 bytes a tree, nothing a file): `needed_into` then gives what
    any one snapshot needs without reading trees again. Trees are found through `lookup` (the
    index table on disk, `locations`)."""

    def __init__(
        self, repo: Repository, lookup: BlobLookup, errors: list[str], name_errors: list[str] | None = None,
        directory: str | None = None,
    ) -> None:
        self.repo = repo
        self.lookup = lookup
        self.errors = errors
        self.name_errors = name_errors  # as in `TreeWalk`: None leaves names unchecked
        self.trees_read = 0  # trees walked that the index lists as trees
        self._where = IdMap(_TREE_RECORD.size)
        self._odd: set[bytes] = set()  # tree ids that are no ids (a hostile tree's): walked once too
        handle = tempfile.TemporaryFile(prefix="timevault-trees-", dir=directory)
        self._fd = os.dup(handle.fileno())  # unlinked: nothing is left behind, even by a killed process
        handle.close()
        self._end = 0
        self._pending = bytearray()  # children not yet written, from `_end` on

    def __enter__(self) -> FlatTreeWalk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _walked(self, tree_id: bytes) -> bool:
        return tree_id in self._odd if len(tree_id) != ID_SIZE else tree_id in self._where

    def _record(self, tree_id: bytes, subtrees: list[bytes], data: list[bytes]) -> None:
        if len(tree_id) != ID_SIZE:
            self._odd.add(tree_id)
            return
        # An id of another length (a damaged or hostile tree) is left out: no index holds it,
        # so it is reported already (a subtree fails to load, a data blob is missing).
        subtrees = [blob_id for blob_id in subtrees if len(blob_id) == ID_SIZE]
        self._where.add(tree_id, _TREE_RECORD.pack(self._end + len(self._pending), len(subtrees), len(data)))
        self._pending += b"".join(subtrees)
        self._pending += b"".join(data)
        if len(self._pending) >= _WRITE_AT:
            self._flush()

    def _flush(self) -> None:
        pwrite_all(self._fd, self._pending, self._end)
        self._end += len(self._pending)
        self._pending = bytearray()

    async def walk(self, tree_id: bytes, where: str) -> None:
        stack = [(tree_id, where)]
        while stack:
            tree_id, where = stack.pop()
            if self._walked(tree_id):
                continue
            location = self.lookup.locate(tree_id) if len(tree_id) == ID_SIZE else None
            if location is not None and location.type == BlobType.TREE:
                self.trees_read += 1
            try:
                tree = await self.repo.load_tree(tree_id, self.lookup)
            except (CorruptBlob, StorageError) as exc:
                self.errors.append(f"{where}: {exc}")
                self._record(tree_id, [], [])
                continue
            # Whether the index has a data blob is asked later, of all ids at once, part by part
            # (`needed_into`); here only an id that no index can hold is reported.
            subtrees, data = _children(tree.nodes, where, stack, self.name_errors, self.errors, _not_an_id)
            self._record(tree_id, subtrees, data)

    def needed_into(self, root: bytes, needed: PartitionedIds) -> None:
        """Every blob (trees included) below `root`, from what `walk` read, into `needed`."""
        if self._pending:
            self._flush()
        seen = IdSet()
        stack = [root] if len(root) == ID_SIZE else []  # a hostile snapshot's root: reported by walk
        while stack:
            tree_id = stack.pop()
            if not seen.add(tree_id):
                continue
            needed.add_packed(tree_id)
            record = self._where.get(tree_id)
            if record is None:
                continue
            offset, subtrees, data = _TREE_RECORD.unpack(record)
            if subtrees + data == 0:
                continue
            children = pread_exactly(self._fd, (subtrees + data) * ID_SIZE, offset, "the walk's file of trees")
            end = subtrees * ID_SIZE
            stack.extend(children[at : at + ID_SIZE] for at in range(0, end, ID_SIZE))
            needed.add_packed(children[end:])

    async def report_missing(self, roots: list[tuple[bytes, str]], missing: Container[bytes]) -> None:
        """Read the trees again and report every data blob in `missing` where a file uses it (a
        damaged repository only: `walk` leaves finding them to the comparison by parts)."""
        seen: set[bytes] = set()
        for root, where in roots:
            stack = [(root, where)]
            while stack:
                tree_id, where = stack.pop()
                if tree_id in seen:
                    continue
                seen.add(tree_id)
                try:
                    tree = await self.repo.load_tree(tree_id, self.lookup)
                except (CorruptBlob, StorageError):
                    continue  # reported by `walk`
                for node in tree.nodes:
                    if node.type == "dir" and node.subtree is not None:
                        stack.append((node.subtree, f"{where}/{os.fsdecode(node.name)}"))
                    for blob_id in node.content:
                        if blob_id in missing:
                            self.errors.append(
                                f"{where}/{os.fsdecode(node.name)}: data blob {blob_id.hex()[:16]} is missing"
                            )






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
    # The index as a table on disk (`locations`), not in memory: its memory does not grow with
    # the blobs. Damaged index files go to the errors, as `Index.load` reports them.
    builder = await load_locations(repo.storage, repo.write_keys.meta_key, result.errors)
    try:
        live_packs = builder.live_packs()
        live_files = builder.live_files()
        locations = builder.finish()
    except BaseException:
        builder.close()
        raise
    with locations:
        await _check_structure(repo, locations, live_packs, live_files, result, read_data, progress)
    return result


async def _check_structure(
    repo: Repository, locations: BlobLocations, live_packs: set[str], live_files: set[str], result: CheckResult,
    read_data: bool, progress: Callable[[int, int], None] | None,
) -> None:
    result.packs = len(live_packs)
    stored = {info.name.rsplit("/", 1)[-1]: info.size async for info in repo.storage.list("data/")}
    for pack_id in sorted(live_packs):
        if pack_id not in stored:
            result.errors.append(f"pack {pack_id[:12]} is in the index but missing from storage")
        elif stored[pack_id] != locations.pack_size(pack_id):
            result.errors.append(
                f"pack {pack_id[:12]} has size {stored[pack_id]}, the index says {locations.pack_size(pack_id)}"
            )
    unindexed = set(stored) - live_packs
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
        result.blobs = await _check_references(repo, locations, snapshots, result, None)
        result.notes.append("trees and data were not read: that needs the password")
        return
    for snapshot_id, snapshot in snapshots:
        if snapshot.tree not in locations:
            result.errors.append(f"snapshot {snapshot_id[:8]}: root tree is missing")
    with FlatTreeWalk(repo, locations, result.errors, name_errors=result.errors) as walk:
        for snapshot_id, snapshot in snapshots:
            await walk.walk(snapshot.tree, f"snapshot {snapshot_id[:8]}:")
        result.blobs = await _check_references(repo, locations, snapshots, result, walk)
        result.trees_read = walk.trees_read
    if read_data:
        await _read_all_packs(repo, live_files, result, progress)


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
    repo: Repository, locations: BlobLocations, snapshots: list[tuple[str, Snapshot]], result: CheckResult,
    walk: FlatTreeWalk | None,
) -> int:
    """Every snapshot's list of references must load and name only blobs the index has
    (checkable with the write tier alone), and, with the trees read (`walk`), list exactly what
    they need; every data blob the trees need must be in the index. Returns how many blobs the
    index holds.

    Nothing here is held whole: per snapshot, the listed and the needed ids go to disk split
    into parts by their leading bits (`idparts`), and each part is compared with the same
    stretch of the index table, one part at a time."""
    bits = bits_for(len(locations))
    errors: list[str] = []  # after the walk's (data blobs missing are found here, reported by path)
    missing: set[bytes] = set()
    blobs: int | None = None
    for snapshot_id, snapshot in snapshots:
        reading = _ListedIds(bits)
        listed: _ListedIds | None = reading
        needed: PartitionedIds | None = None
        try:
            try:
                loaded = await repo.load_snapshot(snapshot_id)
                if not loaded.references:
                    raise RepositoryError(f"snapshot {snapshot_id[:12]} has no list of references")
                await repo.stream_reference_ids(loaded.references, reading)
            except (RepositoryError, StorageError) as exc:
                errors.append(f"snapshot {snapshot_id[:8]}: {exc}")
                reading.close()
                listed = None
            if walk is not None:
                needed = PartitionedIds(bits)
                await asyncio.to_thread(walk.needed_into, snapshot.tree, needed)
            if listed is None and needed is None:
                continue
            found = await asyncio.to_thread(_compare, locations, bits, listed, needed, snapshot.tree)
        finally:
            if listed is not None:
                listed.close()
            if needed is not None:
                needed.close()
        blobs = found.blobs
        missing |= found.needed_missing
        if listed is None:
            continue
        if found.listed_missing:
            assert found.first_missing is not None
            errors.append(
                f"snapshot {snapshot_id[:8]}: {found.listed_missing} referenced blob(s) are missing from the index, "
                f"first {found.first_missing.hex()[:16]}"
            )
        if not found.root_listed:
            errors.append(f"snapshot {snapshot_id[:8]}: its list of references lacks its root tree")
        if walk is not None and (found.not_listed or found.not_needed):
            errors.append(
                f"snapshot {snapshot_id[:8]}: its list of references does not match its trees "
                f"({found.not_listed} needed blob(s) not listed, {found.not_needed} listed blob(s) "
                "not needed): prune by the services would go wrong"
            )
    if walk is not None and missing:
        await walk.report_missing([(s.tree, f"snapshot {sid[:8]}:") for sid, s in snapshots], missing)
    result.errors.extend(errors)
    if blobs is None:
        blobs = (await asyncio.to_thread(_compare, locations, bits, None, None, b"")).blobs
    return blobs


class _ListedIds:
    """A snapshot's list of references as `Repository.stream_reference_ids` hands it over (the
    sink), kept on disk in parts: a full list, or a delta's base, added and removed ids."""

    def __init__(self, bits: int) -> None:
        self._bits = bits
        self._base = PartitionedIds(bits)
        self._added: PartitionedIds | None = None
        self._removed: PartitionedIds | None = None

    def __call__(self, kind: str, ids: list[bytes]) -> None:
        if kind == "base":
            self._base.add_sorted(ids)
        elif kind == "added":
            self._added = self._added or PartitionedIds(self._bits)
            self._added.add_sorted(ids)
        elif kind == "removed":
            self._removed = self._removed or PartitionedIds(self._bits)
            self._removed.add_packed(b"".join(ids))
        elif kind == "restart":
            self.close()
            self._base = PartitionedIds(self._bits)
        else:
            raise ValueError(f"no kind of ids {kind!r}")

    def ids(self, part: int) -> set[bytes]:
        ids = self._base.ids(part)
        if self._removed is not None:
            ids -= self._removed.ids(part)
        if self._added is not None:
            ids |= self._added.ids(part)
        return ids

    def close(self) -> None:
        for parts in (self._base, self._added, self._removed):
            if parts is not None:
                parts.close()
        self._added = self._removed = None


@dataclass
class _Found:
    """What comparing one snapshot's lists part by part found."""

    blobs: int = 0  # different ids in the index
    listed_missing: int = 0  # listed, not in the index
    first_missing: bytes | None = None  # the smallest of those
    root_listed: bool = False
    not_listed: int = 0  # needed, not listed
    not_needed: int = 0  # listed, not needed
    needed_missing: set[bytes] = field(default_factory=set)  # needed, not in the index


def _compare(
    locations: BlobLocations, bits: int, listed: _ListedIds | None, needed: PartitionedIds | None, root: bytes
) -> _Found:
    """Compare the listed ids, the needed ids and the index part by part (set operations in C
    on one part's ids at a time)."""
    found = _Found()
    root_part = part_of(root, bits) if len(root) == ID_SIZE else -1
    for part in range(1 << bits):
        in_index = set(locations.bucket_ids(*bucket_range(part, bits)))
        found.blobs += len(in_index)
        listed_ids = listed.ids(part) if listed is not None else None
        needed_ids = needed.ids(part) if needed is not None else None
        if listed_ids is not None:
            absent = listed_ids - in_index
            if absent:
                found.listed_missing += len(absent)
                if found.first_missing is None:
                    found.first_missing = min(absent)  # parts go in order: the smallest of all
            if part == root_part:
                found.root_listed = root in listed_ids
            if needed_ids is not None and needed_ids != listed_ids:
                found.not_listed += len(needed_ids - listed_ids)
                found.not_needed += len(listed_ids - needed_ids)
        if needed_ids is not None:
            found.needed_missing |= needed_ids - in_index
    return found


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
    repo: Repository, live_files: set[str], result: CheckResult, progress: Callable[[int, int], None] | None
) -> None:
    """Read every pack of the index whole and open every blob in it, by the packs' entries in
    the index files, read again one file at a time (never the whole index in memory)."""
    sem = asyncio.Semaphore(2)
    total = result.packs
    done: set[str] = set()

    async def verify(pack: IndexPack) -> None:
        try:
            try:
                data = await repo.storage.get(pack_object_name(pack.id))
            except ObjectNotFound:
                return  # already reported as missing
            except StorageError as exc:
                result.errors.append(f"pack {pack.id[:12]}: {exc}")
                return
            errors = await asyncio.to_thread(_verify_pack, repo, pack, data)
            result.errors.extend(errors)
            result.packs_read += 1
            if progress:
                progress(result.packs_read, total)
        finally:
            sem.release()

    tasks = []
    for file_id in sorted(live_files):
        try:
            file = decode_index_file(repo.write_keys.meta_key, await repo.storage.get(f"index/{file_id}"))
        except (CorruptIndex, StorageError) as exc:  # it was whole moments ago: changed since
            result.errors.append(f"index/{file_id}: {exc} (its packs were not read)")
            continue
        for pack in file.packs:
            if pack.id in done:
                continue
            done.add(pack.id)
            await sem.acquire()  # two packs in flight, across index files
            tasks.append(asyncio.ensure_future(verify(pack)))
        del file
    await asyncio.gather(*tasks)


def _verify_pack(repo: Repository, pack: IndexPack, data: bytes) -> list[str]:
    errors = []
    pack_id = pack.id
    if crypto.content_hash(data).hex() != pack_id:
        errors.append(f"pack {pack_id[:12]}: content does not match its id (damaged)")
    try:
        read_pack_header(repo.write_keys.meta_key, data)
    except CorruptPack as exc:
        errors.append(f"pack {pack_id[:12]}: {exc}")
    for blob in pack.blobs:
        payload = memoryview(data)[blob.offset : blob.offset + blob.length]
        sealed = pack.keys[blob.key] if 0 <= blob.key < len(pack.keys) else b""
        try:
            repo.decode_blob(blob.id, blob.type, payload, sealed)
        except CorruptBlob as exc:
            errors.append(f"pack {pack_id[:12]}: {exc}")
    return errors
