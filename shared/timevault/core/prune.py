"""Forget and prune: retention, and garbage collection that needs neither the password nor a
lock that stalls backups.

`forget` and `forget_by_rules` remove snapshots (the write tier may: a forget record says so,
see `timevault.core.repository.forgets`). `prune` removes the data no remaining snapshot needs.
It is the one implementation for everyone: the services run it with the write keys after each
backup, `timevault repo prune` with the password.

Why it is safe without the password
-----------------------------------
Every snapshot names a list of the blobs it needs (`references/`), readable with the write
keys. The blobs that the snapshots existing now need are *live*; everything else is garbage.

Why it is safe next to backups, without stalling them (two phases, like kopia's)
--------------------------------------------------------------------------------
A backup that is running, or that starts while prune runs, may rely on a blob that no snapshot
needs yet: it found it in the index (or the services' chunk index) and will name it in a
snapshot it saves later. Deleting garbage right away could break that snapshot. So prune runs
in two phases:

1. **Mark.** Compute the live set; copy the live blobs out of mostly-garbage packs into new
   packs (blobs are self-contained ciphertext: nothing is decrypted); write an index that lists
   every pack that stays and supersedes the index files it read, so garbage leaves the index
   but not the storage. Then publish a *mark* in the garbage collection state (`gc/`, see
   `timevault.core.repository.gcstate`): the packs, index files and reference lists to delete,
   the snapshots that were live, and the time. Before publishing, the caller's hook brings any
   cache of the index up to date (the services drop the marked blobs from the catalog's chunk
   index). Rewriting `gc/` changes the repository's *generation* (the names of the `gc/`
   objects), which is how a cache elsewhere learns that it is stale (a CLI prune behind the
   services' back): a backup compares the generation after taking its lock, and reconciles
   first if it changed.
2. **Sweep.** A mark's objects are deleted only once every backup or restore (restores hold a
   shared "restore" lock, `Repository.read_lock`) that started before the mark (plus
   `GC_CLOCK_SKEW` for clocks of other machines) has ended: no live lock of one remains
   (a lock is gone, or stale after 30 minutes without refresh; a backup whose lock lapsed does
   not save its snapshot, see `HeldLock.ensure_unbroken`). Then prune checks the snapshots
   saved since the mark: a blob one of them needs that is not in the index any more is found
   in the marked packs, and that pack is indexed again instead of deleted (a backup that
   deduplicated against garbage just before the mark keeps its data). A pack that is in the
   index again for any reason is never deleted. When no backup is running, the sweep follows
   the mark in the same run.

Backups that start after a mark never rely on its garbage: the index they load, or the chunk
index they reconcile with (it has the generation of the mark), lacks it, and the snapshots
they choose as parents are not forgotten ones. A mark also records the packs no index lists
(*orphans*: a backup writes a pack before its index file, and one killed in between leaves it
behind). An orphan is deleted only when it has been unindexed for `ORPHAN_MIN_AGE` and no
backup that started before it was first seen still runs; first, any blob the snapshots need that
the index lacks is looked for in the unindexed packs, and a pack that holds one is indexed
again (so a lost index file, or a cache that was stale, costs no data).

Only one prune runs at a time (its "prune" lock); an exclusive lock (rebuild-index) excludes it.
Prune also removes what interrupted work left behind: temporary files of writes whose writer
died (older than `TEMP_STALE_AFTER`: a live write touches its file every moment) and lock files
that are expired or whose process on this host is gone.

Memory that does not grow with the number of files
---------------------------------------------------
Prune holds no Python object per blob: the index is kept as its packs
(id, size, keys) with their blob records in an unnamed temporary file, the blobs snapshots need
as sorted runs on disk streamed from the lists of references (`IdRuns`), and the two are joined
one group of ids at a time to count each pack's live bytes (`timevault.core.prune_index`). The
new index is written a file at a time from the records on disk. Left in memory: a byte per blob
to say what a repack copies, the entries of the packs a repack writes only while a cache (the
services') is told of them, and, only when a list of references is damaged and the trees are
read instead, the in-memory index and a set.

Crash safety (kill -9 at any moment)
------------------------------------
New packs without their index are orphans; the new index is written in parts, the part that
supersedes the old files last, so until it exists the old files stay in force. Before the new
index is written the state is rewritten (`marking`): the generation changes even if prune dies
right after the index, and caches reconcile. Deletions happen only for marks already
published; a sweep killed half way is repeated by the next run (deleting is idempotent and
each deletion is checked again). The state is replaced by writing the new object first.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from timevault.core import crypto, retention
from timevault.core.checker import used_blobs
from timevault.core.errors import PruneCanceled, ReadAccessRequired, RepositoryError
from timevault.core.holds import hold
from timevault.core.prune_index import PackCounts, SpilledIndex, SpilledPack
from timevault.core.repository import gcstate
from timevault.core.repository import references as refs
from timevault.core.repository.blobs import EncodedBlob
from timevault.core.repository.format import GcMark, GcOrphan, IndexPack, Lock, References, Snapshot
from timevault.core.repository.gcstate import StoredState
from timevault.core.repository.history import CONTRADICTS
from timevault.core.repository.idruns import IdRuns
from timevault.core.repository.index import decode_index_file, encode_index_file, pack_object_name
from timevault.core.repository.pack import CorruptPack, Packer, index_entry, read_remote_pack_header
from timevault.core.repository.repo import HeldLock, Repository
from timevault.core.storage import ObjectNotFound, StorageError
from timevault.core.storage.once import put_once

GC_CLOCK_SKEW = 5 * 60
"""Seconds by which the clocks of machines sharing a repository may disagree: a backup whose
lock started up to this long after a mark counts as started before it."""
ORPHAN_MIN_AGE = 60 * 60
"""An unindexed pack is deleted only after it was first seen unindexed this long ago (a backup
writes its pack before the pack's index file; an uploader of a backup that died may still
finish a pack for up to its idle timeout, 10 minutes)."""
REPACK_BELOW = 0.5
"""A pack whose live blobs are less than this share of its bytes is repacked; fuller packs with
some garbage stay as they are until more of them is garbage."""
TEMP_STALE_AFTER = 10 * 60
"""A temporary file this long unchanged has no writer any more (a pack is written in seconds)."""
INDEX_PACKS_PER_FILE = 2048
"""Packs per index file prune writes at most (~32 GiB of data each)."""
STREAM_REFERENCES_ABOVE = 1 << 20
"""A list of references larger than this is streamed, never read whole, to learn whether it is a
delta (a full list of 32,768 ids or more, or a large delta, which is then read whole)."""
INDEX_BLOBS_PER_FILE = 16384
"""Blobs per index file prune writes at most (a pack of many small files holds thousands):
whoever loads the index decodes one file at a time, an object per blob, so a file of a million
blobs would cost a few hundred MiB for a moment; one of this size costs a few MiB."""


# --- forget ------------------------------------------------------------------------------------


async def forget(repo: Repository, refs: list[str], reason: str = "forgotten on request") -> list[str]:
    """Remove the named snapshots (ids, prefixes or 'latest'); returns the removed ids.

    With the password the history is then endorsed without them (put back later, they
    contradict it); without, a forget record says they were forgotten.
    """
    ids = list(dict.fromkeys([await repo.resolve_snapshot(ref) for ref in refs]))
    await repo.forget_snapshots(ids, reason)
    if repo.can_endorse:
        await repo.endorse()
    return ids


@dataclass
class RetentionResult:
    """What retention decided: every snapshot it judged (newest first) and what it forgot."""

    decisions: list[retention.Decision]
    forgotten: list[str]
    left_alone: list[str] = field(default_factory=list)
    """Snapshots that contradict the endorsed history: not judged, not forgotten."""
    snapshots: dict[str, Snapshot] = field(default_factory=dict)


async def forget_by_rules(
    repo: Repository, rules: retention.Rules, timezone: str = "UTC", *, dry_run: bool = False,
    reason: str | None = None,
) -> RetentionResult:
    """Forget every snapshot that no rule keeps (the buckets are in `timezone`).

    A repository holds the backups of one plan, so the rules apply to all its snapshots as one
    group. Snapshots that contradict the endorsed history are left alone: they are not part of
    it, and `check` reports them. With no rule set, nothing is forgotten.
    """
    damaged: list[str] = []
    history, snapshots = await repo.load_history(damaged)
    consistent = {sid: s for sid, s in snapshots.items() if history.status.get(sid) != CONTRADICTS}
    judged = [retention.Snapshot(sid, _parse_time(s.time)) for sid, s in consistent.items()]
    decisions = retention.apply(judged, rules, timezone)
    forgotten = [d.snapshot.id for d in decisions if not d.keep]
    if forgotten and not dry_run:
        await repo.forget_snapshots(forgotten, reason or f"retention: {retention.describe(rules)}")
    if repo.can_endorse and not dry_run:
        await repo.endorse()
    left_alone = sorted(set(snapshots) - set(consistent))
    return RetentionResult(decisions, forgotten, left_alone, consistent)


def _parse_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise RepositoryError(f"a snapshot has an invalid time {value!r}") from exc
    if parsed.tzinfo is None:
        raise RepositoryError(f"a snapshot has a time without a zone {value!r}")
    return parsed


# --- prune ---------------------------------------------------------------------------------------


@dataclass
class CacheUpdate:
    """What a cache of the index (the services' chunk index) must learn before a state is published."""

    generation: list[str]
    """The repository's generation once the state is published."""
    removed_packs: list[str] = field(default_factory=list)
    """Packs that left the index: none of their blobs may be deduplicated against any more."""
    added: list[IndexPack] = field(default_factory=list)
    """Packs that entered the index (repacked live blobs, packs indexed again)."""


@dataclass
class PruneOptions:
    dry_run: bool = False
    """Decide and report, write and delete nothing."""
    mark: bool = True
    """Mark garbage in this run (False: only sweep what earlier marks left)."""
    repack_below: float = REPACK_BELOW
    orphan_age: float = ORPHAN_MIN_AGE
    clock_skew: float = GC_CLOCK_SKEW
    on_publish: Callable[[CacheUpdate], Awaitable[None]] | None = None
    """Runs before each new state is published; if it raises, nothing is published."""
    cancel: asyncio.Event | None = None
    """Checked between steps: a canceled prune stops at a safe point."""
    spill_dir: str | None = None
    """Where prune keeps the index and the live blob ids while it runs (unnamed temporary files,
    ~100 bytes a blob); None: the system's temp folder."""


@dataclass
class PruneResult:
    packs_deleted: int = 0
    packs_repacked: int = 0
    bytes_freed: int = 0
    """Bytes deleted minus the bytes of the packs written by repacking."""
    bytes_deleted: int = 0
    bytes_written: int = 0
    blobs_removed: int = 0
    index_files_deleted: int = 0
    references_deleted: int = 0
    packs_rescued: int = 0
    """Packs indexed again because a snapshot needed a blob in them (see the module docstring)."""
    packs_pending: int = 0
    """Packs marked but not deleted yet: a backup that started before the mark still runs."""
    bytes_pending: int = 0
    orphans_pending: int = 0
    """Unindexed packs waiting for ORPHAN_MIN_AGE."""
    marked: bool = False
    notes: list[str] = field(default_factory=list)
    generation: list[str] = field(default_factory=list)
    temp_files_removed: int = 0
    """Temporary files of writes whose writer died (older than `TEMP_STALE_AFTER`)."""
    locks_removed: int = 0
    """Lock files that protected nothing any more (expired, or their process is gone)."""


@dataclass
class _IndexFile:
    """An index file as prune holds it: its packs' records are in the view's spill file."""

    supersedes: list[str]
    packs: list[SpilledPack]
    compacted: bool = False


@dataclass
class _View:
    """What prune read of the repository: every index file, the packs in storage."""

    files: dict[str, _IndexFile]
    """Every index file in storage; those superseded keep only their `supersedes` list."""
    stored: dict[str, int]
    index: SpilledIndex
    """The packs of the files in force, in index order (their blobs on disk, see `prune_index`)."""
    effective: set[str]
    """Index files in force (not superseded by another)."""
    young: set[str]
    """Packs listed only in index files that backups wrote (not in one prune wrote)."""

    @classmethod
    async def load(
        cls, repo: Repository, index: SpilledIndex, files: dict[str, _IndexFile] | None = None
    ) -> _View:
        """Read the index files not in `files`, their packs spilled to `index`'s file (emptied
        of packs and used again after a mark). Closes `index` if it fails."""
        try:
            return await cls._load(repo, dict(files or {}), index)
        except BaseException:
            index.close()
            raise

    @classmethod
    async def _load(cls, repo: Repository, files: dict[str, _IndexFile], index: SpilledIndex) -> _View:
        index.clear()
        names = [info.name.removeprefix("index/") async for info in repo.storage.list("index/")]
        missing = [name for name in names if name not in files]
        sem = asyncio.Semaphore(16)

        async def fetch(file_id: str) -> tuple[str, _IndexFile | None]:
            async with sem:
                try:
                    data = await repo.storage.get(f"index/{file_id}")
                except ObjectNotFound:
                    return file_id, None
            if crypto.content_hash(data).hex() != file_id:
                raise RepositoryError(
                    f"prune stopped: index file {file_id[:12]} does not match its name "
                    "(run `timevault repo rebuild-index`)"
                )
            try:
                decoded = decode_index_file(repo.write_keys.meta_key, data)
            except Exception as exc:
                raise RepositoryError(
                    f"prune stopped: index file {file_id[:12]} is damaged (run `timevault repo rebuild-index`)"
                ) from exc
            del data
            # Spilled at once: one decoded file (an object per blob) at a time.
            return file_id, _IndexFile(decoded.supersedes, [index.spill(p) for p in decoded.packs], decoded.compacted)

        for file_id, file in await asyncio.gather(*(fetch(name) for name in missing)):
            if file is not None:
                files[file_id] = file
        present = set(names)
        files = {file_id: file for file_id, file in files.items() if file_id in present}
        superseded = {old for file in files.values() for old in file.supersedes}
        effective = set(files) - superseded
        in_compacted: set[str] = set()
        for file_id in sorted(files):  # a stable order: the first pack named keeps a blob
            file = files[file_id]
            if file_id not in effective:
                file.packs = []  # only its name and `supersedes` matter now
                continue
            for pack in file.packs:
                index.add(pack)
                if file.compacted:
                    in_compacted.add(pack.id)
        stored = {info.name.rsplit("/", 1)[-1]: info.size async for info in repo.storage.list("data/")}
        return cls(files, stored, index, effective, set(index) - in_compacted)


class _Run:
    """One prune run: the lock, the state, what it read, what it did."""

    def __init__(self, repo: Repository, options: PruneOptions, held: HeldLock | None) -> None:
        self.repo = repo
        self.options = options
        self.held = held
        self.result = PruneResult()
        self.bases: dict[str, str | None] = {}  # references id → the full list it builds on

    def checkpoint(self) -> None:
        if self.options.cancel is not None and self.options.cancel.is_set():
            raise PruneCanceled("prune canceled; it stopped at a safe point")

    # --- what snapshots need --------------------------------------------------------------

    async def needed_by(self, snapshots: dict[str, Snapshot]) -> tuple[IdRuns, set[str]]:
        """(every blob `snapshots` need, the reference lists they name directly or as a base).

        Most lists are deltas against one of a few full lists. The snapshots that build on the
        same full list need all of it except what every one of them removed, plus what each
        added; so each full list is streamed once, as it is read, into sorted runs on disk
        (`IdRuns`: never held whole, never a set per snapshot). The caller closes the runs."""
        live = IdRuns(self.options.spill_dir)
        try:
            named = await self._add_needed(live, snapshots)
        except BaseException:
            live.close()
            raise
        return live, named

    async def _add_needed(self, live: IdRuns, snapshots: dict[str, Snapshot]) -> set[str]:
        named: set[str] = set()
        unreadable: list[tuple[str, Snapshot]] = []
        left_out: dict[str, set[bytes]] = {}  # full list -> what every snapshot on it removed
        users: dict[str, list[tuple[str, Snapshot]]] = {}
        added: list[tuple[bytes, tuple[str, Snapshot]]] = []
        for snapshot_id, snapshot in sorted(snapshots.items(), key=lambda item: (item[1].time, item[0])):
            if not snapshot.references:
                unreadable.append((snapshot_id, snapshot))
                continue
            try:
                record = await self._delta_or_base(snapshot.references)
            except (RepositoryError, StorageError):
                unreadable.append((snapshot_id, snapshot))
                continue
            self.bases[snapshot.references] = record.base
            if record.base is None:
                full, removed = snapshot.references, set()
            else:
                full, removed = record.base, refs.unpack_ids(record.removed)
                added.append((record.added, (snapshot_id, snapshot)))
            left_out[full] = left_out[full] & removed if full in left_out else removed
            users.setdefault(full, []).append((snapshot_id, snapshot))
        for full, removed in left_out.items():
            run = live.sorted_run()
            try:
                fields = await self.repo._stream_references(full, functools.partial(run.add, leave_out=removed))
                if fields.get("base") is not None:
                    raise RepositoryError(f"the list of references {full[:12]} is a delta where a full list belongs")
            except (RepositoryError, StorageError, ValueError):
                # Missing, damaged, or out of order (damaged or hostile): its snapshots are
                # recomputed from their trees below; what it streamed is never counted in.
                unreadable.extend(users[full])
                continue
            run.finish()
            self.bases[full] = None
            for _, snapshot in users[full]:
                named.add(snapshot.references)
                named.add(full)
        for data, user in added:  # a delta whose full list is unreadable adds nothing wrong: its
            run = live.sorted_run()  # snapshot is recomputed from its trees below
            try:
                run.add(data)
            except ValueError:
                unreadable.append(user)
                continue
            run.finish()
        del added
        if unreadable:
            if not self.repo.can_read:
                first = unreadable[0][0]
                raise ReadAccessRequired(
                    f"prune stopped: the list of references of snapshot {first[:8]} is missing or damaged "
                    f"({len(unreadable)} snapshot(s)); `timevault repo prune` with the password recomputes "
                    "what they need from their trees"
                )
            errors: list[str] = []
            live.update(await used_blobs(self.repo, await self.repo.index(reload=True), errors, unreadable))
            if errors:
                raise RepositoryError("prune stopped, the repository has damage (run check): " + errors[0])
        return named

    async def _delta_or_base(self, references_id: str) -> References:
        """A list of references without the ids of a full list (`added` left empty): a full list
        of a million ids is 32 MiB, read whole only to learn that it has no base. A delta is
        read whole (it is small: at most a quarter of its base)."""
        if await self.repo._references_size(references_id) <= STREAM_REFERENCES_ABOVE:
            record = await self.repo._references_file(references_id)
            return record if record.base is not None else References(base=None)
        fields = await self.repo._stream_references(references_id, None)
        if fields.get("base") is None:
            return References(base=None)
        return await self.repo._references_file(references_id)

    async def snapshots(self) -> dict[str, Snapshot]:
        """Every snapshot in storage, the contradicting ones included: prune never removes data a
        snapshot that exists needs, whatever its standing."""
        damaged: list[str] = []
        _, snapshots = await self.repo.load_history(damaged)
        if damaged:
            raise RepositoryError(
                "prune stopped: " + damaged[0] + " (a snapshot that cannot be read may need any data; run check)"
            )
        return snapshots

    # --- locks ----------------------------------------------------------------------------

    async def backup_locks(self) -> list[Lock]:
        own = self.held.name if self.held is not None else None
        return [lock for name, lock in await self.repo.live_locks() if name != own and lock.kind != "prune"]

    def blocked_by(self, locks: list[Lock], moment: float) -> list[Lock]:
        """The locks of backups that started before `moment` (within the clock skew)."""
        return [lock for lock in locks if (lock.started or 0.0) < moment + self.options.clock_skew]

    # --- finding blobs the index lacks ----------------------------------------------------

    async def find_in_packs(self, missing: set[bytes], packs: Iterable[str], view: _View) -> list[IndexPack]:
        """The entries of the unindexed `packs` (read from their headers) that hold any of `missing`."""
        found: list[IndexPack] = []
        for pack_id in sorted(packs):
            size = view.stored.get(pack_id)
            if size is None or not missing:
                continue
            try:
                header = await read_remote_pack_header(
                    self.repo.storage, self.repo.write_keys.meta_key, pack_object_name(pack_id), size
                )
            except ObjectNotFound:
                continue
            except CorruptPack as exc:
                self.result.notes.append(f"pack {pack_id[:12]} is not in the index and unreadable: {exc}")
                continue
            entry = index_entry(pack_id, size, header)
            if any(blob.id in missing for blob in entry.blobs):
                found.append(entry)
                missing.difference_update(blob.id for blob in entry.blobs)
        return found


async def prune(repo: Repository, options: PruneOptions | None = None) -> PruneResult:
    """Sweep what earlier marks left (where no backup can need it), mark the garbage of now,
    and sweep that too if no backup is running. See the module docstring."""
    options = options or PruneOptions()
    repo.require_valid_config()
    if options.dry_run:
        run = _Run(repo, options, None)
        stored = await gcstate.load(repo.storage, repo.write_keys.meta_key)
        view = await _View.load(repo, SpilledIndex(options.spill_dir))
        try:
            await _plan(run, stored, view)
        finally:
            view.index.close()
        return run.result
    async with repo.lock(kind="prune") as held:
        run = _Run(repo, options, held)
        for name in await repo.stale_locks():  # left by killed or long-gone processes
            await repo.storage.delete(name)
            run.result.locks_removed += 1
        stored = await gcstate.load(repo.storage, repo.write_keys.meta_key)
        view = await _View.load(repo, SpilledIndex(options.spill_dir))
        try:
            if options.mark:
                stored, view = await _mark(run, stored, view)
            stored = await _sweep(run, stored, view)
        finally:
            view.index.close()  # the spill file: one for both views
        run.result.temp_files_removed, leftover_bytes = await _remove_leftovers(repo)
        run.result.bytes_deleted += leftover_bytes
        _report_pending(run, stored, view)
        run.result.generation = stored.generation
    repo._index = None  # what the repository object cached may be garbage now
    if repo.can_endorse:
        await repo.endorse()
    return run.result


@dataclass
class _Plan:
    counts: PackCounts
    """Per pack of the index (in index order, by number): the live bytes it holds, what to copy."""
    named: set[str]
    snapshots: dict[str, Snapshot]
    keep: list[str]
    drop: list[int]
    """Numbers of packs in `counts` (as `repack`)."""
    repack: list[int]
    rescue: list[IndexPack]
    orphans: dict[str, float]
    references: list[str]

    def removed(self) -> list[str]:
        """The packs that leave the index."""
        return [self.counts.packs[number].id for number in self.drop + self.repack]

    def blobs_removed(self) -> int:
        return sum(self.counts.dead[number] for number in self.drop + self.repack)


async def _plan(run: _Run, stored: StoredState, view: _View) -> _Plan:
    """Decide what to mark (and, in a dry run, report it)."""
    snapshots = await run.snapshots()
    live, named = await run.needed_by(snapshots)
    try:
        return await _decide(run, stored, view, live, named, snapshots)
    finally:
        live.close()


async def _decide(
    run: _Run, stored: StoredState, view: _View, live: IdRuns, named: set[str], snapshots: dict[str, Snapshot]
) -> _Plan:
    index = view.index
    pending = stored.pending_packs()
    unindexed = {pack for pack in view.stored if pack not in index}
    counts = await asyncio.to_thread(index.count_live, live.sorted_blocks())
    # Blobs a snapshot needs that no index lists: look in the unindexed packs (an index file
    # lost, a cache that was stale when a backup deduplicated). Found, they are indexed again.
    missing = counts.missing
    rescue = await run.find_in_packs(missing, unindexed, view) if missing else []
    if missing:
        raise RepositoryError(
            f"prune stopped, the repository has damage (run check): {len(missing)} blob(s) that snapshots "
            f"need are in no pack, first {next(iter(missing)).hex()[:16]}"
        )
    if rescue:
        for entry in rescue:
            index.add_pack(entry)
        counts = await asyncio.to_thread(index.count_live, live.sorted_blocks())  # with them, last
    rescued = {entry.id for entry in rescue}
    missing_packs = [pack for pack in index if pack not in view.stored]
    if missing_packs:
        raise RepositoryError(
            f"prune stopped, the repository has damage (run check): pack {missing_packs[0][:12]} is in the "
            "index but missing from storage"
        )
    busy = bool(await run.backup_locks()) if not run.options.dry_run else False
    keep: list[str] = []  # ids only: a pack's entry is read back when the new index is written
    drop: list[int] = []
    repack: list[int] = []
    for number, pack in enumerate(counts.packs):
        if busy and pack.id in view.young and pack.id not in rescued:
            keep.append(pack.id)  # perhaps a running backup's, not named by a snapshot yet
            continue
        live_bytes = counts.owned_live[number]
        if live_bytes == 0:
            drop.append(number)
        elif live_bytes < run.options.repack_below * counts.size[number] and counts.spare[number]:
            repack.append(number)
        else:
            keep.append(pack.id)
    now = time.time()
    known = {orphan.pack: orphan.seen for orphan in stored.state.orphans}
    orphans = {pack: known.get(pack, now) for pack in unindexed - pending - rescued}
    unused = sorted(
        [info.name.removeprefix("references/") async for info in run.repo.storage.list("references/")]
    )
    references = [ref for ref in unused if ref not in named]
    kept = set(keep)
    rescue = [entry for entry in rescue if entry.id in kept]  # rescued packs that stay as they are
    plan = _Plan(counts, named, snapshots, keep, drop, repack, rescue, orphans, references)
    result = run.result
    if run.options.dry_run:
        result.packs_deleted = len(drop)
        result.packs_repacked = len(repack)
        result.bytes_deleted = sum(counts.packs[number].size for number in drop + repack)
        live_in_repack = sum(counts.live[number] for number in repack)
        result.bytes_written = live_in_repack
        result.bytes_freed = result.bytes_deleted - live_in_repack
        result.blobs_removed = plan.blobs_removed()
        result.references_deleted = len(references)
        result.packs_rescued = len(rescue)
        result.orphans_pending = len(orphans)
        result.packs_pending = len(pending)
    return plan


async def _mark(run: _Run, stored: StoredState, view: _View) -> tuple[StoredState, _View]:
    repo, options, result = run.repo, run.options, run.result
    plan = await _plan(run, stored, view)
    run.checkpoint()
    meta_key = repo.write_keys.meta_key
    # 1. Copy the live blobs of mostly-garbage packs into new packs (not indexed yet: orphans
    #    until the index below names them).
    index, counts = view.index, plan.counts
    new_packs: list[SpilledPack] = []  # their entries go to the spill file as each is written

    def spill_new(entry: IndexPack) -> None:
        new_packs.append(index.spill(entry))

    # Without dedup: the join flags each live blob in one place only (the pack the index takes
    # it from), so no id comes twice, and the packer keeps no set of every id it copied.
    packer = Packer(repo.storage, meta_key, write_index=False, on_written=spill_new, dedup=False)
    for number in plan.repack:
        pack = index.entry(counts.packs[number])
        data = await repo.storage.get(pack_object_name(pack.id))
        if len(data) != pack.size:
            raise RepositoryError(f"prune stopped: pack {pack.id[:12]} is truncated (run check)")
        copy = counts.keep[number]
        for position, blob in enumerate(pack.blobs):
            if copy[position]:  # live, and this is the pack the index takes it from
                payload = bytes(memoryview(data)[blob.offset : blob.offset + blob.length])
                sealed = pack.keys[blob.key]  # blobs move with their own data key: never re-encrypted
                await packer.add(EncodedBlob(blob.id, blob.type, blob.raw_length, payload, sealed))
        del data, pack
        run.checkpoint()
    await packer.flush()
    result.bytes_written = sum(pack.size for pack in new_packs)
    await hold("prune.repacked")
    # 2. The generation changes before the new index exists (see the module docstring).
    stored = await gcstate.publish(repo.storage, meta_key, stored, gcstate.next_state(stored.state,
                                                                                      marking=time.time()))
    await hold("prune.marking")
    # 3. The new index: every pack that stays, the rescued and the new ones; the part that
    #    supersedes every file read is written last. Written a part at a time from the spill
    #    file; the packs' records stay there for the view read next.
    entries: list[SpilledPack] = [index.packs[pack_id] for pack_id in plan.keep] + new_packs
    superseded = sorted(view.files)
    parts = _index_file_parts(entries)
    written: dict[str, _IndexFile] = {}
    for number, part in enumerate(parts):
        last = number == len(parts) - 1
        packs = [index.entry(spilled) for spilled in part]
        file_id, data = encode_index_file(meta_key, packs, superseded if last else None, compacted=True)
        await put_once(repo.storage, f"index/{file_id}", data)
        written[file_id] = _IndexFile(superseded if last else [], part, True)
        del packs, data
    await hold("prune.indexed")
    # 4. Publish the mark; caches learn first what left the index.
    removed = plan.removed()
    now = time.time()
    mark = GcMark(time=now, snapshots=sorted(plan.snapshots), packs=removed, index=superseded,
                  references=plan.references)
    orphans = [GcOrphan(pack, seen) for pack, seen in sorted(plan.orphans.items())]
    state = gcstate.next_state(stored.state, marks=[*stored.state.marks, mark], orphans=orphans,
                               last_mark=now, marking=0.0, last_snapshots=sorted(plan.snapshots))
    generation, state_id, state_data = gcstate.precompute_generation(meta_key, state)
    if options.on_publish is not None:
        added = plan.rescue + [index.entry(pack) for pack in new_packs]  # what the cache must learn
        await options.on_publish(CacheUpdate(generation, removed, added))
        del added
    await hold("prune.cache-updated")
    stored = await gcstate.publish_encoded(repo.storage, stored, state, state_id, state_data)
    await hold("prune.marked")
    result.marked = True
    result.packs_repacked = len(plan.repack)
    result.packs_rescued += len(plan.rescue)
    result.blobs_removed = plan.blobs_removed()
    files = {**view.files, **written}
    del plan, counts
    return stored, await _View.load(repo, index, files)  # the same spill file: nothing read twice


def _index_file_parts(entries: list[SpilledPack]) -> list[list[SpilledPack]]:
    """`entries` cut into the packs of each index file to write (one part, maybe empty, at least)."""
    parts: list[list[SpilledPack]] = [[]]
    blobs = 0
    for entry in entries:
        part = parts[-1]
        if part and (len(part) >= INDEX_PACKS_PER_FILE or blobs + entry.count > INDEX_BLOBS_PER_FILE):
            part = []
            parts.append(part)
            blobs = 0
        part.append(entry)
        blobs += entry.count
    return parts


async def _sweep(run: _Run, stored: StoredState, view: _View) -> StoredState:
    """Delete what the published marks (and orphans) allow now; publish what is left."""
    repo, options, result = run.repo, run.options, run.result
    state = stored.state
    if not state.marks and not state.orphans:
        return stored
    locks = await run.backup_locks()
    now = time.time()
    index = view.index
    remaining: list[GcMark] = []
    rescued: list[IndexPack] = []
    current: dict[str, Snapshot] | None = None
    for position, mark in enumerate(state.marks):
        if run.blocked_by(locks, mark.time):
            remaining.extend(state.marks[position:])  # later marks are later still
            break
        if current is None:
            current = await run.snapshots()
        run.checkpoint()
        since = {sid: s for sid, s in current.items() if sid not in set(mark.snapshots)}
        needed, named = await run.needed_by(since)
        try:
            for snapshot in current.values():
                if snapshot.references:
                    named.add(snapshot.references)
                    base = run.bases.get(snapshot.references)
                    if base:
                        named.add(base)
            # Only snapshots saved since the mark can need what it took out (none, mostly).
            missing = (await asyncio.to_thread(index.count_live, needed.sorted_blocks())).missing if since else set()
        finally:
            needed.close()
        back = await run.find_in_packs(missing, [p for p in mark.packs if p not in index], view)
        if back:
            # Saved since the mark with a blob the mark took out: that pack goes back in.
            file_id, data = encode_index_file(repo.write_keys.meta_key, back)
            await put_once(repo.storage, f"index/{file_id}", data)
            for entry in back:
                index.add_pack(entry)
            rescued.extend(back)
            result.packs_rescued += len(back)
        await hold("prune.sweeping")
        for pack_id in mark.packs:
            size = view.stored.get(pack_id)
            if pack_id in index or size is None:
                continue  # indexed again (never delete what the index names), or gone already
            await repo.storage.delete(pack_object_name(pack_id))
            del view.stored[pack_id]
            result.packs_deleted += 1
            result.bytes_deleted += size
            await hold("prune.deleting")
        for file_id in mark.index:
            if file_id not in view.effective and file_id in view.files:
                await repo.storage.delete(f"index/{file_id}")
                view.files.pop(file_id, None)
                result.index_files_deleted += 1
        for references_id in mark.references:
            if references_id not in named:
                await repo.storage.delete(f"references/{references_id}")
                result.references_deleted += 1
    orphans: list[GcOrphan] = []
    for orphan in state.orphans:
        if orphan.pack in index or orphan.pack not in view.stored:
            continue  # indexed since (or rescued), or gone
        old_enough = now - orphan.seen >= options.orphan_age
        if not (result.marked and old_enough) or run.blocked_by(locks, orphan.seen):
            orphans.append(orphan)  # deleted only in a run whose mark looked for needed blobs in it
            continue
        size = view.stored.pop(orphan.pack)
        await repo.storage.delete(pack_object_name(orphan.pack))
        result.packs_deleted += 1
        result.bytes_deleted += size
    result.bytes_freed = result.bytes_deleted - result.bytes_written
    if remaining == state.marks and orphans == state.orphans and not rescued:
        return stored
    new_state = gcstate.next_state(state, marks=remaining, orphans=orphans)
    generation, state_id, state_data = gcstate.precompute_generation(repo.write_keys.meta_key, new_state)
    if options.on_publish is not None:
        await options.on_publish(CacheUpdate(generation, [], rescued))
    return await gcstate.publish_encoded(repo.storage, stored, new_state, state_id, state_data)


def _report_pending(run: _Run, stored: StoredState, view: _View) -> None:
    result = run.result
    result.packs_pending = len(stored.pending_packs())
    result.bytes_pending = sum(view.stored.get(pack, 0) for pack in stored.pending_packs())
    result.orphans_pending = len(stored.state.orphans)
    if result.packs_pending:
        result.notes.append(
            f"{result.packs_pending} pack(s) ({result.bytes_pending} bytes) are marked and will be deleted by a "
            "later prune, once the backups that were running when they were marked have ended"
        )
    result.bytes_freed = result.bytes_deleted - result.bytes_written


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


async def mark_due(repo: Repository, every: float) -> bool:
    """Whether a prune that forgot nothing itself should still mark: a snapshot of the last mark
    is gone (forgotten elsewhere), the last mark is older than `every` seconds (what interrupted
    backups left behind is found then), it never marked, or unindexed packs wait to be deleted
    (only a run that marks deletes them). Marks that wait for running backups need no new mark:
    every run sweeps."""
    stored = await gcstate.load(repo.storage, repo.write_keys.meta_key)
    state = stored.state
    if state.orphans or not state.last_mark or time.time() - state.last_mark >= every:
        return True
    current = {info.name.removeprefix("snapshots/") async for info in repo.storage.list("snapshots/")}
    return not set(state.last_snapshots) <= current


async def pending_packs(repo: Repository) -> set[str]:
    """Packs garbage collection took out of the index and will delete (never index them again)."""
    with contextlib.suppress(RepositoryError):
        return (await gcstate.load(repo.storage, repo.write_keys.meta_key)).pending_packs()
    return set()


__all__ = [
    "GC_CLOCK_SKEW",
    "ORPHAN_MIN_AGE",
    "CacheUpdate",
    "PruneCanceled",
    "PruneOptions",
    "PruneResult",
    "RetentionResult",
    "forget",
    "forget_by_rules",
    "mark_due",
    "prune",
]

