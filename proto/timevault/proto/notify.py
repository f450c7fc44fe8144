"""What a notification URL receives: one JSON POST per event, never a secret.

Sent by the catalog (`timevault.services.catalog.notify`) to a plan's `notify` URLs and to the
URLs of ``timevault up --notify``: when a backup or restore fails or is canceled, when a
scheduled backup is missed (TimeVault was not running at its time) or skipped (the plan was
still busy), and, with the plan's `notify_success`, when one completes. The body carries names,
ids, counts and times only: no password, key, token, location credential or notification URL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec


class NotifyPlan(msgspec.Struct, kw_only=True):
    """The plan a notification is about."""

    id: str
    """The plan's id."""
    name: str
    """The plan's name."""


class Notification(msgspec.Struct, kw_only=True):
    """The body of every notification POST (``Content-Type: application/json``)."""

    plan: NotifyPlan
    """The plan (id and name)."""
    job: str | None = None
    """The job's id; null for a missed or skipped scheduled backup."""
    kind: Literal["backup", "restore", "schedule", "prune"] = "backup"
    """What it is about: a backup, restore or prune job, or a scheduled slot that did not run."""
    status: Literal["completed", "failed", "canceled", "missed"]
    """The outcome."""
    error: str | None = None
    """Why it failed, was canceled or missed."""
    files: int = 0
    """Files backed up or restored."""
    size: int = 0
    """Bytes backed up (the snapshot's logical size) or restored."""
    added_size: int = 0
    """Backup: bytes newly stored."""
    snapshot: str | None = None
    """The snapshot made (backup) or restored from (restore)."""
    started_at: datetime | None = None
    """When the job started (UTC)."""
    finished_at: datetime | None = None
    """When it ended (UTC)."""
    slot: datetime | None = None
    """Scheduled backups: the slot (UTC) it was for; for missed ones, the latest slot missed."""
    missed: int = 0
    """Missed slots: how many scheduled backups did not run."""
    sent_at: datetime
    """When this notification was first sent (UTC); retries send the same body."""
