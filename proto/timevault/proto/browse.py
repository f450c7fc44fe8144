"""Browsing snapshots: sessions unlocked with a plan's password, and what they answer.

A session is opened on ``tv.browse.open`` (queue group ``restorer``): the restorer that answers
opens the repository with the password and keeps it in memory only, until the session is idle
for `BrowseOpen.idle_timeout` seconds or locked. Every later request names the session and goes
to that restorer (``tv.browse.<instance>.<op>``, from `BrowseSession.session`), so the password
is typed once, not per click, and is never stored or sent again.

The JSON field names are the HTTP API's (``/api/v1/plans/{plan_id}/…``, see docs/gateway.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

IDLE_DEFAULT = 600
IDLE_MAX = 3600
LIST_PAGE = 5000


class BrowseOpen(msgspec.Struct, kw_only=True):
    """``tv.browse.open``: unlock a plan's snapshots for browsing (HTTP ``POST …/unlock``)."""

    plan: str
    """Plan id or name."""
    password: str
    """The plan's backup password; held in the restorer's memory for the session only."""
    idle_timeout: int = IDLE_DEFAULT
    """Seconds without a request after which the session locks itself (60..3600, default 600)."""


class BrowseSession(msgspec.Struct, kw_only=True):
    """An open browsing session (reply to ``tv.browse.open``)."""

    session: str
    """The session's secret id; send it as the ``X-Timevault-Session`` header over HTTP."""
    plan_id: str
    """The plan whose snapshots it reads."""
    expires_at: datetime
    """When it locks itself unless used again (UTC); every request moves this on."""
    idle_timeout: int = IDLE_DEFAULT
    """Seconds of idleness it allows."""


class BrowseRef(msgspec.Struct, kw_only=True):
    """Names a session (``tv.browse.<instance>.lock`` and ``.touch``)."""

    session: str
    """The session id."""


class BrowseLocked(msgspec.Struct, kw_only=True):
    """Reply to a lock: the session is gone (also when it had expired already)."""

    locked: bool = True
    """Always true."""


class BrowseEntry(msgspec.Struct, kw_only=True):
    """One entry of a folder in a snapshot."""

    name: str
    """Its name."""
    path: str
    """Its absolute path as backed up."""
    type: Literal["file", "dir", "symlink"]
    """``file``, ``dir`` or ``symlink``."""
    size: int = 0
    """Bytes (files; 0 for folders and symlinks)."""
    mode: int = 0
    """Permission bits, e.g. 420 (0644)."""
    mtime: str = ""
    """Modification time, RFC 3339 UTC."""
    target: str | None = None
    """A symlink's target."""


class BrowseList(msgspec.Struct, kw_only=True):
    """``tv.browse.<instance>.ls``: list a folder of a snapshot (HTTP ``GET …/snapshots/{id}/ls``)."""

    session: str
    """The session id."""
    snapshot: str
    """Snapshot id, unique prefix or ``latest``."""
    path: str = "/"
    """Absolute path of the folder (a file's path lists the file)."""
    offset: int = 0
    """Skip this many entries (a folder is sent in pages of at most `LIST_PAGE`)."""
    limit: int = LIST_PAGE
    """At most this many entries."""
    plan: str | None = None
    """The plan the request is made for (id or name); the session must belong to it."""


class BrowseListing(msgspec.Struct, kw_only=True):
    """A folder of a snapshot, by name."""

    snapshot: str
    """The full snapshot id."""
    path: str
    """The folder listed."""
    entries: list[BrowseEntry]
    """Its entries (this page of them)."""
    total: int = 0
    """How many entries the folder has."""
    offset: int = 0
    """Index of the first entry sent."""


class BrowseDiff(msgspec.Struct, kw_only=True):
    """``tv.browse.<instance>.diff``: what changed between two snapshots (HTTP ``GET …/diff``)."""

    session: str
    """The session id."""
    from_snapshot: str
    """The earlier snapshot (id, prefix or ``latest``)."""
    to_snapshot: str
    """The later snapshot."""
    plan: str | None = None
    """The plan the request is made for (id or name); the session must belong to it."""


class DiffChange(msgspec.Struct, kw_only=True):
    """One path that differs."""

    path: str
    """Absolute path."""
    type: Literal["file", "dir", "symlink"]
    """Its type (after the change; before it for removed paths)."""
    size: int = 0
    """Bytes after the change (before it for removed paths)."""
    old_size: int = 0
    """Bytes before the change (changed paths)."""
    what: Literal["added", "removed", "content", "metadata"] = "added"
    """``added``, ``removed``, ``content`` (data or symlink target) or ``metadata`` (mode or time only)."""


class SnapshotDiff(msgspec.Struct, kw_only=True):
    """Reply to a diff; every list is sorted by path."""

    from_snapshot: str
    """The earlier snapshot's full id."""
    to_snapshot: str
    """The later snapshot's full id."""
    added: list[DiffChange] = msgspec.field(default_factory=list)
    """Paths only in the later snapshot (a new folder with everything in it)."""
    removed: list[DiffChange] = msgspec.field(default_factory=list)
    """Paths only in the earlier snapshot."""
    changed: list[DiffChange] = msgspec.field(default_factory=list)
    """Paths in both whose content or metadata differ."""
    added_size: int = 0
    """Bytes of the added files."""
    removed_size: int = 0
    """Bytes of the removed files."""


class BrowseFind(msgspec.Struct, kw_only=True):
    """``tv.browse.<instance>.find``: find a name in every snapshot (HTTP ``GET …/find``)."""

    session: str
    """The session id."""
    pattern: str
    """A name or part of one (``notes``), or a glob (``*.pdf``); with a '/', also matched on the path."""
    limit: int = 1000
    """At most this many distinct paths."""
    plan: str | None = None
    """The plan the request is made for (id or name); the session must belong to it."""


class FindVersion(msgspec.Struct, kw_only=True):
    """A snapshot that holds a found path."""

    snapshot: str
    """Full snapshot id."""
    time: str
    """When the snapshot was taken (RFC 3339 UTC)."""
    size: int = 0
    """The file's size in that snapshot."""
    mtime: str = ""
    """Its modification time in that snapshot."""


class FindMatch(msgspec.Struct, kw_only=True):
    """A path whose name matched."""

    path: str
    """Absolute path."""
    type: Literal["file", "dir", "symlink"]
    """Its type."""
    versions: list[FindVersion] = msgspec.field(default_factory=list)
    """Every snapshot that holds it, oldest first."""


class FindResult(msgspec.Struct, kw_only=True):
    """Reply to a find: matches by path."""

    pattern: str
    """The pattern searched for."""
    matches: list[FindMatch] = msgspec.field(default_factory=list)
    """The paths found."""
    truncated: bool = False
    """True when more paths matched than `BrowseFind.limit`."""


class BrowseRestore(msgspec.Struct, kw_only=True):
    """``tv.browse.<instance>.restore``: restore chosen files and folders with the session's key.

    Each chosen item lands by its own name in `target`, or back at its original path when
    `target` is absent. An item is never written over an existing file or folder: it is then
    named beside it (``notes (restored 2024-05-01 140509).txt``).
    """

    session: str
    """The session id."""
    snapshot: str
    """Snapshot id, prefix or ``latest``."""
    paths: list[str]
    """Absolute paths inside the snapshot (files or folders) to restore."""
    target: str | None = None
    """Folder to restore into; absent = each item back to its original place."""
    plan: str | None = None
    """The plan the request is made for (id or name); the session must belong to it."""
