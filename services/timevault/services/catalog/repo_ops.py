"""The catalog's operations on a repository itself: create one, read one back (attach), delete
what a location holds.

The first two need the repository's password: it is used here and dropped; only the write keys
it unlocks are returned (and kept in the catalog). Storage and repository errors become
`ServiceError`s with the field the user can fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import datetime
from typing import TYPE_CHECKING

from timevault.proto.errors import ServiceError
from timevault.proto.plans import S3Credentials, SnapshotInfo

if TYPE_CHECKING:
    from timevault.core.repository.format import Snapshot

ChunkRow = tuple[bytes, str, int]
"""A blob in the chunk index: id, pack, length."""


async def init_repository(url: str, password: str, test_weak_kdf: bool = False,
                          credentials: S3Credentials | None = None) -> bytes:
    """Create a repository at `url` (its first endorsement included); return its write keys."""
    from timevault.core import crypto
    from timevault.core.repository import Repository, RepositoryError, WeakPassword
    from timevault.core.storage import StorageError
    from timevault.services.common.locations import open_service_location

    try:
        storage = open_service_location(url, credentials)
    except ValueError as exc:
        raise ServiceError("invalid", str(exc), "location") from exc
    try:
        kdf = crypto.Argon2Params.weak_for_tests() if test_weak_kdf else None
        repo = await Repository.init(storage, password, kdf=kdf)
        try:
            return repo.export_write_keys()
        finally:
            await repo.close()
    except WeakPassword as exc:
        raise ServiceError("invalid", str(exc), "password") from exc
    except RepositoryError as exc:
        await storage.close()
        raise ServiceError("conflict", f"{exc}; attach it instead of creating a plan", "location") from exc
    except (StorageError, OSError) as exc:
        await storage.close()
        raise location_error(exc, "write to") from exc


async def read_repository(
    url: str, password: str, credentials: S3Credentials | None = None
) -> tuple[bytes, list[tuple[str, Snapshot]], list[ChunkRow], set[str]]:
    """Open with the password and endorse its history; return write keys, snapshots (oldest
    first), the blob index and the ids of the endorsed snapshots."""
    from timevault.core.repository import RepositoryError, WrongPassword
    from timevault.core.repository.repo import Repository
    from timevault.core.storage import StorageError
    from timevault.services.common.locations import open_service_location

    try:
        storage = open_service_location(url, credentials)
    except ValueError as exc:
        raise ServiceError("invalid", str(exc), "location") from exc
    try:
        repo = await Repository.open(storage, password)
    except WrongPassword as exc:
        await storage.close()
        raise ServiceError("unauthorized", "wrong password for this repository", "password") from exc
    except RepositoryError as exc:
        await storage.close()
        raise ServiceError("invalid", str(exc), "location") from exc
    except (StorageError, OSError) as exc:
        await storage.close()
        raise location_error(exc, "read") from exc
    try:
        # Snapshots that contradict the endorsed history are left out (check reports them).
        snapshots = await repo.list_snapshots(damaged=[])
        await repo.endorse()  # the password is here: vouch for the history as it is
        history = await repo.history()
        index = await repo.index()
        chunks = [(blob_id, loc.pack, loc.length) for blob_id, loc in index.blobs.items()]
        endorsed = {snapshot_id for snapshot_id, _ in snapshots if history.endorsed(snapshot_id)}
        return repo.export_write_keys(), snapshots, chunks, endorsed
    except (RepositoryError, StorageError) as exc:
        raise ServiceError("unavailable", f"cannot read the repository: {exc}", "location") from exc
    finally:
        await repo.close()


def location_error(exc: BaseException, verb: str) -> ServiceError:
    """A location that cannot be used. Only a passing failure (network, throttling) is
    ``unavailable`` (503); the rest (no credentials, access denied, no such bucket, a full or
    read-only disk) is the chosen location's fault: ``invalid`` (400) naming it."""
    from timevault.core.storage import TransientStorageError

    message = f"cannot {verb} the location: {exc}"
    if isinstance(exc, TransientStorageError) or isinstance(exc.__cause__, TransientStorageError):
        return ServiceError("unavailable", message, "location")
    return ServiceError("invalid", message, "location")


def snapshot_info(snapshot_id: str, snap: Snapshot, plan_id: str, *, endorsed: bool = False) -> SnapshotInfo:
    """A catalog row from a repository snapshot manifest."""
    stats = snap.stats
    return SnapshotInfo(id=snapshot_id, started_at=datetime.fromisoformat(snap.time),
                        finished_at=datetime.fromisoformat(snap.finished), size=stats.size,
                        added_size=stats.added_size, files=stats.files, status="completed", plan_id=plan_id,
                        endorsed=endorsed)


async def delete_repository(url: str, credentials: S3Credentials | None = None) -> int:
    """Remove every object at the location; sweep until a pass finds nothing (late writes)."""
    from timevault.core.storage import StorageError, open_location
    from timevault.services.common.locations import core_credentials

    storage = open_location(url, core_credentials(credentials))
    deleted = 0
    try:
        empty_passes = 0
        while empty_passes < 2:
            try:
                names = [info.name async for info in storage.list()]
            except StorageError:
                names = []  # the folder is already gone
            for name in names:
                await storage.delete(name)
            deleted += len(names)
            empty_passes = empty_passes + 1 if not names else 0
            if empty_passes < 2:
                await asyncio.sleep(0.3)
    finally:
        await storage.close()
    if not url.startswith("s3://"):
        _remove_empty_dirs(url)
    return deleted


def _remove_empty_dirs(root: str) -> None:
    # The local location keeps its own folder (the user chose it) but no empty subfolders.
    for dirpath, _dirs, _files in os.walk(root, topdown=False):
        if dirpath != root:
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
