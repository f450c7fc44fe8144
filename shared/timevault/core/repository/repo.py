"""A repository: one backup plan's encrypted, deduplicated store in one location.

Open it with the password for full access (backup, list, restore, check, prune, endorse), or
with the exported write keys for the write-only tier (backup, list snapshots and what they
reference, never read contents, never endorse).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import socket
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Container
from datetime import UTC, datetime

import blake3
import msgspec

from timevault.core import crypto
from timevault.core.buffers import BytesLike
from timevault.core.chunker import ChunkerParams
from timevault.core.errors import (
    ConfigError,
    HistoryError,
    NotARepository,
    NotEmpty,
    ReadAccessRequired,
    RepositoryError,
    RepositoryLocked,
    RepositoryNotFound,
)
from timevault.core.repository import config as repoconfig
from timevault.core.repository import endorsements, forgets, gcstate, layout, references
from timevault.core.repository import keys as keyfiles
from timevault.core.repository.blobs import CorruptBlob, decode
from timevault.core.repository.compact import ID_SIZE, IdMap, IdSet
from timevault.core.repository.format import (
    FORMAT_VERSION,
    BlobType,
    ChunkerConfig,
    Config,
    ConfigFile,
    Endorsement,
    ForgetRecord,
    IndexPack,
    Lock,
    MasterKeys,
    References,
    Snapshot,
    Tree,
    WriteKeys,
)
from timevault.core.repository.history import CONTRADICTS, History, classify
from timevault.core.repository.idruns import DiskIdSet, IdRuns
from timevault.core.repository.index import (
    BlobLookup,
    Index,
    load_stored_ids,
    pack_object_name,
    write_index_file,
)
from timevault.core.repository.locations import BlobLocations, load_locations
from timevault.core.repository.pack import CorruptPack, index_entry, read_remote_pack_header
from timevault.core.storage import (
    LocationFull,
    LocationNotFound,
    LocationReadOnly,
    ObjectNotFound,
    Storage,
    StorageError,
)
from timevault.core.storage.once import put_once

# A list of references up to this size is read whole; a larger one (a full list) in pieces.
_SMALL_REFERENCES = 1 << 20
_STREAM_PIECE = 1 << 20

__all__ = [
    "ConfigError",
    "HistoryError",
    "NotARepository",
    "ReadAccessRequired",
    "Repository",
    "RepositoryError",
    "RepositoryLocked",
    "RepositoryNotFound",
]

# Trees are read from their packs in aligned windows, and a few windows are kept: walking a
# snapshot touches thousands of trees, mostly stored near each other (one request each is slow
# on S3). Windows, not whole packs: the cache stays at TREE_WINDOW * TREE_WINDOWS_KEPT however
# many tree packs a snapshot has (whole packs kept 4 x 16 MiB once trees filled 4 packs).
TREE_WINDOW = 2 * 1024 * 1024
TREE_WINDOWS_KEPT = 4
# Trees up to this size are decoded on the event loop (~20 µs); a thread hop costs more.
DECODE_INLINE_MAX = 64 * 1024
LOCK_STALE_AFTER = 30 * 60
LOCK_REFRESH_EVERY = 5 * 60
# A lock this close to expiring no longer vouches for its holder (see HeldLock).
LOCK_SAFETY = 60

_tree_decoder = msgspec.msgpack.Decoder(Tree)
_snapshot_decoder = msgspec.msgpack.Decoder(Snapshot)
_lock_decoder = msgspec.msgpack.Decoder(Lock)
log = logging.getLogger(__name__)


class Repository:
    def __init__(
        self,
        storage: Storage,
        config: Config,
        write: WriteKeys,
        private_key: bytes | None,
        key_name: str | None = None,
        *,
        sign_key: bytes | None = None,
        config_problems: list[str] | None = None,
    ) -> None:
        self.storage = storage
        self.config = config
        self.write_keys = write
        # What is wrong with `config` (not authentic, unknown algorithm, out of range). Readers
        # go on (a restore needs no parameter); writers refuse (`require_valid_config`).
        self.config_problems = config_problems or []
        self._private_key = private_key
        self._sign_key = sign_key
        self._unsealer = crypto.Unsealer(private_key) if private_key else None
        self._key_name = key_name
        self._index: Index | None = None
        self._index_generation: list[str] = []
        self._tree_packs: OrderedDict[tuple[str, int], asyncio.Future[bytes]] = OrderedDict()
        self._snapshot_key = crypto.subkey(write.meta_key, "snapshot id")
        # Snapshots and endorsements never change (their names are hashes of their content),
        # so what was read once is kept: saving a snapshot lists the history again.
        self._snapshots: dict[str, Snapshot] = {}
        self._endorsements: dict[str, Endorsement] = {}

    # --- creating and opening ------------------------------------------------------------

    @classmethod
    async def init(
        cls,
        storage: Storage,
        password: str,
        *,
        chunker: ChunkerParams | None = None,
        kdf: crypto.Argon2Params | None = None,
    ) -> Repository:
        keyfiles.check_password(password)
        chunker = chunker or ChunkerParams()
        wrong = repoconfig.check_chunker(chunker)
        if wrong:
            raise ConfigError(f"cannot create a repository: {wrong[0]}")
        try:
            await storage.stat("config")
        except ObjectNotFound:
            pass
        else:
            raise RepositoryError(f"{storage.location}: a repository already exists here")
        await _refuse_if_not_empty(storage)
        repo_id = secrets.token_hex(16)
        master = keyfiles.new_master_keys(repo_id)
        config = Config(
            version=FORMAT_VERSION,
            id=repo_id,
            chunker=ChunkerConfig(chunker.min_size, chunker.avg_size, chunker.max_size),
            created=_now(),
        )
        key_data = await asyncio.to_thread(keyfiles.wrap_keys, master, password, kdf)
        key_name = f"keys/{crypto.content_hash(key_data).hex()}"
        repo = cls(storage, config, master.write, master.private_key, key_name, sign_key=master.sign_key)
        # Keys, the first endorsement (of the empty history), then config: a config is the
        # mark of a complete repository, and a complete one always has an endorsement.
        await put_once(storage, key_name, key_data)
        await repo.endorse()
        if not await put_once(storage, "config", repoconfig.encode(config, master.sign_key)):
            raise RepositoryError(f"{storage.location}: a repository was created here at the same time")
        return repo

    @classmethod
    async def open(cls, storage: Storage, password: str) -> Repository:
        outer = repoconfig.peek(await _load_config(storage), storage.location)
        key_names = [info.name async for info in storage.list("keys/")]
        for name in sorted(key_names):
            data = await storage.get(name)
            try:
                master = await asyncio.to_thread(keyfiles.unwrap_keys, data, password)
            except keyfiles.WrongPassword:
                continue
            if master.write.repo_id != outer.id:
                continue
            config, problems = _verified_config(outer, master.write, storage.location)
            return cls(
                storage,
                config,
                master.write,
                master.private_key,
                name,
                sign_key=master.sign_key,
                config_problems=problems,
            )
        raise keyfiles.WrongPassword(f"{storage.location}: wrong password (no key opens this repository)")

    @classmethod
    async def open_write_only(cls, storage: Storage, write_keys: bytes) -> Repository:
        outer = repoconfig.peek(await _load_config(storage), storage.location)
        write = keyfiles.decode_write_keys(write_keys)
        if write.repo_id != outer.id:
            raise RepositoryError(f"{storage.location}: write keys belong to another repository")
        config, problems = _verified_config(outer, write, storage.location)
        return cls(storage, config, write, None, config_problems=problems)

    def require_valid_config(self) -> None:
        """Raise ConfigError when `config` is not authentic or not usable (before any write)."""
        if self.config_problems:
            raise ConfigError(
                "; ".join(self.config_problems)
                + " — refusing to write to this repository (run `timevault repo check`)"
            )

    def export_write_keys(self) -> bytes:
        """The write tier, for a machine that backs up in the background. Secret: store 0600."""
        return keyfiles.encode_write_keys(self.write_keys)

    @property
    def can_read(self) -> bool:
        return self._unsealer is not None

    @property
    def can_endorse(self) -> bool:
        return self._sign_key is not None

    @property
    def chunker_params(self) -> ChunkerParams:
        c = self.config.chunker
        return ChunkerParams(c.min_size, c.avg_size, c.max_size, self.write_keys.chunker_seed)

    async def change_password(self, new_password: str, kdf: crypto.Argon2Params | None = None) -> None:
        """Write a key file for `new_password` (argon2id at today's parameters), then remove the
        old one. Data is not touched."""
        if self._private_key is None or self._key_name is None or self._sign_key is None:
            raise ReadAccessRequired("changing the password needs the current password")
        master = MasterKeys(write=self.write_keys, private_key=self._private_key, sign_key=self._sign_key)
        key_data = await asyncio.to_thread(keyfiles.wrap_keys, master, new_password, kdf)
        new_name = f"keys/{crypto.content_hash(key_data).hex()}"
        await put_once(self.storage, new_name, key_data)
        await self.storage.delete(self._key_name)
        self._key_name = new_name

    async def close(self) -> None:
        await self.storage.close()

    async def verify_intact(self) -> None:
        """Raise RepositoryError unless the location still holds this repository, readable.

        A backup calls this just before it commits: a location removed (or replaced, or made
        unreadable) while the backup ran must fail the backup, never yield a snapshot that
        cannot be restored because the config or the keys are gone.
        """
        where = self.storage.location
        try:
            data = await self.storage.get("config")
        except ObjectNotFound as exc:
            raise RepositoryError(f"location disappeared: the repository's config is gone from {where}") from exc
        except StorageError as exc:
            raise RepositoryError(f"the repository's config is no longer readable: {exc}") from exc
        try:
            config, problems = _verified_config(repoconfig.peek(data, where), self.write_keys, where)
        except RepositoryError as exc:
            raise RepositoryError(f"the repository's config in {where} is damaged: {exc}") from exc
        if problems or config != self.config:
            raise RepositoryError(f"the repository's config in {where} was replaced or changed while the backup ran")
        try:
            names = [info.name async for info in self.storage.list("keys/")]
            for name in names:
                await self.storage.get(name)
        except StorageError as exc:
            raise RepositoryError(f"the repository's keys are no longer readable: {exc}") from exc
        if not names:
            raise RepositoryError(f"location disappeared: the repository's keys are gone from {where}")

    async def stale_locks(self) -> list[str]:
        """Lock files that protect nothing: expired, or held by a process of this host that is gone."""
        stale = []
        now = time.time()
        async for info in self.storage.list("locks/"):
            try:
                lock = _lock_decoder.decode(self.decrypt_meta(await self.storage.get(info.name), b"lock"))
            except ObjectNotFound:
                continue
            except (crypto.Unauthenticated, msgspec.DecodeError):
                continue  # not ours (another key's): never removed on a guess
            if lock.expires <= now or _dead_local_process(lock):
                stale.append(info.name)
        return stale

    # --- metadata ------------------------------------------------------------------------

    def encrypt_meta(self, plaintext: bytes, purpose: bytes) -> bytes:
        return crypto.encrypt(self.write_keys.meta_key, plaintext, purpose)

    def decrypt_meta(self, data: bytes, purpose: bytes) -> bytes:
        return crypto.decrypt(self.write_keys.meta_key, data, purpose)

    async def index(self, *, reload: bool = False) -> Index:
        if self._index is None or reload:
            generation = await self.gc_generation()
            self._index = await Index.load(self.storage, self.write_keys.meta_key)
            self._index_generation = generation
            self._tree_packs.clear()
        return self._index

    async def current_index(self) -> Index:
        """The index, loaded again if garbage collection changed the repository since it was
        (a backup must never deduplicate against data that prune took out of the index)."""
        if self._index is not None and await self.gc_generation() == self._index_generation:
            return self._index
        return await self.index(reload=True)

    async def known_ids(self) -> Index:
        """The index without locations, loaded afresh: which blobs the repository holds (~32
        bytes a blob instead of ~90), all a backup needs to deduplicate."""
        return await Index.load(self.storage, self.write_keys.meta_key, locations=False)

    async def stored_ids(self, spill_dir: str | None = None) -> DiskIdSet:
        """Which blobs the repository holds, as a set kept on disk (in `spill_dir`, else the
        system's temp folder): memory does not grow with the blobs. The caller closes it."""
        ids, _ = await load_stored_ids(self.storage, self.write_keys.meta_key, lambda: DiskIdSet(spill_dir))
        return ids

    def forget_index(self) -> None:
        """Packs were indexed past the cached index (a backup deduplicating against `known_ids`):
        load it again when it is next asked for."""
        self._index = None
        self._tree_packs.clear()

    async def gc_generation(self) -> list[str]:
        """The names of the `gc/` objects: they change whenever prune may have removed data, so a
        cache of the index (the services' chunk index) compares them to know it is stale."""
        return sorted([info.name.removeprefix("gc/") async for info in self.storage.list("gc/")])

    async def repair_index(self) -> list[str]:
        """Load the index, completing it from the packs' own headers where index files are
        damaged or missing (in memory only); returns notes on what was repaired."""
        errors: list[str] = []
        index = await Index.load(self.storage, self.write_keys.meta_key, errors)
        recovered, problems = await self._recover_unindexed(index)
        self._index = index
        self._tree_packs.clear()
        return self._repair_notes(errors, recovered, problems)

    async def rebuild_index(self) -> tuple[int, int, list[str]]:
        """Write back index entries for every pack no readable index file lists, and replace
        damaged index files. Returns (packs recovered, index files replaced, problems)."""
        async with self.lock(exclusive=True, kind="repair"):
            index = await Index.load(self.storage, self.write_keys.meta_key, [])
            # Packs that prune took out of the index and will delete must stay out of it.
            pending = (await gcstate.load(self.storage, self.write_keys.meta_key)).pending_packs()
            recovered, problems = await self._recover_unindexed(index, skip=pending)
            damaged = sorted(index.damaged_files)
            if recovered or damaged:
                await write_index_file(self.storage, self.write_keys.meta_key, recovered, supersedes=damaged)
                for file_id in damaged:
                    await self.storage.delete(f"index/{file_id}")
            self._index = None
            self._tree_packs.clear()
            return len(recovered), len(damaged), problems

    async def blob_locations(self, temp_dir: str | None = None) -> tuple[BlobLocations, list[str]]:
        """The index as a table in a temporary file (`locations.py`), for a restore: its memory
        does not grow with the blobs. Completed from the packs' own headers where index files
        are damaged or missing, as `repair_index` does; returns the table and notes on what was
        repaired. The caller closes the table."""
        errors: list[str] = []
        builder = await load_locations(self.storage, self.write_keys.meta_key, errors, temp_dir=temp_dir)
        try:
            recovered, problems = await self._read_unindexed(builder.live_packs())
            if recovered:
                builder.add_packs(recovered)
            locations = builder.finish()
        except BaseException:
            builder.close()
            raise
        return locations, self._repair_notes(errors, recovered, problems)

    @staticmethod
    def _repair_notes(errors: list[str], recovered: list[IndexPack], problems: list[str]) -> list[str]:
        notes = [f"index file damaged, left out: {error}" for error in errors]
        if recovered:
            notes.append(
                f"{len(recovered)} pack(s) missing from the index were read from their own headers "
                "(`timevault repo rebuild-index` writes the index back)"
            )
        return notes + problems

    async def _recover_unindexed(
        self, index: Index, skip: set[str] | None = None
    ) -> tuple[list[IndexPack], list[str]]:
        """Add to `index` every stored pack it lacks, from the pack's header (two ranged reads)."""
        recovered, problems = await self._read_unindexed(index.packs, skip)
        for entry in recovered:
            index.add_pack(entry)
        return recovered, problems

    async def _read_unindexed(
        self, indexed: Container[str], skip: set[str] | None = None
    ) -> tuple[list[IndexPack], list[str]]:
        """Index entries, from their headers (two ranged reads each), of the stored packs that
        are not in `indexed`, and problems with those that cannot be read."""
        stored = {info.name: info.size async for info in self.storage.list("data/")}
        skip = skip or set()
        missing = [
            (name, size) for name, size in stored.items()
            if name.rsplit("/", 1)[-1] not in indexed and name.rsplit("/", 1)[-1] not in skip
        ]
        sem = asyncio.Semaphore(8)
        problems: list[str] = []

        async def recover(name: str, size: int) -> IndexPack | None:
            pack_id = name.rsplit("/", 1)[-1]
            async with sem:
                try:
                    header = await read_remote_pack_header(self.storage, self.write_keys.meta_key, name, size)
                except (CorruptPack, StorageError) as exc:
                    problems.append(f"pack {pack_id[:12]} is not in the index and its header is unreadable: {exc}")
                    return None
            return index_entry(pack_id, size, header)

        found = await asyncio.gather(*(recover(name, size) for name, size in missing))
        return [entry for entry in found if entry is not None], problems

    # --- snapshots and their history -----------------------------------------------------

    def snapshot_id_of(self, plaintext: bytes) -> str:
        """A snapshot's name: the keyed hash of its plaintext (only key holders can make one)."""
        return crypto.keyed_hash(self._snapshot_key, plaintext).hex()

    async def save_snapshot(self, snapshot: Snapshot) -> str:
        """Write `snapshot` as the newest link of the history; returns its id.

        Sets `previous` (the newest snapshot now) and `endorsement` (the newest endorsement now)
        just before writing, so that a backup that ran for hours still links to the present.
        """
        history, snapshots = await self._history()
        consistent = [
            (snapshot_id, s) for snapshot_id, s in snapshots.items() if history.status.get(snapshot_id) != CONTRADICTS
        ]
        head = max(consistent, key=lambda item: (item[1].time, item[0]), default=None)
        snapshot.previous = head[0] if head else None
        snapshot.endorsement = history.endorsement_id
        plaintext = msgspec.msgpack.encode(snapshot)
        snapshot_id = self.snapshot_id_of(plaintext)
        await put_once(self.storage, f"snapshots/{snapshot_id}", self.encrypt_meta(plaintext, b"snapshot"))
        self._snapshots[snapshot_id] = snapshot
        return snapshot_id

    async def load_snapshot(self, snapshot_id: str) -> Snapshot:
        """Read and verify one snapshot (always from storage: a restore reads what is there)."""
        try:
            data = await self.storage.get(f"snapshots/{snapshot_id}")
        except ObjectNotFound as exc:
            raise RepositoryError(f"no snapshot {snapshot_id}") from exc
        try:
            plaintext = self.decrypt_meta(data, b"snapshot")
            snapshot = _snapshot_decoder.decode(plaintext)
        except (crypto.Unauthenticated, msgspec.DecodeError) as exc:
            raise RepositoryError(f"snapshot {snapshot_id[:12]} is damaged") from exc
        if self.snapshot_id_of(plaintext) != snapshot_id:
            raise RepositoryError(
                f"snapshot {snapshot_id[:12]} does not match its name: it was renamed, copied or rewritten"
            )
        self._snapshots[snapshot_id] = snapshot
        return snapshot

    async def _load_all_snapshots(self, damaged: list[str]) -> dict[str, Snapshot]:
        names = [info.name.removeprefix("snapshots/") async for info in self.storage.list("snapshots/")]
        sem = asyncio.Semaphore(16)

        async def load(snapshot_id: str) -> tuple[str, Snapshot] | None:
            cached = self._snapshots.get(snapshot_id)
            if cached is not None:  # verified when it was read; its name fixes its content
                return snapshot_id, cached
            async with sem:
                try:
                    return snapshot_id, await self.load_snapshot(snapshot_id)
                except RepositoryError as exc:
                    damaged.append(str(exc))
                    return None

        found = [item for item in await asyncio.gather(*(load(name) for name in names)) if item]
        return dict(found)

    async def load_endorsements(self, problems: list[str] | None = None) -> dict[str, Endorsement]:
        """Every authentic endorsement (name, signature and repository checked); the others are
        reported in `problems`."""
        problems = problems if problems is not None else []
        found: dict[str, Endorsement] = {}
        async for info in self.storage.list("endorsements/"):
            endorsement_id = info.name.removeprefix("endorsements/")
            cached = self._endorsements.get(endorsement_id)
            if cached is not None:
                found[endorsement_id] = cached
                continue
            try:
                data = await self.storage.get(info.name)
            except ObjectNotFound:
                continue
            endorsement, problem = endorsements.decode(self.write_keys, endorsement_id, data)
            if endorsement is None:
                problems.append(problem)
                continue
            self._endorsements[endorsement_id] = found[endorsement_id] = endorsement
        return found

    async def load_history(self, damaged: list[str] | None = None) -> tuple[History, dict[str, Snapshot]]:
        """(the history, every authentic snapshot); damaged ones go to `damaged`."""
        return await self._history(damaged)

    async def _history(self, damaged: list[str] | None = None) -> tuple[History, dict[str, Snapshot]]:
        damaged = damaged if damaged is not None else []
        records = await self.forget_records(damaged)
        snapshots = await self._load_all_snapshots(damaged)
        problems: list[str] = []
        forgotten = {snapshot_id: record for record in records.values() for snapshot_id in record.snapshots}
        history = classify(snapshots, await self.load_endorsements(problems), forgotten)
        history.problems[:0] = problems
        return history, snapshots

    # --- forgetting (the write tier may; see forgets.py) ---------------------------------

    async def forget_snapshots(self, snapshot_ids: list[str], reason: str) -> None:
        """Remove snapshots: first a record saying so (readable by key holders only), then the
        snapshot objects. Their data stays until prune. The caller endorses afterwards if it can."""
        ids = sorted(dict.fromkeys(snapshot_ids))
        if not ids:
            return
        record = ForgetRecord(time=_now(), hostname=socket.gethostname(), snapshots=ids, reason=reason)
        record_id, data = forgets.encode(self.write_keys.meta_key, record)
        await put_once(self.storage, f"forgets/{record_id}", data)
        for snapshot_id in ids:
            await self.storage.delete(f"snapshots/{snapshot_id}")
            self._snapshots.pop(snapshot_id, None)

    async def forget_records(self, problems: list[str] | None = None) -> dict[str, ForgetRecord]:
        """Every readable forget record by id; damaged ones go to `problems`."""
        found: dict[str, ForgetRecord] = {}
        async for info in self.storage.list("forgets/"):
            record_id = info.name.removeprefix("forgets/")
            try:
                found[record_id] = forgets.decode(self.write_keys.meta_key, record_id,
                                                  await self.storage.get(info.name))
            except ObjectNotFound:
                continue
            except RepositoryError as exc:
                if problems is not None:
                    problems.append(str(exc))
        return found

    async def history(self) -> History:
        """The standing of every snapshot (endorsed, written since, contradicting)."""
        return (await self._history())[0]

    async def list_snapshots(
        self, damaged: list[str] | None = None, *, allow_unverified: bool = False
    ) -> list[tuple[str, Snapshot]]:
        """Every snapshot, oldest first.

        A damaged snapshot (or one whose name does not match its content), and one that
        contradicts the endorsed history (unless `allow_unverified`), raises RepositoryError, or,
        when `damaged` is given, is left out and its message appended there (so one bad object
        does not stop later backups).
        """
        problems: list[str] = []
        history, snapshots = await self._history(problems)
        if not allow_unverified:
            for snapshot_id in history.contradicting():
                problems.append(history.describe(snapshot_id))
                del snapshots[snapshot_id]
        if damaged is None and problems:
            raise HistoryError(problems[0]) if history.contradicting() else RepositoryError(problems[0])
        if damaged is not None:
            damaged.extend(problems)
        return sorted(snapshots.items(), key=lambda item: (item[1].time, item[0]))

    async def resolve_snapshot(self, ref: str) -> str:
        """An id, a unique id prefix, or 'latest' → the full snapshot id."""
        if ref == "latest":
            snapshots = await self.list_snapshots(damaged=[])
            if not snapshots:
                raise RepositoryError("the repository has no snapshots")
            return snapshots[-1][0]
        ids = [info.name.removeprefix("snapshots/") async for info in self.storage.list("snapshots/")]
        matches = [snapshot_id for snapshot_id in ids if snapshot_id.startswith(ref)]
        if not ref or not matches:
            raise RepositoryError(f"no snapshot matches {ref!r}")
        if len(matches) > 1:
            raise RepositoryError(f"snapshot prefix {ref!r} is ambiguous ({len(matches)} matches)")
        return matches[0]

    async def endorse(self) -> str | None:
        """Sign the present history with the password holder's key; returns the endorsement id.

        Lists every snapshot that does not contradict the endorsed history (contradicting ones
        stay unendorsed until forgotten). Older endorsements are then removed, so that storage
        cannot silently fall back to one of them. Nothing is written when the newest
        endorsement already says the same. Needs the password (the signing key).
        """
        if self._sign_key is None:
            raise ReadAccessRequired("endorsing the history needs the password")
        # Read before the history: a record written after this may name a snapshot that the new
        # endorsement still lists, and must then stay.
        records = await self.forget_records()
        history, snapshots = await self._history()
        consistent = {
            snapshot_id: s for snapshot_id, s in snapshots.items() if history.status.get(snapshot_id) != CONTRADICTS
        }
        head = max(consistent.items(), key=lambda item: (item[1].time, item[0]), default=None)
        current = history.endorsement
        if current is not None and set(current.snapshots) == set(consistent) and not history.problems:
            await self._drop_forget_records(records, set(current.snapshots))
            return history.endorsement_id
        endorsement = Endorsement(
            repo_id=self.write_keys.repo_id,
            time=_now(),
            snapshots=sorted(consistent),
            head=head[0] if head else None,
            previous=history.endorsement_id,
        )
        endorsement_id, data = endorsements.encode(self.write_keys, self._sign_key, endorsement)
        await put_once(self.storage, f"endorsements/{endorsement_id}", data)
        self._endorsements[endorsement_id] = endorsement
        made = datetime.fromisoformat(endorsement.time)
        for old_id, old in list(self._endorsements.items()):
            when = _parse_time(old.time)
            if old_id != endorsement_id and (when is None or when < made):
                await self.storage.delete(f"endorsements/{old_id}")
                del self._endorsements[old_id]
        await self._drop_forget_records(records, set(endorsement.snapshots))
        return endorsement_id

    async def _drop_forget_records(self, records: dict[str, ForgetRecord], endorsed: set[str]) -> None:
        """Records whose snapshots the newest endorsement no longer lists have served their purpose."""
        for record_id, record in records.items():
            if not endorsed.intersection(record.snapshots):
                await self.storage.delete(f"forgets/{record_id}")

    # --- what snapshots reference (readable by the write tier) ---------------------------

    async def save_references(
        self, ids: set[bytes] | IdMap | IdRuns, near: str | None = None, *, spill_dir: str | None = None
    ) -> str:
        """Write the list of blobs a snapshot needs; returns its id for `Snapshot.references`.

        `near` names the references of a similar snapshot (the parent): when the new list
        differs from that one's full list by at most a quarter, only the difference is stored.

        Memory does not grow with the list: the ids are merged on disk (`IdRuns`), a base list
        is read in ranges and compared as it is decrypted, and a full list is encrypted as it
        is read back; only the stored object itself is held (32 bytes an id).
        """
        runs = ids if isinstance(ids, IdRuns) else IdRuns(spill_dir)
        try:
            if not isinstance(ids, IdRuns):
                runs.update(ids)
            count = await asyncio.to_thread(runs.merged)
            record = None
            if near:
                try:
                    record = await self._delta_references(runs, near)
                except RepositoryError:
                    record = None  # a damaged list is not built upon: write a full one
            if record is not None:
                data = bytearray(self.encrypt_meta(msgspec.msgpack.encode(record), b"references"))
            else:
                prefix, suffix = references.full_list_frame(count)
                data = bytearray(len(prefix) + count * ID_SIZE + len(suffix) + crypto.AEAD_OVERHEAD)
                pieces = itertools.chain([prefix], runs.sorted_blocks(), [suffix])
                await asyncio.to_thread(
                    crypto.encrypt_pieces_into, self.write_keys.meta_key, b"references", pieces, memoryview(data)
                )
        finally:
            if runs is not ids:
                runs.close()
        references_id = crypto.content_hash(data).hex()
        await put_once(self.storage, f"references/{references_id}", data)
        return references_id

    async def _delta_references(self, runs: IdRuns, near: str) -> References | None:
        """The new list as a delta against the full list `near` is, or builds on; None when
        the difference is too large."""
        base_id = near
        if (await self._references_size(near)) <= _SMALL_REFERENCES:
            base_id = (await self._references_file(near)).base or near
        else:  # a large list: its base field read while it streams past (usually none)
            fields = await self._stream_references(near, None)
            base_value = fields.get("base")
            if isinstance(base_value, str) and base_value:
                base_id = base_value
        merge: references.DeltaMerge | None = None
        blocks = runs.sorted_blocks()

        def on_added(piece: bytes) -> None:
            assert merge is not None
            merge.feed(piece)

        def on_length(length: int) -> None:
            nonlocal merge
            merge = references.DeltaMerge(blocks, length // ID_SIZE)

        fields = await self._stream_references(base_id, on_added, on_length)
        if fields.get("base") is not None or merge is None:
            raise RepositoryError(f"the list of references {base_id[:12]} builds on a delta")
        delta = merge.finish()
        if delta is None:
            return None
        return References(base=base_id, added=delta[0], removed=delta[1])

    async def _references_size(self, references_id: str) -> int:
        try:
            return (await self.storage.stat(f"references/{references_id}")).size
        except ObjectNotFound as exc:
            raise RepositoryError(f"the list of references {references_id[:12]} is missing") from exc

    async def _stream_references(
        self,
        references_id: str,
        on_added: Callable[[bytes], None] | None,
        on_length: Callable[[int], None] | None = None,
    ) -> dict[str, bytes | str | None]:
        """Read a `references/<id>` object in ranges, decrypting and parsing it as it comes:
        `on_added` gets the ids of its `added` field in pieces. Raises RepositoryError (after
        the last piece) when the object is damaged: whatever the callbacks built is then void."""
        name = f"references/{references_id}"
        where = f"the list of references {references_id[:12]}"
        size = await self._references_size(references_id)
        if size < crypto.AEAD_OVERHEAD:
            raise RepositoryError(f"{where} is damaged")
        nonce = await self.storage.get(name, 0, crypto.NONCE_SIZE)
        tag = await self.storage.get(name, size - crypto.TAG_SIZE, crypto.TAG_SIZE)
        hasher = blake3.blake3(nonce)
        try:
            decryptor = crypto.StreamDecryptor(self.write_keys.meta_key, nonce, tag, b"references")
            parser = references.ReferencesParser(on_added, on_length)
            offset, end = crypto.NONCE_SIZE, size - crypto.TAG_SIZE
            while offset < end:
                piece = await self.storage.get(name, offset, min(_STREAM_PIECE, end - offset))
                if not piece:
                    raise RepositoryError(f"{where} is cut short")
                offset += len(piece)
                hasher.update(piece)
                # Parsing and comparing a MiB of ids is Python work: off the event loop.
                await asyncio.to_thread(parser.feed, decryptor.update(piece))
            hasher.update(tag)
            decryptor.finish()
            fields = parser.finish()
        except (crypto.Unauthenticated, references.NotAList) as exc:
            raise RepositoryError(f"{where} is damaged") from exc
        if hasher.digest().hex() != references_id:
            raise RepositoryError(f"{where} does not match its name (renamed or changed)")
        return fields

    async def _references_file(self, references_id: str) -> References:
        try:
            data = await self.storage.get(f"references/{references_id}")
        except ObjectNotFound as exc:
            raise RepositoryError(f"the list of references {references_id[:12]} is missing") from exc
        return references.decode(self.write_keys.meta_key, references_id, data)

    async def references_base(self, references_id: str) -> str | None:
        """The full list a delta list builds on (None for a full list)."""
        return (await self._references_file(references_id)).base

    async def references_of(self, references_id: str) -> set[bytes]:
        """The blob ids a `references/<id>` object lists (resolving a delta against its base)."""
        return set(await self.reference_ids(references_id))

    async def reference_ids(self, references_id: str) -> IdMap:
        """`references_of` held compactly (32 bytes an id, not a Python set's ~100): for
        callers that hold a whole snapshot's list, as check does for each snapshot."""
        record = await self._references_file(references_id)
        try:
            if record.base is None:
                return IdMap.from_sorted(record.added)
            base = await self._references_file(record.base)
            if base.base is not None:
                raise RepositoryError(f"the list of references {references_id[:12]} builds on a delta")
            ids = IdSet()
            ids.add_sorted(base.added, references.unpack_ids(record.removed))
            ids.add_sorted(record.added)
            return ids
        except ValueError as exc:  # only a damaged or hostile list is out of order
            raise RepositoryError(f"the list of references {references_id[:12]} is damaged ({exc})") from exc

    async def stream_reference_ids(self, references_id: str, sink: Callable[[str, list[bytes]], None]) -> None:
        """`reference_ids` without holding the list: `sink(kind, ids)` gets the ids in pieces
        as they are decrypted, `kind` "base" (a full list, or the full list a delta builds
        on), "added" or "removed" (a delta's), or "restart" (forget what came so far); the
        list is base less removed, plus added. "base" and "added" come sorted. Raises
        RepositoryError, as `reference_ids`, when a list is damaged or out of order: whatever
        the sink got is then void. Only a delta's own object is held whole (at most a quarter
        of its base, usually far less)."""
        order = references.SortedPieces()
        record: References | None = None
        base_id: str | None = None
        if await self._references_size(references_id) <= _SMALL_REFERENCES:
            record = await self._references_file(references_id)
            base_id = record.base
        else:  # a large list: usually a full one, streamed; a large delta is read again whole
            fields = await self._stream_references(references_id, lambda piece: sink("base", order.split(piece)))
            if fields.get("base") is not None:
                sink("restart", [])
                order = references.SortedPieces()
                record = await self._references_file(references_id)
                base_id = record.base
        try:
            if record is not None and base_id is None:
                sink("base", order.split(record.added))
            elif record is not None and base_id is not None:
                base = await self._stream_references(base_id, lambda piece: sink("base", order.split(piece)))
                if base.get("base") is not None:
                    raise RepositoryError(f"the list of references {references_id[:12]} builds on a delta")
                added = references.SortedPieces()
                sink("added", added.split(record.added))
                sink("removed", [record.removed[i : i + ID_SIZE] for i in range(0, len(record.removed), ID_SIZE)])
                order.unsorted = order.unsorted or added.unsorted
            if order.unsorted:
                raise ValueError("ids are not sorted")
        except ValueError as exc:  # only a damaged or hostile list is out of order
            raise RepositoryError(f"the list of references {references_id[:12]} is damaged ({exc})") from exc

    async def snapshot_reference_ids(self, snapshot_id: str) -> IdMap:
        """`snapshot_references`, held compactly (see `reference_ids`)."""
        snapshot = await self.load_snapshot(snapshot_id)
        if not snapshot.references:
            raise RepositoryError(f"snapshot {snapshot_id[:12]} has no list of references")
        return await self.reference_ids(snapshot.references)

    async def snapshot_references(self, snapshot_id: str) -> set[bytes]:
        """Every blob id (data and trees) the snapshot needs. Works with the write tier alone."""
        return set(await self.snapshot_reference_ids(snapshot_id))

    def seal_warnings(self, session: crypto.SealingSession, warnings: list[str]) -> bytes:
        """Warnings name paths: sealed to the password holder (the write tier cannot read them)."""
        if not warnings:
            return b""
        return session.sealed + crypto.encrypt(session.data_key, msgspec.msgpack.encode(warnings), b"warnings")

    def snapshot_warnings(self, snapshot: Snapshot) -> list[str]:
        """The texts of a snapshot's warnings (needs the password)."""
        if not snapshot.sealed_warnings:
            return []
        if self._unsealer is None:
            raise ReadAccessRequired("reading a snapshot's warnings needs the password")
        sealed, message = snapshot.sealed_warnings[: crypto.SEALED_KEY_SIZE], snapshot.sealed_warnings[crypto.SEALED_KEY_SIZE :]
        try:
            return msgspec.msgpack.decode(self._unsealer.open(sealed, message, b"warnings"), type=list[str])
        except (crypto.Unauthenticated, msgspec.DecodeError):
            return [f"({snapshot.warnings} warnings, not readable: damaged)"]

    # --- reading blobs (read tier) -------------------------------------------------------

    def decode_blob(
        self, blob_id: bytes, blob_type: BlobType, payload: BytesLike, sealed_key: bytes
    ) -> BytesLike:
        if self._unsealer is None:
            raise ReadAccessRequired("reading backed-up data needs the password")
        return decode(self._unsealer, self.write_keys.id_key, blob_id, blob_type, payload, sealed_key)

    async def load_blob(self, blob_id: bytes, blob_type: BlobType, lookup: BlobLookup | None = None) -> BytesLike:
        """A blob, decoded and verified; found with `lookup` (a restore's table) or the index."""
        index = lookup if lookup is not None else await self.index()
        location = index.locate(blob_id)
        if location is None:
            raise CorruptBlob(f"blob {blob_id.hex()[:16]} is missing from the index")
        try:
            payload = await self.storage.get(
                pack_object_name(location.pack), location.offset, location.length
            )
        except ObjectNotFound as exc:
            raise CorruptBlob(
                f"pack {location.pack[:12]} holding blob {blob_id.hex()[:16]} is missing"
            ) from exc
        if len(payload) != location.length:
            raise CorruptBlob(f"pack {location.pack[:12]} is truncated")
        return await asyncio.to_thread(self.decode_blob, blob_id, blob_type, payload, location.sealed_key)

    async def load_tree(self, tree_id: bytes, lookup: BlobLookup | None = None) -> Tree:
        """A directory listing, found with `lookup` (a restore's table) or the index. Read
        through the cache of tree windows (`TREE_WINDOW`)."""
        index = lookup if lookup is not None else await self.index()
        location = index.locate(tree_id)
        pack_size = index.pack_size(location.pack) if location is not None else None
        window = location.offset // TREE_WINDOW if location is not None else -1
        if (
            location is None or pack_size is None or location.type != BlobType.TREE
            or location.offset < 0 or location.length <= 0 or location.offset + location.length > pack_size
            or (location.offset + location.length - 1) // TREE_WINDOW != window  # across two windows
        ):
            data = await self.load_blob(tree_id, BlobType.TREE, index)  # the usual path and its errors
        else:
            start = window * TREE_WINDOW
            payload = memoryview(await self._tree_window(location.pack, start, min(TREE_WINDOW, pack_size - start)))[
                location.offset - start : location.offset - start + location.length
            ]
            if len(payload) != location.length:
                raise CorruptBlob(f"pack {location.pack[:12]} is truncated")
            if len(payload) <= DECODE_INLINE_MAX:  # cheaper than a thread hop (most trees)
                data = self.decode_blob(tree_id, BlobType.TREE, payload, location.sealed_key)
            else:
                data = await asyncio.to_thread(
                    self.decode_blob, tree_id, BlobType.TREE, payload, location.sealed_key
                )
        try:
            return _tree_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise CorruptBlob(f"tree {tree_id.hex()[:16]} does not decode: {exc}") from exc

    async def _tree_window(self, pack_id: str, start: int, length: int) -> bytes:
        """`length` bytes of a pack from `start` (a window), read once while it stays cached."""
        key = (pack_id, start)
        task = self._tree_packs.get(key)
        if task is None:
            task = asyncio.ensure_future(self.storage.get(pack_object_name(pack_id), start, length))
            self._tree_packs[key] = task
            while len(self._tree_packs) > TREE_WINDOWS_KEPT:
                self._tree_packs.popitem(last=False)
        else:
            self._tree_packs.move_to_end(key)
        try:
            return await asyncio.shield(task)
        except ObjectNotFound as exc:
            self._tree_packs.pop(key, None)
            raise CorruptBlob(f"pack {pack_id[:12]} holding trees is missing") from exc
        except BaseException:
            if self._tree_packs.get(key) is task and task.done():
                del self._tree_packs[key]  # a failed read is not kept
            raise

    # --- locks ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lock(self, *, exclusive: bool = False, kind: str = "backup") -> AsyncIterator[HeldLock]:
        """Take a lock for the block; refreshed while held.

        Backups take shared locks (``kind`` "backup"), which only an exclusive lock excludes.
        Prune takes a "prune" lock: one prune at a time, never blocking backups (its two-phase
        collection waits for the backups that started before its mark instead). Repairs that
        rewrite the index (`rebuild_index`) take an exclusive one.
        """
        lock_id = secrets.token_hex(16)
        name = f"locks/{lock_id}"
        held = HeldLock(name, kind, time.time())

        async def write_lock() -> None:
            now = time.time()
            lock = Lock(exclusive, socket.gethostname(), os.getpid(), now, now + LOCK_STALE_AFTER, kind,
                        held.started)
            await self.storage.put(name, self.encrypt_meta(msgspec.msgpack.encode(lock), b"lock"))
            held.refreshed(now, lock.expires)

        await write_lock()
        try:
            for other_name, other in await self.live_locks():
                if other_name != name and _conflicts(exclusive, kind, other):
                    what = "an exclusive" if other.exclusive else ("a prune" if other.kind == "prune" else "a")
                    raise RepositoryLocked(
                        f"{self.storage.location}: {what} lock is held by {other.hostname} "
                        f"(pid {other.pid}) since {datetime.fromtimestamp(other.started or other.time, UTC):%Y-%m-%d %H:%M} UTC"
                    )
        except BaseException:
            await self.storage.delete(name)
            raise

        async def refresh() -> None:
            while True:
                await asyncio.sleep(LOCK_REFRESH_EVERY)
                with contextlib.suppress(StorageError):
                    await write_lock()

        refresher = asyncio.create_task(refresh())
        try:
            yield held
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            try:
                await self.storage.delete(name)
            except StorageError as exc:
                # Never in place of the error that ended the work (a read-only or vanished
                # location fails both); a lock left behind goes stale, check reports it and
                # prune removes it.
                log.warning("cannot remove the lock %s: %s", name, exc)

    @contextlib.asynccontextmanager
    async def read_lock(self) -> AsyncIterator[HeldLock | None]:
        """A shared "restore" lock for a reader of packs (a restore): a prune's sweep deletes what
        its mark took out of the index only once every lock older than the mark is gone, so the
        packs this reader found in the index it loaded stay until it ends. A location that takes
        no new object (read-only, full) is read without one: no prune can delete from it either."""
        async with contextlib.AsyncExitStack() as stack:
            try:
                held: HeldLock | None = await stack.enter_async_context(self.lock(kind="restore"))
            except (LocationReadOnly, LocationFull) as exc:
                log.info("reading %s without a lock: %s", self.storage.location, exc)
                held = None
            if self._index is not None:
                await self.current_index()  # loaded before a mark (a browsing session's): reload
            yield held

    async def live_locks(self) -> list[tuple[str, Lock]]:
        """Every lock that still protects something: not expired, its process not known dead."""
        live = []
        now = time.time()
        async for info in self.storage.list("locks/"):
            try:
                lock = _lock_decoder.decode(self.decrypt_meta(await self.storage.get(info.name), b"lock"))
            except ObjectNotFound:
                continue
            except (crypto.Unauthenticated, msgspec.DecodeError):
                continue  # not ours to judge; an unreadable lock cannot protect anything
            if lock.expires > now and not _dead_local_process(lock):
                live.append((info.name, lock))
        return live


class HeldLock:
    """A lock this process holds: its name, and whether it has been live all along.

    A process that was suspended (a laptop asleep) for longer than `LOCK_STALE_AFTER` had a
    stale lock meanwhile, and garbage collection may have removed data it relied on; such a
    backup must not write its snapshot (`ensure_unbroken`)."""

    def __init__(self, name: str, kind: str, started: float) -> None:
        self.name = name
        self.kind = kind
        self.started = started
        self.expires = started + LOCK_STALE_AFTER
        self.lapsed = False

    def refreshed(self, now: float, expires: float) -> None:
        if now >= self.expires:
            self.lapsed = True
        self.expires = expires

    def ensure_unbroken(self) -> None:
        """Raise RepositoryLocked if the lock expired (or nearly) at any point while held."""
        if self.lapsed or time.time() >= self.expires - LOCK_SAFETY:
            raise RepositoryLocked(
                "this operation's repository lock expired while it ran (the process was paused or "
                "storage was unreachable for too long): data it relied on may have been pruned "
                "meanwhile, so it stops without saving; run it again"
            )


def _conflicts(exclusive: bool, kind: str, other: Lock) -> bool:
    """Whether a lock of (exclusive, kind) may not be held next to `other`."""
    if exclusive or other.exclusive:
        return True
    return kind == "prune" and other.kind == "prune"


def _dead_local_process(lock: Lock) -> bool:
    """A lock of this host whose process is gone (killed, crashed) protects nothing."""
    if lock.hostname != socket.gethostname():
        return False
    try:
        os.kill(lock.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


async def _refuse_if_not_empty(storage: Storage) -> None:
    """A new repository goes only where nothing is: deleting it (or its plan) later must never
    reach files that were there before. Raises NotEmpty naming what is in the way."""
    try:
        async for info in storage.list():
            if layout.is_object_name(info.name):
                raise NotEmpty(
                    f"{storage.location}: an incomplete TimeVault repository is here (no config; a "
                    "`repo init` was interrupted?): remove it, or choose an empty folder"
                )
            raise NotEmpty(
                f"{storage.location} is not empty and not a TimeVault repository (it holds {info.name}, "
                "for one): choose an empty or new folder"
            )
    except LocationNotFound:
        return  # created by the first write


async def _load_config(storage: Storage) -> bytes:
    try:
        return await storage.get("config")
    except ObjectNotFound as exc:
        raise RepositoryNotFound(f"{storage.location}: not a TimeVault repository (no config)") from exc


def _verified_config(outer: ConfigFile, keys: WriteKeys, location: str) -> tuple[Config, list[str]]:
    """The config and its problems. An unusable config is replaced by a stand-in with the
    default parameters, good for reading (which needs none) but never used to write."""
    config, problems = repoconfig.verify(outer, keys, location)
    if config is None:
        defaults = ChunkerParams()
        config = Config(
            version=FORMAT_VERSION,
            id=keys.repo_id,
            chunker=ChunkerConfig(defaults.min_size, defaults.avg_size, defaults.max_size),
            created="",
        )
    return config, problems


def _parse_time(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None


def _now() -> str:
    return datetime.now(UTC).isoformat()
