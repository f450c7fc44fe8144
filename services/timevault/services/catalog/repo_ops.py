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
from typing import TYPE_CHECKING, NamedTuple

from timevault.proto.errors import ServiceError
from timevault.proto.plans import S3Credentials, SnapshotInfo

if TYPE_CHECKING:
    from timevault.core.repository.format import Snapshot

ChunkRow = tuple[bytes, str, int]
"""A blob in the chunk index: id, pack, length."""


async def init_repository(url: str, password: str, test_weak_kdf: bool = False,
                          credentials: S3Credentials | None = None, location_field: str = "location", *,
                          space_token: str | None = None) -> bytes:
    """Create a repository at `url` (its first endorsement included); return its write keys.

    A location that holds anything else is refused (`location_field` names it in the error):
    deleting the plan later must never reach what was there before."""
    from timevault.core import crypto
    from timevault.core.errors import NotEmpty
    from timevault.core.repository import Repository, RepositoryError, WeakPassword
    from timevault.core.storage import StorageError
    from timevault.services.common.locations import open_service_location

    try:
        storage = open_service_location(url, credentials, space_token)
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
    except NotEmpty as exc:
        await storage.close()
        raise ServiceError("invalid", str(exc), location_field) from exc
    except RepositoryError as exc:
        await storage.close()
        raise ServiceError("conflict", f"{exc}; attach it instead of creating a plan", "location") from exc
    except (StorageError, OSError) as exc:
        await storage.close()
        raise location_error(exc, "write to") from exc


class RepositoryContents(NamedTuple):
    """What attaching a repository reads of it."""

    write_keys: bytes
    snapshots: list[tuple[str, Snapshot]]
    chunks: list[ChunkRow]
    endorsed: set[str]
    packs: list[tuple[str, int]]
    generation: list[str]


async def read_repository(url: str, password: str, credentials: S3Credentials | None = None, *,
                          space_token: str | None = None) -> RepositoryContents:
    """Open with the password and endorse its history; return write keys, snapshots (oldest
    first), the blob index, the ids of the endorsed snapshots, the packs and the generation."""
    from timevault.core.repository import RepositoryError, WrongPassword
    from timevault.core.repository.repo import Repository
    from timevault.core.storage import StorageError
    from timevault.services.common.locations import open_service_location

    try:
        storage = open_service_location(url, credentials, space_token)
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
        generation = await repo.gc_generation()
        index = await repo.index(reload=True)
        chunks = [(blob_id, loc.pack, loc.length) for blob_id, loc in index.blobs.items()]
        endorsed = {snapshot_id for snapshot_id, _ in snapshots if history.endorsed(snapshot_id)}
        packs = [(pack.id, pack.size) for pack in index.packs.values()]
        return RepositoryContents(repo.export_write_keys(), snapshots, chunks, endorsed, packs, generation)
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


async def index_rows(url: str, write_keys: bytes, credentials: S3Credentials | None = None, *,
                     space_token: str | None = None) -> tuple[list[ChunkRow], list[tuple[str, int]], list[str]]:
    """The repository's index as chunk rows and packs, and its generation (read first: an index
    read after a newer generation appeared is only ever newer still)."""
    from timevault.core.repository import Repository, RepositoryError
    from timevault.core.repository.index import Index
    from timevault.core.storage import StorageError
    from timevault.services.common.locations import open_service_location

    storage = open_service_location(url, credentials, space_token)
    try:
        repo = await Repository.open_write_only(storage, write_keys)
        generation = await repo.gc_generation()
        index = await Index.load(storage, repo.write_keys.meta_key, [])  # damaged files: left out
    except (RepositoryError, StorageError) as exc:
        raise ServiceError("unavailable", f"cannot read the repository's index: {exc}", "location") from exc
    finally:
        await storage.close()
    chunks = [(blob_id, loc.pack, loc.length) for blob_id, loc in index.blobs.items()]
    return chunks, [(pack.id, pack.size) for pack in index.packs.values()], generation


async def delete_repository(url: str, credentials: S3Credentials | None = None, *,
                            space_token: str | None = None) -> int:
    """Remove the repository's objects at the location, and nothing else: only names the
    format defines (and, in a local folder, their interrupted temporary files and the format's
    own folders once empty). Sweeps until a pass finds nothing (late writes of a job that was
    still stopping)."""
    from timevault.core.repository import layout
    from timevault.core.storage import StorageError, open_location
    from timevault.services.common.locations import core_credentials

    storage = open_location(url, core_credentials(credentials), space_token=space_token)
    local = "://" not in url  # a folder path (location_url of a local location)
    deleted = 0
    try:
        empty_passes = 0
        while empty_passes < 2:
            try:
                names = [info.name async for info in storage.list() if layout.is_object_name(info.name)]
            except StorageError:
                names = []  # the folder is already gone
            # The config last: until it goes, what is left is still recognisably a repository.
            names.sort(key=lambda name: name == "config")
            for name in names:
                await storage.delete(name)
            deleted += len(names)
            if local:
                deleted += await asyncio.to_thread(_remove_temp_files, url)
            empty_passes = empty_passes + 1 if not names else 0
            if empty_passes < 2:
                await asyncio.sleep(0.3)
    finally:
        await storage.close()
    if local:
        await asyncio.to_thread(_remove_empty_dirs, url)
    return deleted


def _remove_temp_files(root: str) -> int:
    """A local folder's interrupted writes of repository objects (``<object>.tmp-<hex>``)."""
    from timevault.core.repository import layout

    removed = 0
    with contextlib.suppress(OSError):
        for name in os.listdir(root):  # `config`'s
            if layout.is_temp_file(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(root, name))
                    removed += 1
    for folder in layout.FOLDERS:
        top = os.path.join(root, folder)
        for dirpath, _dirs, files in os.walk(top):
            rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
            for name in files:
                if layout.is_temp_file(f"{rel}/{name}"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(dirpath, name))
                        removed += 1
    return removed


def _remove_empty_dirs(root: str) -> None:
    # The location keeps its own folder (the user chose it) and anything that is not ours;
    # the format's own folders go once they are empty.
    from timevault.core.repository import layout

    for dirpath, _dirs, _files in os.walk(root, topdown=False):
        rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
        if dirpath != root and layout.is_folder(rel):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
