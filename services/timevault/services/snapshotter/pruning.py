"""Prune jobs: forget what the plan's retention drops, then remove the data no snapshot needs.

Run by the snapshotter with the plan's write keys (the password is never needed): what each
snapshot references is readable by the write tier, and `timevault.core.prune` collects garbage
in two phases that never stall backups (its module docstring says why that is safe). The
catalog's chunk index is brought up to date first and told what leaves the repository's index
before that is published, so no backup deduplicates against data that is about to go.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from nats.aio.client import Client as NATS

from timevault.core.errors import RepositoryLocked
from timevault.core.prune import PruneOptions, PruneResult, forget_by_rules, mark_due, prune
from timevault.core.repository import Repository
from timevault.proto.jobs import PruneSummary
from timevault.proto.plans import PlanDetail, describe_retention, retention_rules
from timevault.services.snapshotter.catalog_index import CatalogIndex

log = logging.getLogger(__name__)
MARK_EVERY = 24 * 3600.0
"""A prune after a backup that forgot nothing still marks garbage this often (what failed
backups left behind); on request it always does."""


async def prune_plan(nc: NATS, repo: Repository, plan: PlanDetail, *, always_mark: bool,
                     cancel: object = None) -> PruneSummary:
    """Forget by retention and prune; returns what happened (also when it stops half way: the
    summary is filled as it goes and `PruneSummary.notes` says where it stopped)."""
    import asyncio

    catalog = CatalogIndex(nc, plan.id)
    await catalog.sync(repo)
    summary = PruneSummary(retention=describe_retention(plan.retention))
    listed_at = datetime.now(UTC)
    decided = await forget_by_rules(repo, retention_rules(plan.retention), plan.schedule.timezone,
                                    reason=f"retention {summary.retention} of plan {plan.name!r}")
    summary.forgotten = decided.forgotten
    summary.kept_by = {d.snapshot.id: d.reasons for d in decided.decisions if d.keep}
    summary.present = sorted({*decided.snapshots, *decided.left_alone} - set(decided.forgotten))
    summary.listed_at = listed_at
    if decided.left_alone:
        summary.notes.append(f"{len(decided.left_alone)} snapshot(s) that contradict the endorsed history were "
                             "left alone (see `timevault repo check`)")
    mark = always_mark or bool(decided.forgotten) or await mark_due(repo, MARK_EVERY)
    options = PruneOptions(mark=mark, on_publish=catalog.publish,
                           cancel=cancel if isinstance(cancel, asyncio.Event) else None)
    try:
        result = await prune(repo, options)
    except RepositoryLocked as exc:
        summary.notes.append(f"data was not pruned this time: {exc}")
        return summary
    add_result(summary, result)
    return summary


def add_result(summary: PruneSummary, result: PruneResult) -> None:
    summary.packs_deleted += result.packs_deleted
    summary.packs_repacked += result.packs_repacked
    summary.bytes_freed += result.bytes_freed
    summary.blobs_removed += result.blobs_removed
    summary.packs_pending = result.packs_pending
    summary.bytes_pending = result.bytes_pending
    summary.notes.extend(result.notes)
