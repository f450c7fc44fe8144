"""A repository: one backup plan's encrypted, deduplicated store in one location.

Open it with the password for full access (backup, list, restore, check, prune), or with the
exported write keys for the write-only tier (backup and list snapshots, never read contents).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import msgspec

from timevault.core import crypto
from timevault.core.buffers import BytesLike
from timevault.core.chunker import ChunkerParams
from timevault.core.errors import (
    NotARepository,
    ReadAccessRequired,
    RepositoryError,
    RepositoryLocked,
    RepositoryNotFound,
)
from timevault.core.repository import keys as keyfiles
from timevault.core.repository.blobs import CorruptBlob, decode
from timevault.core.repository.format import (
    FORMAT_VERSION,
    BlobType,
    ChunkerConfig,
    Config,
    Lock,
    MasterKeys,
    Snapshot,
    Tree,
    WriteKeys,
)
from timevault.core.repository.index import Index, pack_object_name
from timevault.core.storage import ObjectNotFound, Storage, StorageError

TREE_PACKS_KEPT = 4
TREE_PACK_MAX = 32 * 1024 * 1024
# Trees up to this size are decoded on the event loop (~20 µs); a thread hop costs more.
DECODE_INLINE_MAX = 64 * 1024
LOCK_STALE_AFTER = 30 * 60
LOCK_REFRESH_EVERY = 5 * 60

_tree_decoder = msgspec.msgpack.Decoder(Tree)
_snapshot_decoder = msgspec.msgpack.Decoder(Snapshot)
_lock_decoder = msgspec.msgpack.Decoder(Lock)


class Repository:
    def __init__(
        self,
        storage: Storage,
        config: Config,
        write: WriteKeys,
        private_key: bytes | None,
        key_name: str | None = None,
    ) -> None:
        self.storage = storage
        self.config = config
        self.write_keys = write
        self._private_key = private_key
        self._unsealer = crypto.Unsealer(private_key) if private_key else None
        self._key_name = key_name
        self._index: Index | None = None
        self._tree_packs: OrderedDict[str, asyncio.Future[bytes]] = OrderedDict()

    # --- creating and opening ------------------------------------------------------------

    @classmethod
    async def init(
        cls,
        storage: Storage,
        password: str,
        *,
        chunker: ChunkerParams | None = None,
        kdf: crypto.ScryptParams | None = None,
    ) -> Repository:
        keyfiles.check_password(password)
        try:
            await storage.stat("config")
        except ObjectNotFound:
            pass
        else:
            raise RepositoryError(f"{storage.location}: a repository already exists here")
        chunker = chunker or ChunkerParams()
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
        # Keys before config: a config is the mark of a complete repository.
        await storage.put(key_name, key_data)
        await storage.put("config", msgspec.json.encode(config))
        return cls(storage, config, master.write, master.private_key, key_name)

    @classmethod
    async def open(cls, storage: Storage, password: str) -> Repository:
        config = await _load_config(storage)
        key_names = [info.name async for info in storage.list("keys/")]
        for name in sorted(key_names):
            data = await storage.get(name)
            try:
                master = await asyncio.to_thread(keyfiles.unwrap_keys, data, password)
            except keyfiles.WrongPassword:
                continue
            if master.write.repo_id != config.id:
                continue
            return cls(storage, config, master.write, master.private_key, name)
        raise keyfiles.WrongPassword(f"{storage.location}: wrong password (no key opens this repository)")

    @classmethod
    async def open_write_only(cls, storage: Storage, write_keys: bytes) -> Repository:
        config = await _load_config(storage)
        write = keyfiles.decode_write_keys(write_keys)
        if write.repo_id != config.id:
            raise RepositoryError(f"{storage.location}: write keys belong to another repository")
        return cls(storage, config, write, None)

    def export_write_keys(self) -> bytes:
        """The write tier, for a machine that backs up in the background. Secret: store 0600."""
        return keyfiles.encode_write_keys(self.write_keys)

    @property
    def can_read(self) -> bool:
        return self._unsealer is not None

    @property
    def chunker_params(self) -> ChunkerParams:
        c = self.config.chunker
        return ChunkerParams(c.min_size, c.avg_size, c.max_size, self.write_keys.chunker_seed)

    async def change_password(self, new_password: str) -> None:
        """Write a key file for `new_password`, then remove the old one. Data is not touched."""
        if self._private_key is None or self._key_name is None:
            raise ReadAccessRequired("changing the password needs the current password")
        master = MasterKeys(write=self.write_keys, private_key=self._private_key)
        key_data = await asyncio.to_thread(keyfiles.wrap_keys, master, new_password)
        new_name = f"keys/{crypto.content_hash(key_data).hex()}"
        await self.storage.put(new_name, key_data)
        await self.storage.delete(self._key_name)
        self._key_name = new_name

    async def close(self) -> None:
        await self.storage.close()

    # --- metadata ------------------------------------------------------------------------

    def encrypt_meta(self, plaintext: bytes, purpose: bytes) -> bytes:
        return crypto.encrypt(self.write_keys.meta_key, plaintext, purpose)

    def decrypt_meta(self, data: bytes, purpose: bytes) -> bytes:
        return crypto.decrypt(self.write_keys.meta_key, data, purpose)

    async def index(self, *, reload: bool = False) -> Index:
        if self._index is None or reload:
            self._index = await Index.load(self.storage, self.write_keys.meta_key)
            self._tree_packs.clear()
        return self._index

    async def save_snapshot(self, snapshot: Snapshot) -> str:
        snapshot_id = secrets.token_hex(32)
        data = self.encrypt_meta(msgspec.msgpack.encode(snapshot), b"snapshot")
        await self.storage.put(f"snapshots/{snapshot_id}", data)
        return snapshot_id

    async def load_snapshot(self, snapshot_id: str) -> Snapshot:
        try:
            data = await self.storage.get(f"snapshots/{snapshot_id}")
        except ObjectNotFound as exc:
            raise RepositoryError(f"no snapshot {snapshot_id}") from exc
        try:
            return _snapshot_decoder.decode(self.decrypt_meta(data, b"snapshot"))
        except (crypto.Unauthenticated, msgspec.DecodeError) as exc:
            raise RepositoryError(f"snapshot {snapshot_id[:12]} is damaged") from exc

    async def list_snapshots(self, damaged: list[str] | None = None) -> list[tuple[str, Snapshot]]:
        """Every snapshot, oldest first.

        A damaged snapshot raises RepositoryError, or, when `damaged` is given, is left out and
        its message appended there (so one bad object does not stop later backups).
        """
        names = [info.name.removeprefix("snapshots/") async for info in self.storage.list("snapshots/")]
        sem = asyncio.Semaphore(16)

        async def load(snapshot_id: str) -> tuple[str, Snapshot] | None:
            async with sem:
                try:
                    return snapshot_id, await self.load_snapshot(snapshot_id)
                except RepositoryError as exc:
                    if damaged is None:
                        raise
                    damaged.append(str(exc))
                    return None

        found = [item for item in await asyncio.gather(*(load(name) for name in names)) if item]
        return sorted(found, key=lambda item: (item[1].time, item[0]))

    async def resolve_snapshot(self, ref: str) -> str:
        """An id, a unique id prefix, or 'latest' → the full snapshot id."""
        if ref == "latest":
            snapshots = await self.list_snapshots()
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

    # --- reading blobs (read tier) -------------------------------------------------------

    def decode_blob(self, blob_id: bytes, blob_type: BlobType, payload: BytesLike) -> bytes:
        if self._unsealer is None:
            raise ReadAccessRequired("reading backed-up data needs the password")
        return decode(self._unsealer, self.write_keys.id_key, blob_id, blob_type, payload)

    async def load_blob(self, blob_id: bytes, blob_type: BlobType) -> bytes:
        index = await self.index()
        location = index.blobs.get(blob_id)
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
        return await asyncio.to_thread(self.decode_blob, blob_id, blob_type, payload)

    async def load_tree(self, tree_id: bytes) -> Tree:
        """A directory listing. Tree packs are read whole and a few are kept: walking a snapshot
        touches thousands of trees, and one request each is slow on S3."""
        index = await self.index()
        location = index.blobs.get(tree_id)
        pack = index.packs.get(location.pack) if location is not None else None
        if location is None or pack is None or location.type != BlobType.TREE or pack.size > TREE_PACK_MAX:
            data = await self.load_blob(tree_id, BlobType.TREE)  # the usual path and its errors
        else:
            payload = memoryview(await self._tree_pack(location.pack))[
                location.offset : location.offset + location.length
            ]
            if len(payload) != location.length:
                raise CorruptBlob(f"pack {location.pack[:12]} is truncated")
            if len(payload) <= DECODE_INLINE_MAX:  # cheaper than a thread hop (most trees)
                data = self.decode_blob(tree_id, BlobType.TREE, payload)
            else:
                data = await asyncio.to_thread(self.decode_blob, tree_id, BlobType.TREE, payload)
        try:
            return _tree_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise CorruptBlob(f"tree {tree_id.hex()[:16]} does not decode: {exc}") from exc

    async def _tree_pack(self, pack_id: str) -> bytes:
        task = self._tree_packs.get(pack_id)
        if task is None:
            task = asyncio.ensure_future(self.storage.get(pack_object_name(pack_id)))
            self._tree_packs[pack_id] = task
            while len(self._tree_packs) > TREE_PACKS_KEPT:
                self._tree_packs.popitem(last=False)
        else:
            self._tree_packs.move_to_end(pack_id)
        try:
            return await asyncio.shield(task)
        except ObjectNotFound as exc:
            self._tree_packs.pop(pack_id, None)
            raise CorruptBlob(f"pack {pack_id[:12]} holding trees is missing") from exc
        except BaseException:
            if self._tree_packs.get(pack_id) is task and task.done():
                del self._tree_packs[pack_id]  # a failed read is not kept
            raise

    # --- locks ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lock(self, *, exclusive: bool) -> AsyncIterator[None]:
        """Shared locks for backups, an exclusive one for prune; refreshed while held."""
        lock_id = secrets.token_hex(16)
        name = f"locks/{lock_id}"

        async def write_lock() -> None:
            now = time.time()
            lock = Lock(exclusive, socket.gethostname(), os.getpid(), now, now + LOCK_STALE_AFTER)
            await self.storage.put(name, self.encrypt_meta(msgspec.msgpack.encode(lock), b"lock"))

        await write_lock()
        try:
            for other_name, other in await self._live_locks():
                if other_name != name and (exclusive or other.exclusive):
                    kind = "an exclusive" if other.exclusive else "a"
                    raise RepositoryLocked(
                        f"{self.storage.location}: {kind} lock is held by {other.hostname} "
                        f"(pid {other.pid}) since {datetime.fromtimestamp(other.time, UTC):%Y-%m-%d %H:%M} UTC"
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
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await self.storage.delete(name)

    async def _live_locks(self) -> list[tuple[str, Lock]]:
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


async def _load_config(storage: Storage) -> Config:
    try:
        data = await storage.get("config")
    except ObjectNotFound as exc:
        raise RepositoryNotFound(f"{storage.location}: not a TimeVault repository (no config)") from exc
    try:
        config = msgspec.json.decode(data, type=Config)
    except msgspec.DecodeError as exc:
        raise NotARepository(f"{storage.location}: repository config is damaged") from exc
    if config.version != FORMAT_VERSION:
        raise NotARepository(f"{storage.location}: unsupported repository format {config.version}")
    return config


def _now() -> str:
    return datetime.now(UTC).isoformat()
