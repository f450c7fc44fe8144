"""Jobs: one backup or restore run, its lifecycle, progress events and control messages.

Lifecycle: ``pending`` → ``running`` → ``completed`` | ``failed`` | ``canceled``.
Only the catalog changes a job's status (workers ask it through claim/finish); workers publish
`JobProgress` (which doubles as heartbeat); the catalog fails running jobs whose heartbeat stops.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from timevault.proto.plans import SnapshotInfo

JobKind = Literal["backup", "restore", "prune"]
JobStatus = Literal["pending", "running", "completed", "failed", "canceled"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "canceled"})


class PruneSummary(msgspec.Struct, kw_only=True):
    """What a prune did: the snapshots retention forgot and kept, and the data removed."""

    forgotten: list[str] = msgspec.field(default_factory=list)
    """Ids of the snapshots forgotten (no retention rule keeps them)."""
    kept_by: dict[str, list[str]] = msgspec.field(default_factory=dict)
    """Snapshot id → the rules that keep it."""
    retention: str = ""
    """The rules applied, as a user writes them (``timemachine``, ``keep-last 2``, ``none``)."""
    packs_deleted: int = 0
    """Packs deleted from the location."""
    packs_repacked: int = 0
    """Mostly-garbage packs whose live data was copied into new packs."""
    bytes_freed: int = 0
    """Bytes deleted minus the bytes written by repacking."""
    blobs_removed: int = 0
    """Blobs that no snapshot needed any more."""
    packs_pending: int = 0
    """Packs marked as garbage, deleted by a later prune once the backups that were running have ended."""
    bytes_pending: int = 0
    """Their size."""
    notes: list[str] = msgspec.field(default_factory=list)
    """Anything worth knowing (e.g. why something was left for later)."""
    present: list[str] = msgspec.field(default_factory=list)
    """Every snapshot the repository held once retention ran (the catalog drops rows of others)."""
    listed_at: datetime | None = None
    """When the snapshots were listed (UTC)."""


class Job(msgspec.Struct, kw_only=True):
    """A backup, restore or prune run (``GET /api/v1/jobs/{job_id}``)."""

    id: str
    """Stable id, ``j_`` + hex."""
    plan_id: str
    """The plan."""
    kind: JobKind
    """``backup``, ``restore`` or ``prune``."""
    status: JobStatus
    """Where in the lifecycle the job is."""
    created_at: datetime
    """When it was requested (UTC)."""
    started_at: datetime | None = None
    """When a worker started it (UTC)."""
    finished_at: datetime | None = None
    """When it ended (UTC)."""
    trigger: Literal["manual", "schedule", "backup"] = "manual"
    """Who asked for it (``backup``: a prune that follows a successful backup)."""
    files_done: int = 0
    """Files processed so far."""
    files_total: int = 0
    """Files to process (0 while unknown)."""
    bytes_done: int = 0
    """Bytes processed so far."""
    bytes_total: int = 0
    """Bytes to process (0 while unknown)."""
    rate: float = 0.0
    """Recent throughput in bytes per second."""
    error: str | None = None
    """Why it failed or was canceled."""
    snapshot_id: str | None = None
    """Backup: the snapshot it created; restore: the snapshot it restores."""
    target: str | None = None
    """Restore: the target folder."""
    includes: list[str] = msgspec.field(default_factory=list)
    """Restore: the chosen paths (empty = everything)."""
    worker: str | None = None
    """Id of the service instance running it."""
    attempt: int = 0
    """How many times a worker claimed it (more than 1 after a redelivery)."""
    slot: datetime | None = None
    """Scheduled jobs: the schedule slot (UTC) it was started for."""
    added_size: int = 0
    """Backup: bytes newly stored so far."""
    warnings: list[str] = msgspec.field(default_factory=list)
    """What a completed job could not do: a restore names each file or folder it could not restore
    (damaged or missing data; at most `WARNINGS_MAX`, the last entry then says how many more).
    A completed job with warnings finished but is incomplete (the CLI exits 3)."""
    original_place: bool = False
    """Restore: the chosen items go back where they were backed up from (`target` is unused)."""
    prune: PruneSummary | None = None
    """Prune (and a backup that thinned a full location): what was forgotten and removed."""


WARNINGS_MAX = 100


def capped_warnings(items: list[str], limit: int = WARNINGS_MAX) -> list[str]:
    """`items`, at most `limit` of them, the last one counting the rest."""
    if len(items) <= limit:
        return list(items)
    return [*items[: limit - 1], f"... and {len(items) - limit + 1} more"]


class JobCreate(msgspec.Struct, kw_only=True):
    """Subject ``tv.catalog.job.create``: back up now (HTTP ``POST /api/v1/plans/{id}/backups``)."""

    plan: str
    """Plan id or name."""
    kind: JobKind = "backup"
    """``backup`` or ``prune`` (queued for a snapshotter). ``restore`` is internal: the restorer
    records its own job."""
    trigger: Literal["manual", "schedule", "backup"] = "manual"
    """Who asks."""
    snapshot: str | None = None
    """Restore: the full snapshot id."""
    target: str | None = None
    """Restore: the target folder."""
    includes: list[str] = msgspec.field(default_factory=list)
    """Restore: chosen paths."""
    worker: str | None = None
    """Restore: the restorer instance that runs (and already claims) the job."""
    endorsed: list[str] = msgspec.field(default_factory=list)
    """Restore: the snapshot ids the restorer endorsed with the password (the catalog marks them)."""
    original_place: bool = False
    """Restore: items go back to their original place."""


class JobRef(msgspec.Struct, kw_only=True):
    """Names one job."""

    job_id: str
    """The job id."""


class JobListRequest(msgspec.Struct, kw_only=True):
    """Subject ``tv.catalog.job.list``."""

    plan: str | None = None
    """Only this plan's jobs (id or name)."""
    active: bool = False
    """Only pending and running jobs."""
    limit: int = 100
    """Newest `limit` jobs."""


class JobList(msgspec.Struct, kw_only=True):
    """Reply to ``tv.catalog.job.list``, newest first."""

    jobs: list[Job]
    """The jobs."""


class JobClaim(msgspec.Struct, kw_only=True):
    """Internal, ``tv.catalog.job.claim``: a worker takes a pending (or stale running) job."""

    job_id: str
    """The job."""
    worker: str
    """The worker's instance id."""


class JobFinish(msgspec.Struct, kw_only=True):
    """Internal, ``tv.catalog.job.finish``: a worker reports the end of a job; commits the snapshot."""

    job_id: str
    """The job."""
    worker: str
    """The worker's instance id (must hold the claim)."""
    status: Literal["completed", "failed", "canceled"]
    """Outcome."""
    error: str | None = None
    """Why it failed."""
    snapshot: SnapshotInfo | None = None
    """Backup: the committed snapshot (only with ``completed``)."""
    progress: JobProgress | None = None
    """The final counters, so a job that ends between two heartbeats still reports them."""
    warnings: list[str] = msgspec.field(default_factory=list)
    """What the completed job could not do (see `Job.warnings`)."""
    prune: PruneSummary | None = None
    """Prune (or a backup that thinned a full location): what was forgotten and removed."""


class JobProgress(msgspec.Struct, kw_only=True):
    """Published by the worker on ``tv.events.progress.<job_id>`` at least every few seconds (heartbeat)."""

    job_id: str
    """The job."""
    worker: str
    """Instance id of the worker."""
    ts: datetime
    """When (UTC)."""
    files_done: int = 0
    """Files processed."""
    files_total: int = 0
    """Files to process."""
    bytes_done: int = 0
    """Bytes processed."""
    bytes_total: int = 0
    """Bytes to process."""
    rate: float = 0.0
    """Bytes per second."""
    added_size: int = 0
    """Bytes newly stored so far."""


class JobEvent(msgspec.Struct, kw_only=True):
    """Published by the catalog on ``tv.events.job.<job_id>`` on every status change."""

    job: Job
    """The job after the change."""


class JobCancel(msgspec.Struct, kw_only=True):
    """Published by the catalog on ``tv.control.cancel.<job_id>``: the worker must stop the job."""

    job_id: str
    """The job."""
    reason: str = "canceled by user"
    """Why."""


class BackupWork(msgspec.Struct, kw_only=True):
    """JetStream work item on ``tv.work.backup`` or ``tv.work.prune`` (stream ``TV_WORK``,
    work-queue retention)."""

    job_id: str
    """The job to run; the worker claims it from the catalog first."""
    plan_id: str
    """Its plan."""


class RestoreRequest(msgspec.Struct, kw_only=True):
    """Subject ``tv.restore.start`` (queue group ``restorer``), HTTP ``POST .../snapshots/{id}/restore``.

    Sent by core NATS request, never persisted: the password lives only in the restorer's
    memory for the duration of the job.
    """

    plan: str
    """Plan id or name."""
    snapshot: str
    """Snapshot id, unique prefix, or ``latest``."""
    target: str
    """Absolute path of the folder to restore into."""
    password: str
    """The repository password, for this job only."""
    includes: list[str] = msgspec.field(default_factory=list)
    """Paths inside the snapshot to restore (empty = everything)."""
    allow_unverified: bool = False
    """Restore even a snapshot that contradicts the history endorsed with the password."""
    keep_setid: bool = False
    """Keep set-user-ID and set-group-ID bits (dropped by default)."""


class JobLog(msgspec.Struct, kw_only=True):
    """Internal, ``tv.catalog.job.log``: a worker adds lines to its job's log (hook output, where
    restored items went). They become `PlanEvent`s with the job's id (``GET /api/v1/jobs/{id}/log``)."""

    job_id: str
    """The job."""
    worker: str
    """The worker's instance id (must hold the job)."""
    lines: list[str]
    """The lines, oldest first (long ones are cut)."""
    kind: str = "log"
    """The events' kind, e.g. ``hook`` or ``restore``."""


class JobLogged(msgspec.Struct, kw_only=True):
    """Reply to ``tv.catalog.job.log``."""

    added: int = 0
    """How many lines were recorded."""
