"""A repository in a folder on a local or mounted disk (the "own hard drives" location)."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

from timevault.core.storage.base import (
    InvalidObjectName,
    LocationFull,
    LocationNotFound,
    LocationReadOnly,
    ObjectInfo,
    ObjectNotFound,
    Payload,
    StorageError,
    check_name,
    check_range,
    payload_parts,
)

_TEMP_SUFFIX = ".tmp-"
# A name whose path is a folder, or runs through a file, names no object: S3 would say 404 too.
_MISSING = (FileNotFoundError, IsADirectoryError, NotADirectoryError)
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


class LocalStorage:
    """Objects are files below `root`; writes go to a temp file, fsync, then rename.

    Rename within one folder is atomic on POSIX, so no reader ever sees a partial object, and
    concurrent writers of the same name simply race to identical content (objects are
    content-addressed or unique). A failed write removes its temp file; one left by a killed
    process is never listed as an object: `leftovers` finds them for check and prune.
    Errors name their cause: `LocationFull`, `LocationReadOnly`, `LocationNotFound`.
    """

    supports_put_new = True  # exclusive create: see timevault/core/storage/once.py

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = Path(root).absolute()

    @property
    def location(self) -> str:
        return str(self._root)

    def _path(self, name: str) -> Path:
        return self._root / check_name(name)

    async def put(self, name: str, data: Payload) -> None:
        await asyncio.to_thread(self._put_sync, name, data)

    def _put_sync(self, name: str, data: Payload) -> None:
        path = self._path(name)
        temp = path.with_name(path.name + _TEMP_SUFFIX + secrets.token_hex(6))
        try:
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileNotFoundError:
                self._make_folders(name, path.parent)
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                try:
                    _write_all(fd, payload_parts(data))
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(temp, path)
            except BaseException:
                # No temporary file outlives a failed write (on a full disk they held the space).
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise self._error(exc, "write", name) from exc

    def _make_folders(self, name: str, folder: Path) -> None:
        """Create `folder` below the root. The root itself only for a repository's first object.

        `Repository.init` writes a key file first; every other write into a missing root means
        the location was removed (or unmounted) and must fail, not start a new folder that
        holds packs but no config or keys.
        """
        if name.startswith("keys/"):
            folder.mkdir(parents=True, exist_ok=True)
            return
        missing = []
        while folder != self._root and not folder.is_dir():
            missing.append(folder)
            folder = folder.parent
        for path in reversed(missing):
            with contextlib.suppress(FileExistsError):
                path.mkdir()  # FileNotFoundError when the root is gone

    def _error(self, exc: OSError, action: str, name: str) -> StorageError:
        """One line naming the cause: full, read-only, gone, or the system's own words."""
        detail = f"cannot {action} {name} in {self.location} ({exc.strerror or exc})"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return LocationFull(f"location is full: {detail}")
        if exc.errno == errno.EROFS:
            return LocationReadOnly(f"location is read-only: {detail}")
        if not self._root.is_dir():
            return LocationNotFound(f"location disappeared: {self.location} no longer exists ({action} {name})")
        if exc.errno == errno.ENOENT and action == "write":
            # Something went away under the write, the object's folder or the write's own temp
            # file (`rm -r` removes a folder's files, then the folder, and the root itself
            # last): the location is being removed or taken apart; nothing to retry or recreate.
            return LocationNotFound(f"location disappeared: {self.location} is being removed ({action} {name})")
        return StorageError(f"{self.location}: {detail}")

    async def put_new(self, name: str, data: Payload) -> bool:
        """Like `put`, but only if `name` is free: the finished temp file is hard-linked into
        place, and link(2) never replaces an existing name. False when the name was taken."""
        return await asyncio.to_thread(self._put_new_sync, name, data)

    def _put_new_sync(self, name: str, data: Payload) -> bool:
        path = self._path(name)
        temp = path.with_name(path.name + _TEMP_SUFFIX + secrets.token_hex(6))
        try:
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileNotFoundError:
                self._make_folders(name, path.parent)
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                try:
                    _write_all(fd, payload_parts(data))
                    os.fsync(fd)
                finally:
                    os.close(fd)
                try:
                    os.link(temp, path)
                except FileExistsError:
                    return False
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)  # linked or failed: the temp name goes either way
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            return True
        except OSError as exc:
            raise self._error(exc, "write", name) from exc

    async def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        check_range(offset, length)
        return await asyncio.to_thread(self._get_sync, name, offset, length)

    def _get_sync(self, name: str, offset: int, length: int | None) -> bytes:
        try:
            with open(self._path(name), "rb") as f:
                if offset:
                    f.seek(offset)
                return f.read() if length is None else f.read(length)
        except _MISSING as exc:
            raise ObjectNotFound(f"{self.location}: object {name} not found") from exc
        except OSError as exc:
            raise self._error(exc, "read", name) from exc

    async def stat(self, name: str) -> ObjectInfo:
        try:
            st = await asyncio.to_thread(os.stat, self._path(name))
        except _MISSING as exc:
            raise ObjectNotFound(f"{self.location}: object {name} not found") from exc
        except OSError as exc:
            raise self._error(exc, "stat", name) from exc
        if not S_ISREG(st.st_mode):
            # A folder such as ``data/ab`` is an implementation detail, not an object (as on S3).
            raise ObjectNotFound(f"{self.location}: object {name} not found")
        return ObjectInfo(name, st.st_size)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        for info in await asyncio.to_thread(self._list_sync, prefix):
            yield info

    def _list_sync(self, prefix: str) -> builtins.list[ObjectInfo]:  # `list` is the method here
        found: builtins.list[ObjectInfo] = []
        if not self._root.is_dir():
            raise LocationNotFound(f"{self.location}: no such folder")
        for dirpath, _dirs, files in os.walk(self._root):
            rel_dir = os.path.relpath(dirpath, self._root)
            for file in files:
                if _TEMP_SUFFIX in file:
                    continue
                name = file if rel_dir == "." else f"{rel_dir}/{file}".replace(os.sep, "/")
                if name.startswith(prefix):
                    try:
                        found.append(ObjectInfo(name, os.stat(os.path.join(dirpath, file)).st_size))
                    except FileNotFoundError:
                        continue
        return found

    async def delete(self, name: str) -> None:
        try:
            await asyncio.to_thread(os.unlink, self._path(name))
        except _MISSING:
            pass
        except OSError as exc:
            raise self._error(exc, "delete", name) from exc

    async def leftovers(self) -> builtins.list[Leftover]:
        """Temporary files of writes that never finished (their writer was killed)."""
        return await asyncio.to_thread(self._leftovers_sync)

    def _leftovers_sync(self) -> builtins.list[Leftover]:
        found: builtins.list[Leftover] = []
        for dirpath, _dirs, files in os.walk(self._root):
            rel_dir = os.path.relpath(dirpath, self._root)
            for file in files:
                if _TEMP_SUFFIX not in file:
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, file))
                except FileNotFoundError:
                    continue  # its write just finished or failed
                name = file if rel_dir == "." else f"{rel_dir}/{file}".replace(os.sep, "/")
                found.append(Leftover(name, st.st_size, st.st_mtime))
        return found

    async def remove_leftover(self, name: str) -> None:
        if _TEMP_SUFFIX not in name.rsplit("/", 1)[-1]:
            raise InvalidObjectName(f"{name!r} is not a temporary file")
        try:
            await asyncio.to_thread(os.unlink, self._root / check_name(name))
        except _MISSING:
            pass
        except OSError as exc:
            raise self._error(exc, "delete", name) from exc

    async def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Leftover:
    """A temporary file below the location: `name` relative to the root, `mtime` in epoch seconds."""

    name: str
    size: int
    mtime: float


def _write_all(fd: int, parts: list[memoryview]) -> None:
    """Gathered write of every part, in order, resuming after short writes."""
    parts = [part for part in parts if part.nbytes]
    while parts:
        written = os.writev(fd, parts[:_IOV_MAX])
        while written and parts:
            if written >= parts[0].nbytes:
                written -= parts.pop(0).nbytes
            else:
                parts[0] = parts[0][written:]
                written = 0
