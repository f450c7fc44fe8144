"""The ``/api/v1`` endpoints: each one parses the path and body, makes one NATS request, replies.

`endpoints()` is the single table the router and the OpenAPI document are both built from,
so a route cannot exist without being documented (and the reverse).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from timevault.proto import subjects
from timevault.proto.errors import ServiceError, invalid
from timevault.proto.jobs import Job, JobCreate, JobList, JobListRequest, JobRef, RestoreRequest
from timevault.proto.plans import (
    Plan,
    PlanAttach,
    PlanCreate,
    PlanDeleted,
    PlanDetail,
    PlanEvent,
    PlanEventList,
    PlanEventsRequest,
    PlanList,
    PlanListRequest,
    PlanRef,
    PlanUpdate,
    PlanUpdateRequest,
    SnapshotInfo,
    SnapshotList,
    SnapshotListRequest,
    validate_includes,
)
from timevault.services.common import rpc
from timevault.services.gateway.bodies import RestoreBody, read_json
from timevault.services.gateway.keys import CONFIG, NATS_CLIENT, OPENAPI
from timevault.services.gateway.security import check_restore_target

R = TypeVar("R")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_encoder = msgspec.json.Encoder()
MAX_REF = 200  # longer plan or job references cannot exist

# Creating a plan derives keys from the password (scrypt) and writes the repository;
# deleting waits for running jobs and removes every stored object. Both take a while.
SLOW = 120.0
VERY_SLOW = 300.0


class Health(msgspec.Struct, kw_only=True):
    """``GET /api/v1/health``: the gateway runs; `nats` tells whether it reaches the services' bus."""

    status: str
    """``ok``, or ``degraded`` while NATS is unreachable."""
    nats: bool
    """True while the gateway is connected to NATS."""


class Readiness(msgspec.Struct, kw_only=True):
    """``GET /api/v1/ready`` when ready (otherwise a 503 error body)."""

    status: str
    """``ready``."""
    nats: bool
    """Connected to NATS."""
    catalog: bool
    """A catalog answered."""


@dataclass(frozen=True)
class Endpoint:
    """One HTTP operation, as routed and as documented."""

    method: str
    path: str
    handler: Handler
    summary: str
    reply: Any = None
    status: int = 200
    body: Any = None
    errors: tuple[int, ...] = ()
    auth: bool = True
    query: dict[str, str] = field(default_factory=dict)
    """Query parameter name → description (all optional)."""
    sse: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    """Request header name → description (all optional as far as the document says)."""
    media: str = "application/json"
    """The success response's content type (``/metrics`` is Prometheus text)."""


# --- helpers -------------------------------------------------------------------------------


def reply(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=_encoder.encode(value), content_type="application/json",
                        headers=headers)


async def call(request: web.Request, subject: str, message: Any, reply_type: type[R],
               timeout: float | None = None) -> R:  # noqa: ASYNC109 - the NATS request timeout
    config = request.app[CONFIG]
    return await rpc.request(request.app[NATS_CLIENT], subject, message, reply_type,
                             timeout=timeout or config.request_timeout)


async def body(request: web.Request, type_: type[R]) -> R:
    return await read_json(request, type_, request.app[CONFIG].max_body)


def ref(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not value or len(value) > MAX_REF or any(ord(c) < 32 for c in value):
        kind = "plan" if name == "plan_id" else ("snapshot" if name == "snapshot_id" else "job")
        raise ServiceError("not_found", f"no {kind} {value[:MAX_REF]!r}", name)
    return value


def int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise invalid(f"{name} must be an integer {low}..{high}", name)
    return int(text)


# --- handlers ------------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    connected = request.app[NATS_CLIENT].is_connected if NATS_CLIENT in request.app else False
    return reply(Health(status="ok" if connected else "degraded", nats=connected))


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


async def list_plans(request: web.Request) -> web.Response:
    result = await call(request, subjects.PLAN_LIST, PlanListRequest(), PlanList)
    return reply(result.plans)


async def create_plan(request: web.Request) -> web.Response:
    req = await body(request, PlanCreate)
    plan = await call(request, subjects.PLAN_CREATE, req, Plan, SLOW)
    return reply(plan, 201, {"Location": f"/api/v1/plans/{plan.id}"})


async def attach_plan(request: web.Request) -> web.Response:
    req = await body(request, PlanAttach)
    plan = await call(request, subjects.PLAN_ATTACH, req, PlanDetail, SLOW)
    return reply(plan, 201, {"Location": f"/api/v1/plans/{plan.id}"})


async def get_plan(request: web.Request) -> web.Response:
    return reply(await call(request, subjects.PLAN_GET, PlanRef(plan=ref(request, "plan_id")), PlanDetail))


async def update_plan(request: web.Request) -> web.Response:
    update = await body(request, PlanUpdate)
    req = PlanUpdateRequest(plan=ref(request, "plan_id"), update=update)
    return reply(await call(request, subjects.PLAN_UPDATE, req, Plan))


async def delete_plan(request: web.Request) -> web.Response:
    ref_ = PlanRef(plan=ref(request, "plan_id"))
    return reply(await call(request, subjects.PLAN_DELETE, ref_, PlanDeleted, VERY_SLOW))


async def pause_plan(request: web.Request) -> web.Response:
    return reply(await call(request, subjects.PLAN_PAUSE, PlanRef(plan=ref(request, "plan_id")), Plan))


async def resume_plan(request: web.Request) -> web.Response:
    return reply(await call(request, subjects.PLAN_RESUME, PlanRef(plan=ref(request, "plan_id")), Plan))


async def start_backup(request: web.Request) -> web.Response:
    job = await call(request, subjects.JOB_CREATE, JobCreate(plan=ref(request, "plan_id")), Job)
    return reply(job, 202, {"Location": f"/api/v1/jobs/{job.id}"})


async def start_prune(request: web.Request) -> web.Response:
    job = await call(request, subjects.PLAN_PRUNE, PlanRef(plan=ref(request, "plan_id")), Job)
    return reply(job, 202, {"Location": f"/api/v1/jobs/{job.id}"})


async def list_snapshots(request: web.Request) -> web.Response:
    req = SnapshotListRequest(plan=ref(request, "plan_id"))
    return reply((await call(request, subjects.SNAPSHOT_LIST, req, SnapshotList)).snapshots)


async def restore_snapshot(request: web.Request) -> web.Response:
    plan, snapshot = ref(request, "plan_id"), ref(request, "snapshot_id")
    req = await body(request, RestoreBody)
    target = check_restore_target(req.target)
    if not req.password:
        raise invalid("the backup password is required", "password")
    validate_includes(req.includes)
    start = RestoreRequest(plan=plan, snapshot=snapshot, target=target, password=req.password,
                           includes=req.includes, allow_unverified=req.allow_unverified,
                           keep_setid=req.keep_setid)
    job = await call(request, subjects.RESTORE_START, start, Job, SLOW)
    return reply(job, 202, {"Location": f"/api/v1/jobs/{job.id}"})


async def plan_log(request: web.Request) -> web.Response:
    limit = int_query(request, "limit", 100, 1, 1000)
    req = PlanEventsRequest(plan=ref(request, "plan_id"), limit=limit)
    return reply((await call(request, subjects.PLAN_EVENTS, req, PlanEventList)).events)


async def plan_jobs(request: web.Request) -> web.Response:
    active = request.query.get("active", "false")
    if active not in ("true", "false"):
        raise invalid("active must be true or false", "active")
    req = JobListRequest(plan=ref(request, "plan_id"), active=active == "true",
                         limit=int_query(request, "limit", 50, 1, 1000))
    return reply((await call(request, subjects.JOB_LIST, req, JobList)).jobs)


async def get_job(request: web.Request) -> web.Response:
    return reply(await call(request, subjects.JOB_GET, JobRef(job_id=ref(request, "job_id")), Job))


async def cancel_job(request: web.Request) -> web.Response:
    return reply(await call(request, subjects.JOB_CANCEL, JobRef(job_id=ref(request, "job_id")), Job))


def endpoints() -> list[Endpoint]:
    from timevault.services.gateway.browse_routes import browse_endpoints
    from timevault.services.gateway.events import stream_events
    from timevault.services.gateway.folder_routes import folder_endpoints
    from timevault.services.gateway.metrics import metrics, ready
    from timevault.services.gateway.spaces import space_endpoints

    plan = "/api/v1/plans/{plan_id}"
    return [
        Endpoint("GET", "/api/v1/health", health, "Is the gateway up (no auth)", Health, auth=False),
        Endpoint("GET", "/api/v1/ready", ready, "Ready to serve: NATS connected and a catalog answers "
                 "(no auth; 503 otherwise)", Readiness, auth=False, errors=(503,)),
        Endpoint("GET", "/api/v1/openapi.json", openapi, "This document (no auth)", auth=False),
        Endpoint("GET", "/metrics", metrics, "Prometheus metrics: jobs, bytes, durations, every service's "
                 "request/error/latency figures (needs the token)", media="text/plain"),
        Endpoint("GET", "/api/v1/plans", list_plans, "List plans", list[Plan]),
        Endpoint("POST", "/api/v1/plans", create_plan, "Create a plan", Plan, 201, PlanCreate, (400, 409, 503)),
        # Before the {plan_id} routes, so "attach" is never taken for a plan name.
        Endpoint("POST", "/api/v1/plans/attach", attach_plan, "Attach an existing repository (a new machine): "
                 "the plan's snapshots and dedup index are read from the location with the password",
                 PlanDetail, 201, PlanAttach, (400, 401, 409, 503)),
        Endpoint("GET", plan, get_plan, "A plan with its backup log (settings, total size, snapshots)",
                 PlanDetail, errors=(404,)),
        Endpoint("PATCH", plan, update_plan, "Change schedule or sources (never the name)", Plan, 200, PlanUpdate,
                 (400, 404)),
        Endpoint("DELETE", plan, delete_plan, "Delete a plan and every snapshot and stored object of it",
                 PlanDeleted, errors=(404,)),
        Endpoint("POST", plan + "/pause", pause_plan, "Pause the schedule", Plan, errors=(404,)),
        Endpoint("POST", plan + "/resume", resume_plan, "Resume the schedule", Plan, errors=(404,)),
        Endpoint("POST", plan + "/backups", start_backup, "Back up now", Job, 202, errors=(404, 409)),
        Endpoint("POST", plan + "/prune", start_prune, "Forget the snapshots the plan's retention drops and "
                 "remove the data no snapshot needs, now (a job of kind `prune`; the services also do this "
                 "after each successful backup)", Job, 202, errors=(404, 409)),
        Endpoint("GET", plan + "/snapshots", list_snapshots, "Backup runs, oldest first", list[SnapshotInfo],
                 errors=(404,)),
        Endpoint("POST", plan + "/snapshots/{snapshot_id}/restore", restore_snapshot,
                 "Restore a snapshot (or chosen paths) into a folder", Job, 202, RestoreBody,
                 (400, 401, 404, 503)),
        Endpoint("GET", plan + "/log", plan_log, "The plan's event log, oldest first", list[PlanEvent],
                 errors=(400, 404), query={"limit": "newest entries to return (1..1000, default 100)"}),
        Endpoint("GET", plan + "/jobs", plan_jobs, "The plan's jobs, newest first", list[Job], errors=(400, 404),
                 query={"active": "`true`: only pending and running jobs",
                        "limit": "jobs to return (1..1000, default 50)"}),
        Endpoint("GET", "/api/v1/jobs/{job_id}", get_job, "A backup, restore or prune job", Job, errors=(404,)),
        Endpoint("POST", "/api/v1/jobs/{job_id}/cancel", cancel_job, "Cancel a job", Job, errors=(404,)),
        *browse_endpoints(),
        *folder_endpoints(),
        Endpoint("GET", "/api/v1/events", stream_events, "Live job status, progress and plan events "
                 "(Server-Sent Events; read it with fetch() streaming and the bearer header). Job and plan "
                 "events carry ids: send Last-Event-ID to get the kept events after it first", sse=True,
                 query={"job": "only this job's status and progress events"}),
        *space_endpoints(),
    ]


def add_routes(app: web.Application, table: list[Endpoint]) -> None:
    for endpoint in table:
        app.router.add_route(endpoint.method, endpoint.path, endpoint.handler)
