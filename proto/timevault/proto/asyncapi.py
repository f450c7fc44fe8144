"""The AsyncAPI 3.0 document of TimeVault's NATS subjects (``python -m timevault.proto.asyncapi``
writes ``docs/asyncapi.json``).

It is built from `subjects` and the msgspec Structs, like the JSON Schemas in ``schemas/``, so
the document cannot drift from the code (`tests/services/test_proto.py` fails when the checked-in
file differs from `render()`). Public subjects are those an outside publisher or subscriber may
use with the right NATS identity (see `timevault.services.common.identities`); internal ones
are listed too, tagged ``internal``, for operators reading traffic. Request/reply operations
get their reply on the request's reply subject (an inbox), as NATS request/reply does.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from timevault.proto import (
    browse,
    chunks,
    errors,
    folders,
    jobs,
    plans,
    schedule,
    spaces,
    stats,
    subjects,
    upload,
)
from timevault.proto.schemas import clean_descriptions

DOC = Path(__file__).resolve().parents[3] / "docs" / "asyncapi.json"
REF = "#/components/schemas/{name}"


@dataclass(frozen=True)
class Channel:
    key: str
    address: str
    message: Any  # a msgspec Struct class
    summary: str
    reply: Any = None
    action: str = "send"  # what an outside client does: send (a request or publish) or receive
    internal: bool = False
    parameters: tuple[str, ...] = ()


def _param(template: str, name: str) -> str:
    """A per-id subject with its id as an AsyncAPI parameter: ``tv.events.job.{job_id}``."""
    return template.replace("PARAM", "{" + name + "}")


def channels() -> list[Channel]:
    s = subjects
    p, j = plans, jobs
    rr = [
        ("planCreate", s.PLAN_CREATE, p.PlanCreate, p.Plan, "Create a plan (initialises its repository)"),
        ("planList", s.PLAN_LIST, p.PlanListRequest, p.PlanList, "List plans"),
        ("planGet", s.PLAN_GET, p.PlanRef, p.PlanDetail, "A plan with its snapshots"),
        ("planUpdate", s.PLAN_UPDATE, p.PlanUpdateRequest, p.Plan, "Change a plan's schedule or sources"),
        ("planDelete", s.PLAN_DELETE, p.PlanRef, p.PlanDeleted, "Delete a plan and every stored object"),
        ("planPause", s.PLAN_PAUSE, p.PlanRef, p.Plan, "Pause a plan's schedule"),
        ("planResume", s.PLAN_RESUME, p.PlanRef, p.Plan, "Resume a plan's schedule"),
        ("planAttach", s.PLAN_ATTACH, p.PlanAttach, p.PlanDetail, "Attach an existing repository"),
        ("planEvents", s.PLAN_EVENTS, p.PlanEventsRequest, p.PlanEventList, "A plan's event log"),
        ("snapshotList", s.SNAPSHOT_LIST, p.SnapshotListRequest, p.SnapshotList, "A plan's snapshots"),
        ("snapshotGet", s.SNAPSHOT_GET, p.SnapshotRef, p.SnapshotInfo, "One snapshot"),
        ("jobCreate", s.JOB_CREATE, j.JobCreate, j.Job, "Back up now (answers busy while one runs)"),
        ("jobGet", s.JOB_GET, j.JobRef, j.Job, "One job"),
        ("jobList", s.JOB_LIST, j.JobListRequest, j.JobList, "Jobs, newest first"),
        ("jobCancel", s.JOB_CANCEL, j.JobRef, j.Job, "Cancel a job"),
        ("planPrune", s.PLAN_PRUNE, p.PlanRef, j.Job,
         "Forget what the plan's retention drops and remove unused data now (a prune job)"),
        ("catalogStats", s.CATALOG_STATS, stats.CatalogStatsRequest, stats.CatalogStats, "Figures for monitoring"),
        ("restoreStart", s.RESTORE_START, j.RestoreRequest, j.Job, "Start a restore (never persisted)"),
        ("jobEvents", s.JOB_EVENTS, j.JobRef, p.PlanEventList, "A job's log"),
        ("browseOpen", s.BROWSE_OPEN, browse.BrowseOpen, browse.BrowseSession,
         "Unlock a plan for browsing: a session held by one restorer copy (never persisted)"),
        ("foldersList", s.FOLDERS_LIST, folders.FolderListRequest, folders.FolderListing,
         "Folders a snapshotter may back up (the folder picker)"),
        ("spaceLogin", s.SPACE_LOGIN, spaces.SpaceRef, spaces.SpaceLogin,
         "Sign in to a TimeVault Space: the user code to show; the catalog polls the Space"),
        ("spaceStatus", s.SPACE_STATUS, spaces.SpaceRef, spaces.SpaceStatus, "Where a Space sign-in stands"),
        ("spaceList", s.SPACE_LIST, spaces.SpaceListRequest, spaces.SpaceList, "The Spaces signed in to"),
        ("spaceLogout", s.SPACE_LOGOUT, spaces.SpaceRef, spaces.SpaceStatus, "Sign out of a Space"),
    ]
    internal = [
        ("planSecrets", s.PLAN_SECRETS, p.PlanRef, p.PlanSecrets, "A plan's location and write keys"),
        ("jobClaim", s.JOB_CLAIM, j.JobClaim, j.Job, "A worker takes a job"),
        ("jobFinish", s.JOB_FINISH, j.JobFinish, j.Job, "A worker reports a job's end"),
        ("scheduleList", s.SCHEDULE_LIST, schedule.ScheduleListRequest, schedule.ScheduleList, "Plans' schedules"),
        ("scheduleFire", s.SCHEDULE_FIRE, schedule.ScheduleFire, schedule.ScheduleFireReply, "Claim a slot once"),
        ("chunksLookup", s.CHUNKS_LOOKUP, chunks.ChunkLookup, chunks.ChunkLookupReply, "Which blobs exist"),
        ("chunksAdd", s.CHUNKS_ADD, chunks.ChunkAdd, chunks.ChunkAddReply, "Record durable blobs"),
        ("chunksSync", s.CHUNKS_SYNC, chunks.ChunkSync, chunks.ChunkSyncReply,
         "Bring a plan's chunk index in step with its repository (by the repository's generation)"),
        ("chunksUpdate", s.CHUNKS_UPDATE, chunks.ChunkUpdate, chunks.ChunkUpdateReply,
         "A prune tells the chunk index what leaves the repository's index, before publishing it"),
        ("uploadOpen", s.UPLOAD_OPEN, upload.UploadOpen, upload.UploadOpened, "Open an upload session"),
        ("jobLog", s.JOB_LOG, j.JobLog, j.JobLogged, "A worker adds lines to its job's log"),
    ]
    out = [Channel(k, a, m, t, r) for k, a, m, r, t in rr]
    out += [Channel(k, a, m, t, r, internal=True) for k, a, m, r, t in internal]
    browse_ops = {"ls": (browse.BrowseList, browse.BrowseListing), "diff": (browse.BrowseDiff, browse.SnapshotDiff),
                  "find": (browse.BrowseFind, browse.FindResult), "restore": (browse.BrowseRestore, j.Job),
                  "lock": (browse.BrowseRef, browse.BrowseLocked), "touch": (browse.BrowseRef, browse.BrowseSession)}
    for op, (request, reply) in browse_ops.items():
        out.append(Channel(f"browse{op.title()}", _param(s.browse_op("PARAM", op), "instance"), request,
                           f"Browsing session: {op} (at the restorer copy named by the session id)", reply,
                           parameters=("instance",)))
    out += [
        Channel("jobEvent", _param(s.job_event("PARAM"), "job_id"), j.JobEvent,
                "A job's status changed (kept in the TV_EVENTS stream)", action="receive", parameters=("job_id",)),
        Channel("jobProgress", _param(s.job_progress("PARAM"), "job_id"), j.JobProgress,
                "A running job's progress and heartbeat, at least every 2 s (not kept)", action="receive",
                parameters=("job_id",)),
        Channel("planEvent", _param(s.plan_event("PARAM"), "plan_id"), p.PlanEvent,
                "A plan changed (kept in the TV_EVENTS stream)", action="receive", parameters=("plan_id",)),
        Channel("jobCancelSignal", _param(s.job_cancel("PARAM"), "job_id"), j.JobCancel,
                "The catalog tells the worker running a job to stop", action="receive", internal=True,
                parameters=("job_id",)),
        Channel("workBackup", s.WORK_BACKUP, j.BackupWork,
                "Backup work items (JetStream stream TV_WORK, work-queue retention)", action="receive",
                internal=True),
        Channel("workPrune", s.WORK_PRUNE, j.BackupWork,
                "Prune work items (JetStream stream TV_WORK, work-queue retention)", action="receive",
                internal=True),
    ]
    return out


def build(version: str = "0.1.0") -> dict[str, Any]:
    table = channels()
    types: list[Any] = []
    for c in table:
        types += [c.message] + ([c.reply] if c.reply else [])
    types.append(errors.ErrorReply)
    _, schemas = msgspec.json.schema_components(list(dict.fromkeys(types)), ref_template=REF)
    clean_descriptions(schemas)
    messages = {name: {"name": name, "payload": {"$ref": REF.format(name=name)}} for name in sorted(schemas)
                if any(getattr(t, "__name__", "") == name for t in types)}
    chans: dict[str, Any] = {}
    ops: dict[str, Any] = {}
    for c in table:
        names = [c.message.__name__] + ([c.reply.__name__, "ErrorReply"] if c.reply else [])
        chan: dict[str, Any] = {
            "address": c.address, "title": c.summary,
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in names},
        }
        if c.parameters:
            chan["parameters"] = {name: {"description": f"the {name.replace('_', ' ')} (a subject token)"}
                                  for name in c.parameters}
        if c.internal:
            chan["tags"] = [{"name": "internal"}]
        chans[c.key] = chan
        op: dict[str, Any] = {"action": c.action, "channel": {"$ref": f"#/channels/{c.key}"}, "summary": c.summary,
                              "messages": [{"$ref": f"#/channels/{c.key}/messages/{c.message.__name__}"}]}
        if c.reply:
            op["reply"] = {"channel": {"$ref": f"#/channels/{c.key}"},
                           "messages": [{"$ref": f"#/channels/{c.key}/messages/{n}"} for n in names[1:]]}
        if c.internal:
            op["tags"] = [{"name": "internal"}]
        ops[c.key] = op
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "TimeVault NATS API", "version": version,
            "description": "Subjects and messages of TimeVault's services. Messages are JSON (msgspec); new "
                           "fields come last with defaults and unknown fields are ignored. Errors come back as "
                           "`ErrorReply` with the NATS header `Tv-Error: <code>`. Every client connects with "
                           "a NATS identity that allows only its subjects; job and plan events are kept in the "
                           "JetStream stream `TV_EVENTS` (limits retention) for replay.",
        },
        "defaultContentType": "application/json",
        "servers": {"nats": {"host": "localhost:4222", "protocol": "nats",
                             "description": "the NATS of a TimeVault installation (see docs/services.md)"}},
        "channels": chans,
        "operations": ops,
        "components": {"messages": messages, "schemas": schemas},
    }


def render() -> str:
    return json.dumps(build(), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DOC
    target.write_text(render())
    print(f"wrote {target}", file=sys.stderr)
