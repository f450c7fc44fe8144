"""Choosing folders to back up: the machine that backs up lists folders under the roots it may read.

Subject ``tv.snapshot.folders`` (queue group ``snapshotter``), HTTP ``GET /api/v1/folders?path=``.
The snapshotter answers, because it is the process that reads the sources: the gateway may run
elsewhere. Only folders are listed (never files), and never outside the snapshotter's roots.
"""

from __future__ import annotations

import msgspec

FOLDERS_MAX = 2000


class FolderListRequest(msgspec.Struct, kw_only=True):
    """List the folders in `path`, or the roots when it is absent."""

    path: str | None = None
    """An absolute folder under one of the roots."""


class FolderEntry(msgspec.Struct, kw_only=True):
    """One folder."""

    name: str
    """Its name."""
    path: str
    """Its absolute path."""


class FolderListing(msgspec.Struct, kw_only=True):
    """Reply: the folders in `path` (the roots themselves when `path` is null)."""

    path: str | None = None
    """The folder listed; null for the list of roots."""
    parent: str | None = None
    """The folder above `path`, when it is still under a root."""
    roots: list[str] = msgspec.field(default_factory=list)
    """Every folder this machine may back up (``--root`` of the snapshotter)."""
    folders: list[FolderEntry] = msgspec.field(default_factory=list)
    """The folders, by name (hidden ones last)."""
    truncated: bool = False
    """True when the folder has more than `FOLDERS_MAX` subfolders."""
