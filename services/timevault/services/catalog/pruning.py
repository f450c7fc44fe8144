"""What a prune did, recorded: the plan's snapshot rows follow the repository, each kept
snapshot says which retention rules keep it, and the plan's log tells what was forgotten and
how much space was freed.

The repository is the truth: a snapshot the prune did not find there any more (forgotten by
`timevault repo forget` behind the services' back, say) loses its row too — but only if its
backup had ended before the prune started, so that a backup that finished while the prune ran
is never dropped.
"""

from __future__ import annotations

from datetime import timedelta

import msgspec

from timevault.proto.jobs import Job, PruneSummary
from timevault.proto.plans import SnapshotInfo
from timevault.services.catalog.context import Transaction
from timevault.services.catalog.db import CatalogDB
from timevault.services.common.util import utcnow

# A row without a job (attached) this much older than the listing must have been in it.
_LISTING_SLACK = timedelta(seconds=5)
# The plan's log names at most this many snapshots per line.
_NAMED = 12


async def record(tx: Transaction, job: Job, summary: PruneSummary) -> None:
    """Apply `summary` (a prune's, or a backup's that thinned a full location) to the catalog."""
    db = tx.db
    forgotten = set(summary.forgotten)
    present = set(summary.present)
    gone: list[str] = []
    for snap in await db.list_snapshots(job.plan_id):
        if snap.status != "completed":
            continue
        if snap.id in forgotten:
            await db.delete_snapshot(job.plan_id, snap.id)
        elif snap.id in summary.kept_by:
            if snap.kept_by != summary.kept_by[snap.id]:
                await db.save_snapshot(job.plan_id, msgspec.structs.replace(snap, kept_by=summary.kept_by[snap.id]))
        elif summary.listed_at is not None and snap.id not in present and await _listed_before(db, snap, job, summary):
            await db.delete_snapshot(job.plan_id, snap.id)
            gone.append(snap.id)
    lifecycle = await db.get_lifecycle(job.plan_id)
    await db.save_lifecycle(job.plan_id, msgspec.structs.replace(lifecycle, last_prune_at=utcnow()))
    for line in describe(summary, gone):
        await tx.event(job.plan_id, "prune", line, job.id)


async def _listed_before(db: CatalogDB, snap: SnapshotInfo, job: Job, summary: PruneSummary) -> bool:
    """Whether `snap` was surely in storage when the prune listed the snapshots: its backup ended
    before the prune job started (both times by the catalog's clock), or, for a row without a
    job (attached), it finished well before the listing."""
    if snap.job_id is not None:
        found = await db.get_job(snap.job_id)
        ended = found[0].finished_at if found is not None else None
        return ended is not None and job.started_at is not None and ended < job.started_at
    finished = snap.finished_at or snap.started_at
    return finished is not None and summary.listed_at is not None and finished < summary.listed_at - _LISTING_SLACK


def describe(summary: PruneSummary, gone: list[str]) -> list[str]:
    """The plan's log lines for one prune."""
    lines = []
    rules = f" by retention {summary.retention}" if summary.retention else ""
    if summary.forgotten:
        lines.append(f"forgot {len(summary.forgotten)} snapshot(s){rules}: {_ids(summary.forgotten)}")
    if summary.kept_by:
        kept = [f"{sid[:8]} ({', '.join(reasons)})" for sid, reasons in sorted(summary.kept_by.items())]
        more = f" and {len(kept) - _NAMED} more" if len(kept) > _NAMED else ""
        lines.append(f"kept {len(kept)} snapshot(s){rules}: {'; '.join(kept[:_NAMED])}{more}")
    if gone:
        lines.append(f"{len(gone)} snapshot(s) were gone from the repository (forgotten elsewhere): {_ids(gone)}")
    freed = (f"deleted {summary.packs_deleted} pack(s), repacked {summary.packs_repacked}, "
             f"freed {_size(summary.bytes_freed)}")
    if summary.packs_pending:
        freed += (f"; {summary.packs_pending} pack(s) ({_size(summary.bytes_pending)}) marked, deleted once the "
                  "backups that were running end")
    lines.append(freed)
    lines.extend(summary.notes)
    return lines


def _ids(ids: list[str]) -> str:
    named = ", ".join(sid[:8] for sid in ids[:_NAMED])
    return named + (f" and {len(ids) - _NAMED} more" if len(ids) > _NAMED else "")


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
