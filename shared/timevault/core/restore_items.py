"""Restoring chosen files and folders of a snapshot, into a folder or back where they were.

Each chosen item lands by its own name: directly in the chosen folder, or (without one) in the
folder it was backed up from, which is made again when it is gone. An existing file or folder
is never written over or merged into: the restored item is then named beside it, as
``notes (restored 2024-05-01 140509).txt`` (the snapshot's time), so nothing is silently lost.

The data is restored by `timevault.core.restorer.restore` into a hidden folder inside the
destination (the same file system, so the final step is a rename), then each item is renamed
into place with ``RENAME_NOREPLACE`` where the kernel has it.

A restore holds an exclusive `flock` on an ``.owner`` file inside its hidden folder for as long
as it runs. The kernel lets go of it when the process ends, however it ends, so the next item
restore into the same folder can tell an abandoned hidden folder (a restorer killed with -9, a
power cut) from one in use, and removes the abandoned ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from timevault.core.archiver.archiver import Progress
from timevault.core.browse import BrowseError, find_node, join_path, split_path
from timevault.core.repository.repo import Repository
from timevault.core.restorer import RestoreError, restore

_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
TEMP_PREFIX = ".timevault-restore-"
OWNER_FILE = ".owner"
# A hidden folder without its owner file is one whose restore died between making the folder
# and locking it (a moment), or one being made right now: only an old one is removed.
UNOWNED_GRACE_SECONDS = 3600
log = logging.getLogger(__name__)


@dataclass
class Placed:
    """Where one chosen item went."""

    path: str  # in the snapshot
    restored_to: str  # on disk
    beside: bool  # an existing entry kept its name; this one was named beside it


@dataclass
class ItemsResult:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)
    placed: list[Placed] = field(default_factory=list)

    def notes(self) -> list[str]:
        """One line per item: where it went, and why when it was named beside another."""
        lines = []
        for item in self.placed:
            if item.beside:
                lines.append(f"{item.path}: kept what is there; restored as {item.restored_to}")
            else:
                lines.append(f"{item.path}: restored to {item.restored_to}")
        return lines


def _owner_and_inside(path: str, sources: list[str]) -> bool:
    return any(path == src or path.startswith(src.rstrip("/") + "/") for src in sources)


def _chosen(paths: list[str]) -> list[str]:
    """Normalised absolute paths, an item inside another chosen one dropped, in order."""
    result: list[str] = []
    for path in paths:
        if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
            raise RestoreError(f"paths to restore must be absolute paths in the snapshot, got {path!r}")
        try:
            normal = join_path(split_path(path))
        except BrowseError as exc:
            raise RestoreError(str(exc)) from exc
        if normal == "/":
            raise RestoreError("choose files or folders to restore, not the whole snapshot root")
        if normal not in result:
            result.append(normal)
    return [p for p in result if not any(o != p and p.startswith(o + "/") for o in result)]


def beside_name(name: str, stamp: str, taken: Callable[[str], bool]) -> str:
    """``notes (restored STAMP).txt``; `` 2``, `` 3``… appended while `taken` says it exists."""
    stem, ext = os.path.splitext(name)
    if not stem:  # ".bashrc"
        stem, ext = name, ""
    for n in range(1, 1000):
        suffix = f" (restored {stamp})" if n == 1 else f" (restored {stamp} {n})"
        candidate = f"{stem}{suffix}{ext}"
        if not taken(candidate):
            return candidate
    raise RestoreError(f"no free name beside {name}")


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name, use_errno=True) if name else None
    except OSError:
        return None


_LIBC = _libc()


def rename_noreplace(src: str, dst: str) -> None:
    """Rename `src` to `dst`, failing with FileExistsError when `dst` exists (atomically where the
    kernel offers renameat2's RENAME_NOREPLACE, else by link or a check just before)."""
    renameat2 = getattr(_LIBC, "renameat2", None) if _LIBC is not None else None
    if renameat2 is not None:
        result = renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
        if result == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), dst)
    if not os.path.isdir(src) or os.path.islink(src):
        os.link(src, dst, follow_symlinks=False)  # fails when dst exists
        os.unlink(src)
        return
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    os.rename(src, dst)


def _place(src: str, folder: str, name: str, stamp: str) -> tuple[str, bool]:
    """Move `src` into `folder` as `name`, or beside an existing `name`: (final path, beside)."""
    dst = os.path.join(folder, name)
    try:
        rename_noreplace(src, dst)
        return dst, False
    except FileExistsError:
        pass
    for _ in range(5):  # another process may take the name we picked; pick again
        other = beside_name(name, stamp, lambda n: os.path.lexists(os.path.join(folder, n)))
        dst = os.path.join(folder, other)
        try:
            rename_noreplace(src, dst)
            return dst, True
        except FileExistsError:
            continue
    raise RestoreError(f"could not find a free name beside {os.path.join(folder, name)}")


async def restore_items(
    repo: Repository,
    snapshot_ref: str,
    paths: list[str],
    target: str | None = None,
    *,
    progress: Callable[[Progress], None] | None = None,
    cancel: asyncio.Event | None = None,
) -> ItemsResult:
    """Restore the chosen `paths` of a snapshot into `target`, or back to their places (None)."""
    if target is not None and not os.path.isabs(target):
        raise RestoreError(f"restore target must be an absolute path: {target}")
    snapshot_id = await repo.resolve_snapshot(snapshot_ref)
    snapshot = await repo.load_snapshot(snapshot_id)
    chosen = _chosen(paths)
    if not chosen:
        raise RestoreError("choose at least one file or folder to restore")
    for path in chosen:
        try:
            await find_node(repo, snapshot.tree, path)
        except BrowseError as exc:
            raise RestoreError(str(exc)) from exc
        if target is None and not _owner_and_inside(path, snapshot.paths):
            raise RestoreError(f"{path} is not inside a backed-up folder, so it has no original place to go back to")
    stamp = _stamp(snapshot.time)
    groups: dict[str, list[str]] = {}
    for path in chosen:
        folder = os.path.normpath(target) if target is not None else os.path.dirname(path)
        groups.setdefault(folder, []).append(path)
    result = ItemsResult()
    done = Progress()

    def report(part: Progress) -> None:
        if progress is not None:
            progress(Progress(files_done=done.files_done + part.files_done, bytes_done=done.bytes_done + part.bytes_done,
                              files_total=None, bytes_total=None, started=part.started, current=part.current))

    for folder, items in groups.items():
        if cancel is not None and cancel.is_set():
            raise RestoreError("restore canceled")
        await asyncio.to_thread(os.makedirs, folder, exist_ok=True)
        await asyncio.to_thread(remove_abandoned, folder)
        temp, owner = await asyncio.to_thread(_claim_hidden_folder, folder)
        try:
            restored = await restore(repo, snapshot_id, os.path.join(temp, "r"), includes=items,
                                     progress=report, cancel=cancel)
            result.files += restored.files
            result.dirs += restored.dirs
            result.bytes += restored.bytes
            result.errors.extend(restored.errors)
            done.files_done += restored.files
            done.bytes_done += restored.bytes
            for path in items:
                src = os.path.join(temp, "r", path.lstrip("/"))
                if not os.path.lexists(src):
                    result.errors.append(f"{path}: nothing was restored")
                    continue
                final, beside = await asyncio.to_thread(_place, src, folder, os.path.basename(path), stamp)
                result.placed.append(Placed(path, final, beside))
        finally:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(shutil.rmtree, temp)
            os.close(owner)
    return result


def _claim_hidden_folder(folder: str) -> tuple[str, int]:
    """A new hidden folder in `folder`, private until the items are moved out, and the open
    owner file whose lock says a restore is using it."""
    temp = os.path.join(folder, f"{TEMP_PREFIX}{secrets.token_hex(4)}")
    os.mkdir(temp, 0o700)
    owner = os.open(os.path.join(temp, OWNER_FILE), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new, so no one else can hold it
    return temp, owner


def remove_abandoned(folder: str) -> list[str]:
    """Remove the hidden folders that item restores into `folder` left when they were killed;
    their names. A folder whose owner lock is held belongs to a restore that is still running."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        if _abandoned(entry):
            try:
                shutil.rmtree(entry.path)
            except OSError as exc:
                log.warning("cannot remove the abandoned restore folder %s: %s", entry.path, exc)
                continue
            removed.append(entry.name)
    return removed


def _abandoned(entry: os.DirEntry[str]) -> bool:
    try:
        owner = os.open(os.path.join(entry.path, OWNER_FILE), os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        try:
            return entry.stat(follow_symlinks=False).st_mtime < time.time() - UNOWNED_GRACE_SECONDS
        except OSError:
            return False
    except OSError:
        return False  # not ours to judge (a symlink, no permission)
    try:
        fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # a running restore holds it
    except OSError:
        return False
    finally:
        os.close(owner)
    return True


def _stamp(snapshot_time: str) -> str:
    """The snapshot's time in this machine's zone, for names: '2024-05-01 140509'."""
    try:
        return datetime.fromisoformat(snapshot_time).astimezone().strftime("%Y-%m-%d %H%M%S")
    except ValueError:
        return datetime.now().strftime("%Y-%m-%d %H%M%S")
