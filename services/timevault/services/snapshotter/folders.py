"""The folder picker's source: folders under the roots this machine may back up.

``tv.snapshot.folders`` (queue group ``snapshotter``) lists the subfolders of one folder, or the
roots themselves. A path is accepted only when it lies under a root after symlinks are resolved,
so the picker cannot be used to look around the rest of the file system; files are never listed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from nats.aio.client import Client as NATS

from timevault.proto import subjects
from timevault.proto.errors import ServiceError, invalid
from timevault.proto.folders import FOLDERS_MAX, FolderEntry, FolderListing, FolderListRequest
from timevault.services.common import rpc

CANDIDATE_ROOTS = ("/home", "/mnt", "/media", "/srv", "/data")


def default_roots() -> list[str]:
    """The user's home plus the usual places of data disks, those that exist."""
    home = os.path.expanduser("~")
    found = [home] if home != "/" and os.path.isdir(home) else []
    for root in CANDIDATE_ROOTS:
        if os.path.isdir(root) and not _inside(home, root):
            found.append(root)
    return found


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


class FolderService:
    def __init__(self, nc: NATS, roots: Sequence[str]) -> None:
        self.nc = nc
        self.roots = [os.path.normpath(os.path.abspath(root)) for root in roots]

    async def start(self) -> None:
        await rpc.serve(self.nc, subjects.FOLDERS_LIST, FolderListRequest, self.list_folders,
                        queue=subjects.SNAPSHOTTER_QUEUE)

    async def list_folders(self, req: FolderListRequest) -> FolderListing:
        import asyncio

        roots = [root for root in self.roots if os.path.isdir(root)]
        if req.path is None:
            return FolderListing(roots=roots, folders=[FolderEntry(name=root, path=root) for root in roots])
        path = req.path
        if not isinstance(path, str) or not os.path.isabs(path) or "\0" in path or len(path) > 4096:
            raise invalid("path must be an absolute folder path", "path")
        path = os.path.normpath(path)
        real = os.path.realpath(path)
        owner = next((root for root in roots if _inside(path, root) and _inside(real, os.path.realpath(root))), None)
        if owner is None:
            raise ServiceError("not_found", f"{path} is not under a folder this machine may back up "
                               f"({', '.join(roots) or 'none configured'})", "path")
        try:
            folders, truncated = await asyncio.to_thread(_subfolders, path)
        except FileNotFoundError as exc:
            raise ServiceError("not_found", f"there is no folder {path}", "path") from exc
        except NotADirectoryError as exc:
            raise invalid(f"{path} is not a folder", "path") from exc
        except OSError as exc:
            raise ServiceError("unavailable", f"cannot list {path}: {exc.strerror}", "path") from exc
        parent = os.path.dirname(path) if path != owner else None
        return FolderListing(path=path, parent=parent, roots=roots, folders=folders, truncated=truncated)


def _subfolders(path: str) -> tuple[list[FolderEntry], bool]:
    names = []
    with os.scandir(path) as it:
        for entry in it:
            try:
                if entry.is_dir(follow_symlinks=False):
                    names.append(entry.name)
            except OSError:
                continue
    names.sort(key=lambda name: (name.startswith("."), name.lower()))
    shown = names[:FOLDERS_MAX]
    return [FolderEntry(name=_text(name), path=_text(os.path.join(path, name))) for name in shown], len(names) > len(shown)


def _text(value: str) -> str:
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
