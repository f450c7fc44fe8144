"""A repository in a folder on a local or mounted disk (the "own hard drives" location)."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from stat import S_ISREG

from timevault.core.storage.base import (
    LocationNotFound,
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
    content-addressed or unique). Leftover temp files from a crash are never listed.
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
        await asyncio.to_thread(self._put_sync, self._path(name), data)

    def _put_sync(self, path: Path, data: Payload) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temp = path.with_name(path.name + _TEMP_SUFFIX + secrets.token_hex(6))
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                _write_all(fd, payload_parts(data))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, path)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise StorageError(f"{self.location}: cannot write {path.name}: {exc.strerror}") from exc

    async def put_new(self, name: str, data: Payload) -> bool:
        """Like `put`, but only if `name` is free: the finished temp file is hard-linked into
        place, and link(2) never replaces an existing name. False when the name was taken."""
        return await asyncio.to_thread(self._put_new_sync, self._path(name), data)

    def _put_new_sync(self, path: Path, data: Payload) -> bool:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temp = path.with_name(path.name + _TEMP_SUFFIX + secrets.token_hex(6))
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
                    os.unlink(temp)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            return True
        except OSError as exc:
            raise StorageError(f"{self.location}: cannot write {path.name}: {exc.strerror}") from exc

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
            raise StorageError(f"{self.location}: cannot read {name}: {exc.strerror}") from exc

    async def stat(self, name: str) -> ObjectInfo:
        try:
            st = await asyncio.to_thread(os.stat, self._path(name))
        except _MISSING as exc:
            raise ObjectNotFound(f"{self.location}: object {name} not found") from exc
        except OSError as exc:
            raise StorageError(f"{self.location}: cannot stat {name}: {exc.strerror}") from exc
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
            raise StorageError(f"{self.location}: cannot delete {name}: {exc.strerror}") from exc

    async def close(self) -> None:
        return None


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
