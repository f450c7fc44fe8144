"""The Time Machine endpoints: unlock a plan, list folders of its snapshots, compare, find, restore items.

``POST /api/v1/plans/{plan_id}/unlock`` sends the password once to a restorer, which keeps the
repository open in its memory and answers a session id. The other calls carry that id in the
``X-Timevault-Session`` header (never in a URL, so it stays out of access logs) and go straight
to the restorer holding the session. The gateway itself keeps nothing: a session that ended
(locked, idle too long, or its restorer restarted) is a 401 with ``field: "session"``, and the
client unlocks again.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from aiohttp import web

from timevault.proto import subjects
from timevault.proto.browse import (
    IDLE_DEFAULT,
    LIST_PAGE,
    BrowseDiff,
    BrowseFind,
    BrowseList,
    BrowseListing,
    BrowseLocked,
    BrowseOpen,
    BrowseRef,
    BrowseRestore,
    BrowseSession,
    FindResult,
    SnapshotDiff,
)
from timevault.proto.errors import ServiceError, invalid
from timevault.proto.jobs import Job, JobRef
from timevault.proto.plans import PlanEvent, PlanEventList
from timevault.services.gateway.routes import SLOW, Endpoint, body, call, int_query, ref, reply

R = TypeVar("R")
SESSION_HEADER = "X-Timevault-Session"
MAX_PATH = 4096
MAX_SESSION = 200
LIST_MAX = 100_000


class UnlockBody(msgspec.Struct, kw_only=True):
    """Body of ``POST /api/v1/plans/{plan_id}/unlock``."""

    password: str
    """The plan's backup password; kept only in the restorer's memory while the session lasts."""
    idle_timeout: int = IDLE_DEFAULT
    """Seconds without a request after which the session locks itself (60..3600)."""


class RestoreItemsBody(msgspec.Struct, kw_only=True):
    """Body of ``POST /api/v1/plans/{plan_id}/snapshots/{snapshot_id}/restore-items`` (with a session)."""

    paths: list[str]
    """Absolute paths in the snapshot of the files and folders to restore."""
    target: str | None = None
    """Folder to restore them into, each by its own name; absent or null = back to their original place.
    An existing file or folder is never replaced: the restored one is named beside it."""


def _session(request: web.Request) -> str:
    session = request.headers.get(SESSION_HEADER, "").strip()
    if len(session) > MAX_SESSION:
        raise invalid(f"{SESSION_HEADER} is longer than any session id", "session")
    if not session:
        raise ServiceError("unauthorized", f"unlock the plan first (POST …/unlock), then send the session in "
                           f"the {SESSION_HEADER} header", "session")
    return session


async def _browse(request: web.Request, op: str, message: Any, reply_type: type[R],
                  timeout: float | None = None) -> R:  # noqa: ASYNC109 - the NATS request timeout
    """One request to the restorer that holds the session."""
    session = message.session
    try:
        subject = subjects.browse_op(subjects.browse_instance(session), op)
    except ValueError:
        raise ServiceError("unauthorized", "that is not a browsing session; unlock the plan again",
                           "session") from None
    try:
        return await call(request, subject, message, reply_type, timeout)
    except ServiceError as exc:
        if exc.code == "unavailable" and exc.message.startswith("no service answers"):
            raise ServiceError("unauthorized", "the browsing session has ended (its restorer restarted); "
                               "unlock the plan again", "session") from exc
        raise


async def unlock_plan(request: web.Request) -> web.Response:
    plan = ref(request, "plan_id")
    req = await body(request, UnlockBody)
    if not req.password:
        raise invalid("the backup password is required", "password")
    session = await call(request, subjects.BROWSE_OPEN,
                         BrowseOpen(plan=plan, password=req.password, idle_timeout=req.idle_timeout),
                         BrowseSession, SLOW)
    return reply(session, 201)


async def lock_plan(request: web.Request) -> web.Response:
    ref(request, "plan_id")
    session = request.headers.get(SESSION_HEADER, "").strip()
    if len(session) > MAX_SESSION:
        raise invalid(f"{SESSION_HEADER} is longer than any session id", "session")
    if session:
        try:
            await _browse(request, "lock", BrowseRef(session=session), BrowseLocked)
        except ServiceError as exc:
            if exc.field != "session":
                raise
    return reply(BrowseLocked())


async def session_info(request: web.Request) -> web.Response:
    ref(request, "plan_id")
    return reply(await _browse(request, "touch", BrowseRef(session=_session(request)), BrowseSession))


def _text_query(request: web.Request, name: str, default: str | None = None, limit: int = MAX_PATH) -> str:
    value = request.query.get(name, default)
    if value is None or not value.strip():
        raise invalid(f"the query parameter {name!r} is required", name)
    if len(value) > limit or "\0" in value:
        raise invalid(f"{name} is too long or contains NUL", name)
    return value


async def list_folder(request: web.Request) -> web.Response:
    plan, snapshot = ref(request, "plan_id"), ref(request, "snapshot_id")
    session = _session(request)
    path = _text_query(request, "path", "/")
    if not path.startswith("/"):
        raise invalid("path must be absolute (as backed up), e.g. /home/me/Documents", "path")
    first = await _browse(request, "ls", BrowseList(session=session, snapshot=snapshot, path=path,
                                                    plan=plan), BrowseListing)
    entries = list(first.entries)
    # A big folder comes in pages (each fits a NATS message); the reply is the whole folder.
    while len(entries) < min(first.total, LIST_MAX) and first.entries:
        page = await _browse(request, "ls", BrowseList(session=session, snapshot=first.snapshot, path=first.path,
                                                       offset=len(entries), plan=plan), BrowseListing)
        if not page.entries:
            break
        entries.extend(page.entries)
    return reply(BrowseListing(snapshot=first.snapshot, path=first.path, entries=entries, total=first.total))


async def diff_snapshots(request: web.Request) -> web.Response:
    plan = ref(request, "plan_id")
    session = _session(request)
    before = _text_query(request, "from", limit=200)
    after = _text_query(request, "to", "latest", limit=200)
    result = await _browse(request, "diff", BrowseDiff(session=session, from_snapshot=before, to_snapshot=after,
                                                       plan=plan), SnapshotDiff, SLOW)
    return reply(result)


async def find_name(request: web.Request) -> web.Response:
    plan = ref(request, "plan_id")
    session = _session(request)
    pattern = _text_query(request, "pattern", limit=1000)
    limit = int_query(request, "limit", 1000, 1, 1000)
    return reply(await _browse(request, "find", BrowseFind(session=session, pattern=pattern, limit=limit, plan=plan),
                               FindResult, SLOW))


async def restore_items(request: web.Request) -> web.Response:
    from timevault.services.gateway.security import check_restore_target

    plan, snapshot = ref(request, "plan_id"), ref(request, "snapshot_id")
    session = _session(request)
    req = await body(request, RestoreItemsBody)
    if not req.paths or any(not isinstance(p, str) or not p.startswith("/") or "\0" in p or len(p) > MAX_PATH
                            for p in req.paths):
        raise invalid("paths must be 1 or more absolute paths in the snapshot", "paths")
    target = check_restore_target(req.target) if req.target is not None else None
    job = await _browse(request, "restore", BrowseRestore(session=session, snapshot=snapshot, paths=req.paths,
                                                          target=target, plan=plan), Job, SLOW)
    return reply(job, 202, {"Location": f"/api/v1/jobs/{job.id}"})


async def job_log(request: web.Request) -> web.Response:
    result = await call(request, subjects.JOB_EVENTS, JobRef(job_id=ref(request, "job_id")), PlanEventList)
    return reply(result.events)


def browse_endpoints() -> list[Endpoint]:
    plan = "/api/v1/plans/{plan_id}"
    session = {SESSION_HEADER: "the session id from `POST …/unlock`"}
    return [
        Endpoint("POST", plan + "/unlock", unlock_plan, "Unlock the plan's snapshots for browsing with its password: "
                 "a session held in a restorer's memory until it is idle for `idle_timeout` seconds or locked",
                 BrowseSession, 201, UnlockBody, (400, 401, 404, 503)),
        Endpoint("POST", plan + "/lock", lock_plan, "End a browsing session (the restorer drops the key)",
                 BrowseLocked, errors=(400,), headers=session),
        Endpoint("GET", plan + "/session", session_info, "Whether a browsing session is still open (and keep it so)",
                 BrowseSession, errors=(400, 401), headers=session),
        Endpoint("GET", plan + "/snapshots/{snapshot_id}/ls", list_folder, "List a folder of a snapshot",
                 BrowseListing, errors=(400, 401, 404), headers=session,
                 query={"path": "absolute path as backed up (default `/`)"}),
        Endpoint("GET", plan + "/diff", diff_snapshots, "What changed between two snapshots: added, removed and "
                 "changed paths with sizes", SnapshotDiff, errors=(400, 401, 404), headers=session,
                 query={"from": "the earlier snapshot (id, prefix or `latest`)",
                        "to": "the later snapshot (default `latest`)"}),
        Endpoint("GET", plan + "/find", find_name, "Find a name in every snapshot: which snapshots hold it, "
                 "with size and modification time", FindResult, errors=(400, 401), headers=session,
                 query={"pattern": "part of a name, or a glob such as `*.pdf`; with a `/` also matched on the path",
                        "limit": "paths to return at most (1..1000, default 1000)"}),
        Endpoint("POST", plan + "/snapshots/{snapshot_id}/restore-items", restore_items,
                 "Restore chosen files and folders into a folder, or back to their original place; an existing "
                 "one is kept and the restored one named beside it", Job, 202, RestoreItemsBody,
                 (400, 401, 404, 503), headers=session),
        Endpoint("GET", "/api/v1/jobs/{job_id}/log", job_log, "A job's log: hook output, where restored items "
                 "went", list[PlanEvent], errors=(404,)),
    ]


__all__ = ["LIST_PAGE", "SESSION_HEADER", "browse_endpoints"]
