"""Figures the catalog reports for monitoring (subject ``tv.catalog.stats``, the gateway's ``/metrics``)."""

from __future__ import annotations

import msgspec

DURATION_BUCKETS: tuple[float, ...] = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600)
"""Upper bounds (seconds) of the job duration histogram; a last, unbounded bucket is implied."""


class CatalogStatsRequest(msgspec.Struct, kw_only=True):
    """Subject ``tv.catalog.stats``: no parameters yet."""


class JobFigures(msgspec.Struct, kw_only=True):
    """Jobs of one kind in one status, over the catalog's whole history."""

    kind: str
    """``backup`` or ``restore``."""
    status: str
    """``pending``, ``running``, ``completed``, ``failed`` or ``canceled``."""
    count: int
    """How many jobs."""
    bytes_done: int = 0
    """Bytes they read (backup) or restored (restore)."""
    added_size: int = 0
    """Backup: bytes they newly stored."""
    duration_sum: float = 0.0
    """Seconds from start to finish, summed over the finished ones."""
    duration_count: int = 0
    """How many of them have a start and a finish."""
    duration_buckets: list[int] = msgspec.field(default_factory=list)
    """Cumulative counts of finished jobs that took at most each of `DURATION_BUCKETS` seconds."""


class CatalogStats(msgspec.Struct, kw_only=True):
    """Reply to ``tv.catalog.stats``."""

    plans: int
    """Plans (not counting those being deleted)."""
    jobs: list[JobFigures]
    """One entry per (kind, status) that has jobs."""
    buckets: list[float] = msgspec.field(default_factory=lambda: list(DURATION_BUCKETS))
    """The histogram's upper bounds in seconds."""
