"""Every NATS subject TimeVault uses, built by one function so names cannot drift.

Request/reply subjects are constants; per-job and per-session subjects are functions.
All subjects start with ``tv.``; dynamic tokens are validated (no dots, spaces or wildcards).
"""

from __future__ import annotations

import re

PREFIX = "tv"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def subject(*parts: str) -> str:
    """Join `parts` under the ``tv`` prefix. Parts may contain dots (static) or be single tokens."""
    for part in parts:
        for token in part.split("."):
            if token not in ("*", ">") and not _TOKEN.match(token):
                raise ValueError(f"invalid subject token {token!r}")
    return ".".join((PREFIX, *parts))


def _token(value: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(f"invalid subject token {value!r}")
    return value


# --- catalog: request/reply, queue group "catalog" -------------------------------------
CATALOG_QUEUE = "catalog"
PLAN_CREATE = subject("catalog.plan.create")
PLAN_LIST = subject("catalog.plan.list")
PLAN_GET = subject("catalog.plan.get")
PLAN_UPDATE = subject("catalog.plan.update")
PLAN_DELETE = subject("catalog.plan.delete")
PLAN_PAUSE = subject("catalog.plan.pause")
PLAN_RESUME = subject("catalog.plan.resume")
PLAN_ATTACH = subject("catalog.plan.attach")
PLAN_EVENTS = subject("catalog.plan.events")
PLAN_SECRETS = subject("catalog.plan.secrets")
PLAN_PRUNE = subject("catalog.plan.prune")
SNAPSHOT_LIST = subject("catalog.snapshot.list")
SNAPSHOT_GET = subject("catalog.snapshot.get")
JOB_CREATE = subject("catalog.job.create")
JOB_GET = subject("catalog.job.get")
JOB_LIST = subject("catalog.job.list")
JOB_CANCEL = subject("catalog.job.cancel")
JOB_CLAIM = subject("catalog.job.claim")
JOB_LOG = subject("catalog.job.log")
JOB_EVENTS = subject("catalog.job.events")
JOB_FINISH = subject("catalog.job.finish")
SCHEDULE_LIST = subject("catalog.schedule.list")
SCHEDULE_FIRE = subject("catalog.schedule.fire")
CHUNKS_LOOKUP = subject("catalog.chunks.lookup")
CHUNKS_ADD = subject("catalog.chunks.add")
CHUNKS_SYNC = subject("catalog.chunks.sync")
CHUNKS_UPDATE = subject("catalog.chunks.update")
CATALOG_STATS = subject("catalog.stats")
SPACE_LOGIN = subject("catalog.space.login")
SPACE_STATUS = subject("catalog.space.status")
SPACE_LIST = subject("catalog.space.list")
SPACE_LOGOUT = subject("catalog.space.logout")

# --- restorer: request/reply, queue group "restorer" -----------------------------------
RESTORER_QUEUE = "restorer"
RESTORE_START = subject("restore.start")
BROWSE_OPEN = subject("browse.open")
BROWSE_OPS = ("ls", "diff", "find", "restore", "lock", "touch")


def browse_op(instance: str, op: str) -> str:
    """Subject of a browsing session's operation at the restorer `instance` that holds it."""
    if op not in BROWSE_OPS:
        raise ValueError(f"unknown browse op {op!r}")
    return subject("browse", _token(instance), op)


def browse_instance(session: str) -> str:
    """The restorer instance a session id belongs to (``<instance>.<secret>``); ValueError if malformed."""
    instance, dot, secret = session.partition(".")
    if not dot or not secret or not _TOKEN.match(instance):
        raise ValueError("malformed session id")
    return instance

# --- uploader: session open in queue group "uploader", then per-session subjects --------
UPLOADER_QUEUE = "uploader"
UPLOAD_OPEN = subject("upload.open")


def upload_session(session_id: str, op: str) -> str:
    """Subject of one upload session's operation: ``frames``, ``flush``, ``close`` or ``ping``."""
    if op not in ("frames", "flush", "close", "ping"):
        raise ValueError(f"unknown upload op {op!r}")
    return subject("upload.session", _token(session_id), op)


# --- snapshotter: the folder picker, queue group "snapshotter" ---------------------------
SNAPSHOTTER_QUEUE = "snapshotter"
FOLDERS_LIST = subject("snapshot.folders")

# --- JetStream work queue (stream ``TV_WORK``) ----------------------------------------
WORK_STREAM = "TV_WORK"
WORK_SUBJECTS = subject("work.>")
WORK_BACKUP = subject("work.backup")
WORK_PRUNE = subject("work.prune")
SNAPSHOTTER_DURABLE = "snapshotter"
PRUNER_DURABLE = "pruner"

# --- events (plain publish; the gateway's SSE forwards ``tv.events.>``) ----------------
EVENTS_ALL = subject("events.>")
# Job and plan events (not progress) are also kept in this stream (limits retention) for replay.
EVENTS_STREAM = "TV_EVENTS"


def job_event(job_id: str) -> str:
    """Status changes of a job (`timevault.proto.jobs.JobEvent`), published by the catalog."""
    return subject("events.job", _token(job_id))


def job_progress(job_id: str) -> str:
    """Progress and heartbeat of a running job (`timevault.proto.jobs.JobProgress`), published by workers."""
    return subject("events.progress", _token(job_id))


def plan_event(plan_id: str) -> str:
    """Changes to a plan (`timevault.proto.plans.PlanEvent`), published by the catalog."""
    return subject("events.plan", _token(plan_id))


JOB_EVENTS_ALL = subject("events.job.*")
JOB_PROGRESS_ALL = subject("events.progress.*")
PLAN_EVENTS_ALL = subject("events.plan.*")


def job_cancel(job_id: str) -> str:
    """Cancel signal for the worker running a job (`timevault.proto.jobs.JobCancel`), published by the catalog."""
    return subject("control.cancel", _token(job_id))


JOB_CANCEL_ALL = subject("control.cancel.*")
