"""Restoring a snapshot (or chosen paths of it) into a target folder.

Everything is written into a fresh temporary folder beside the target and moved into place
at the end, so an interrupted restore never leaves half-written files in the target. Every
blob is verified (AEAD tag and id). Names from the repository are checked before use: a
hostile repository cannot write outside the target (no '/', '..', duplicates, or writing
through a symlink — files are created with O_EXCL|O_NOFOLLOW in folders we just made).
A damaged blob fails only the files that need it; the rest still restore.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.archiver.archiver import Progress
from shared.repository.blobs import CorruptBlob
from shared.repository.format import BlobType, Node
from shared.repository.repo import Repository, RepositoryError
from shared.storage import StorageError

PREFETCH_BLOBS = 4
PARALLEL_FILES = 4


class RestoreError(RepositoryError):
    pass


class RestoreCanceled(Exception):
    pass


@dataclass
class RestoreResult:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class _Item:
    relative: str  # '/'-joined, for messages
    parts: tuple[bytes, ...]
    node: Node


def _safe_name(name: bytes) -> bool:
    return bool(name) and name not in (b".", b"..") and b"/" not in name and b"\0" not in name


def _parse_includes(includes: list[str]) -> list[tuple[bytes, ...]]:
    parsed = []
    for include in includes:
        parts = tuple(part for part in os.fsencode(include).split(b"/") if part not in (b"", b"."))
        if b".." in parts:
            raise RestoreError(f"--include {include}: '..' is not allowed")
        parsed.append(parts)
    return parsed


def _wanted(parts: tuple[bytes, ...], includes: list[tuple[bytes, ...]]) -> tuple[bool, bool]:
    """(inside an include: restore whole, on the way to one: create the folder only)."""
    if not includes:
        return True, False
    inside = any(parts[: len(inc)] == inc for inc in includes)
    on_path = any(inc[: len(parts)] == parts and len(inc) > len(parts) for inc in includes)
    return inside, on_path


class Restorer:
    def __init__(
        self, repo: Repository, progress: Callable[[Progress], None] | None, cancel: asyncio.Event | None
    ) -> None:
        self.repo = repo
        self.result = RestoreResult()
        self.progress = Progress(started=time.monotonic())
        self._on_progress = progress
        self._cancel = cancel
        self._last_report = 0.0

    async def plan(self, tree_id: bytes, includes: list[tuple[bytes, ...]]) -> list[_Item]:
        items: list[_Item] = []

        async def visit(tree_id: bytes, parents: tuple[bytes, ...]) -> None:
            tree = await self.repo.load_tree(tree_id)
            seen: set[bytes] = set()
            for node in tree.nodes:
                name_text = os.fsdecode(node.name)
                if not _safe_name(node.name) or node.name in seen:
                    raise RestoreError(f"the snapshot holds an unsafe or repeated name {name_text!r}")
                seen.add(node.name)
                parts = (*parents, node.name)
                inside, on_path = _wanted(parts, includes)
                if not inside and not on_path:
                    continue
                if on_path and node.type != "dir":
                    continue
                items.append(_Item(os.fsdecode(b"/".join(parts)), parts, node))
                if node.type == "dir" and node.subtree is not None:
                    await visit(node.subtree, parts)

        await visit(tree_id, ())
        return items

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._on_progress and (force or now - self._last_report >= 0.1):
            self._last_report = now
            self._on_progress(self.progress)

    async def write_file(self, root: str, item: _Item) -> None:
        path = os.path.join(root, *map(os.fsdecode, item.parts))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            self.result.errors.append(f"{item.relative}: {exc.strerror}")
            return
        ok = False
        pending: list[asyncio.Task[bytes]] = []
        try:
            ids = item.node.content
            next_index = 0
            written = 0
            while next_index < len(ids) or pending:
                while next_index < len(ids) and len(pending) < PREFETCH_BLOBS:
                    pending.append(asyncio.create_task(self.repo.load_blob(ids[next_index], BlobType.DATA)))
                    next_index += 1
                data = await pending.pop(0)
                await asyncio.to_thread(_write_all, fd, data)
                written += len(data)
                self.progress.bytes_done += len(data)
                self._report()
            if written != item.node.size:
                self.result.errors.append(
                    f"{item.relative}: restored {written} bytes, expected {item.node.size}"
                )
            else:
                ok = True
        except (CorruptBlob, StorageError, RepositoryError) as exc:
            self.result.errors.append(f"{item.relative}: {exc}")
        finally:
            for task in pending:
                task.cancel()
            os.close(fd)
            if not ok:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        if ok:
            self.result.files += 1
            self.result.bytes += written
            self.progress.files_done += 1

    async def run(self, items: list[_Item], root: str) -> None:
        files = [item for item in items if item.node.type == "file"]
        self.progress.files_total = len(files)
        self.progress.bytes_total = sum(item.node.size for item in files)
        for item in items:
            path = os.path.join(root, *map(os.fsdecode, item.parts))
            if item.node.type == "dir":
                os.mkdir(path, 0o700)
                self.result.dirs += 1
            elif item.node.type == "symlink" and item.node.target is not None:
                os.symlink(item.node.target, path)
        sem = asyncio.Semaphore(PARALLEL_FILES)

        async def one(item: _Item) -> None:
            async with sem:
                if self._cancel is not None and self._cancel.is_set():
                    raise RestoreCanceled("restore canceled")
                await self.write_file(root, item)

        await asyncio.gather(*(one(item) for item in files))
        # Metadata last, deepest first, so writing children does not bump folder mtimes.
        for item in sorted(items, key=lambda i: len(i.parts), reverse=True):
            _apply_metadata(os.path.join(root, *map(os.fsdecode, item.parts)), item.node)
        self._report(force=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _apply_metadata(path: str, node: Node) -> None:
    if not os.path.lexists(path):
        return
    with contextlib.suppress(OSError):
        if os.geteuid() == 0:
            os.lchown(path, node.uid, node.gid)
    if node.type != "symlink":
        with contextlib.suppress(OSError):
            os.chmod(path, stat.S_IMODE(node.mode))
    with contextlib.suppress(OSError, NotImplementedError):
        os.utime(path, ns=(node.mtime_ns, node.mtime_ns), follow_symlinks=False)


def _merge_into(source: str, target: str, errors: list[str]) -> None:
    """Move the restored tree into an existing target; folders merge, files are replaced."""
    for name in os.listdir(source):
        src, dst = os.path.join(source, name), os.path.join(target, name)
        try:
            dst_st = os.lstat(dst)
        except FileNotFoundError:
            os.rename(src, dst)
            continue
        src_is_dir = stat.S_ISDIR(os.lstat(src).st_mode)
        dst_is_dir = stat.S_ISDIR(dst_st.st_mode)
        if src_is_dir and dst_is_dir:
            _merge_into(src, dst, errors)
        elif not src_is_dir and not dst_is_dir:
            os.replace(src, dst)
        else:
            errors.append(
                f"{dst}: left as it was; the snapshot has a {'folder' if src_is_dir else 'file'} there"
            )


async def restore(
    repo: Repository,
    snapshot_ref: str,
    target: str,
    *,
    includes: list[str] | None = None,
    progress: Callable[[Progress], None] | None = None,
    cancel: asyncio.Event | None = None,
) -> RestoreResult:
    """Restore a snapshot into `target` (created if missing). Returns counts and per-file errors."""
    if not os.path.isabs(target):
        raise RestoreError(f"restore target must be an absolute path: {target}")
    target = os.path.normpath(target)
    snapshot_id = await repo.resolve_snapshot(snapshot_ref)
    snapshot = await repo.load_snapshot(snapshot_id)
    parsed = _parse_includes(includes or [])
    restorer = Restorer(repo, progress, cancel)
    items = await restorer.plan(snapshot.tree, parsed)
    if parsed and not items:
        raise RestoreError("no path in the snapshot matches the --include patterns")
    if os.path.lexists(target) and not os.path.isdir(target):
        raise RestoreError(f"restore target {target} exists and is not a folder")
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    temp = os.path.join(parent, f".{os.path.basename(target)}.restore-{secrets.token_hex(4)}")
    os.mkdir(temp, 0o700)
    try:
        await restorer.run(items, temp)
        if os.path.lexists(target):
            _merge_into(temp, target, restorer.result.errors)
        else:
            os.rename(temp, target)
            os.chmod(target, 0o755)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return restorer.result
