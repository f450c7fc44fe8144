"""``GET /metrics`` (Prometheus text), ``GET /api/v1/ready``, and the gateway's own discovery figures.

`/metrics` needs the bearer token like the API (Prometheus sends it with
``authorization: {credentials_file: ...}``): job figures reveal plan activity, and one scrape
costs a catalog query and a discovery round. It reports

- the catalog's figures (``tv.catalog.stats``): plans, jobs by kind and status, bytes read and
  added by backups and restored by restores, the job duration histogram;
- every service copy's request, error and time figures, gathered with ``$SRV.STATS`` (NATS
  service discovery, which any operator tool can ask too), the gateway's own HTTP figures included;
- whether NATS and the catalog answer.

`/api/v1/ready` answers 200 while NATS is connected and a catalog answers ``$SRV.PING.catalog``,
503 otherwise (a readiness probe); `/api/v1/health` stays a liveness check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.micro.service import ServiceVerb, control_subject

from timevault.proto import subjects
from timevault.proto.errors import ServiceError
from timevault.proto.stats import CatalogStats, CatalogStatsRequest
from timevault.services.common import rpc
from timevault.services.gateway.errors import error_response
from timevault.services.gateway.keys import CONFIG, HTTP_STATS, NATS_CLIENT, READY_CACHE

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
GATHER_FOR = 0.5  # seconds to collect $SRV.STATS replies (every copy answers once)
READY_FOR = 1.0  # seconds a readiness answer is reused (probes and clients may ask often)


# --- the gateway's own figures ----------------------------------------------------------------


@web.middleware
async def http_stats_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count requests, server errors and time per route (reported by discovery and `/metrics`)."""
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else ""
    if not (path.startswith("/api/") or path == "/metrics"):
        return await handler(request)  # the web UI's files and unknown paths are not counted
    figures = request.app[HTTP_STATS].endpoint(f"{request.method} {path}", path, "http")
    figures.requests += 1
    started = time.perf_counter_ns()
    try:
        response = await handler(request)
    except Exception:
        figures.errors += 1
        raise
    finally:
        figures.processing_ns += time.perf_counter_ns() - started
    if response.status >= 500:
        figures.errors += 1
        figures.last_error = f"HTTP {response.status}"
    return response


# --- readiness ------------------------------------------------------------------------------


async def catalog_answers(nc: NATS, timeout: float = 2.0) -> bool:  # noqa: ASYNC109 - one NATS request
    try:
        await nc.request(control_subject(ServiceVerb.PING, "catalog"), b"", timeout=timeout)
        return True
    except Exception:
        return False


async def ready(request: web.Request) -> web.Response:
    cache = request.app[READY_CACHE]
    nc = request.app[NATS_CLIENT] if NATS_CLIENT in request.app else None
    now = time.monotonic()
    if cache.get("until", 0.0) < now:
        connected = bool(nc is not None and nc.is_connected)
        cache.update(nats=connected, catalog=connected and nc is not None and await catalog_answers(nc),
                     until=now + READY_FOR)
    if not cache["nats"]:
        return error_response(503, "unavailable", "the gateway is not connected to NATS")
    if not cache["catalog"]:
        return error_response(503, "unavailable", "no catalog answers")
    return web.json_response({"status": "ready", "nats": True, "catalog": True})


# --- /metrics -------------------------------------------------------------------------------


async def gather_stats(nc: NATS, wait: float = GATHER_FOR) -> list[dict[str, Any]]:
    """Every service copy's ``$SRV.STATS`` reply that arrives within `wait` seconds."""
    replies: list[dict[str, Any]] = []
    inbox = nc.new_inbox()

    async def collect(msg: Msg) -> None:
        with contextlib.suppress(ValueError):
            replies.append(json.loads(msg.data))

    sub = await nc.subscribe(inbox, cb=collect)
    try:
        await nc.publish(control_subject(ServiceVerb.STATS), b"", reply=inbox)
        await asyncio.sleep(wait)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return replies


def _label(value: object) -> str:
    return str(value).replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")


def _labels(**labels: object) -> str:
    return "{" + ",".join(f'{key}="{_label(value)}"' for key, value in labels.items()) + "}"


class Exposition:
    """Prometheus text exposition format, one metric family at a time."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, text: str, samples: Iterable[tuple[str, float]]) -> None:
        self.lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        self.lines += [f"{name}{labels} {_number(value)}" for labels, value in samples]

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def render(catalog: CatalogStats | None, services: list[dict[str, Any]], nats_up: bool) -> str:
    out = Exposition()
    out.family("timevault_nats_connected", "gauge", "1 while the gateway is connected to NATS",
               [("", int(nats_up))])
    out.family("timevault_catalog_up", "gauge", "1 when the catalog answered this scrape", [("", int(catalog is not None))])
    if catalog is not None:
        out.family("timevault_plans", "gauge", "Backup plans", [("", catalog.plans)])
        out.family("timevault_jobs", "gauge", "Jobs in the catalog by kind and status",
                   [(_labels(kind=j.kind, status=j.status), j.count) for j in catalog.jobs])
        backups = [j for j in catalog.jobs if j.kind == "backup"]
        restores = [j for j in catalog.jobs if j.kind == "restore"]
        out.family("timevault_backup_read_bytes_total", "counter", "Bytes read by backup jobs",
                   [("", sum(j.bytes_done for j in backups))])
        out.family("timevault_backup_added_bytes_total", "counter", "Bytes newly stored by backup jobs",
                   [("", sum(j.added_size for j in backups))])
        out.family("timevault_restore_bytes_total", "counter", "Bytes restored by restore jobs",
                   [("", sum(j.bytes_done for j in restores))])
        out.family("timevault_job_errors_total", "counter", "Jobs that failed, by kind",
                   [(_labels(kind=j.kind), j.count) for j in catalog.jobs if j.status == "failed"])
        out.lines += ["# HELP timevault_job_duration_seconds Seconds from a job's start to its end",
                      "# TYPE timevault_job_duration_seconds histogram"]
        for j in catalog.jobs:
            if not j.duration_count:
                continue
            name, labels = "timevault_job_duration_seconds", {"kind": j.kind, "status": j.status}
            for bound, count in zip(catalog.buckets, j.duration_buckets, strict=False):
                out.lines.append(f"{name}_bucket{_labels(**labels, le=_number(bound))} {count}")
            out.lines += [f"{name}_bucket{_labels(**labels, le='+Inf')} {j.duration_count}",
                          f"{name}_sum{_labels(**labels)} {_number(j.duration_sum)}",
                          f"{name}_count{_labels(**labels)} {j.duration_count}"]
    up: list[tuple[str, float]] = []
    requests: list[tuple[str, float]] = []
    errors: list[tuple[str, float]] = []
    seconds: list[tuple[str, float]] = []
    for service in services:
        ident = {"service": service.get("name", "?"), "instance": service.get("id", "?")}
        up.append((_labels(**ident), 1))
        for e in service.get("endpoints") or []:
            tags = _labels(**ident, endpoint=e.get("name", "?"))
            requests.append((tags, int(e.get("num_requests", 0))))
            errors.append((tags, int(e.get("num_errors", 0))))
            seconds.append((tags, int(e.get("processing_time", 0)) / 1e9))
    out.family("timevault_service_up", "gauge", "Service copies that answered $SRV.STATS", up)
    out.family("timevault_service_requests_total", "counter", "Requests handled, per service copy and endpoint",
               requests)
    out.family("timevault_service_errors_total", "counter", "Requests answered with an error", errors)
    out.family("timevault_service_processing_seconds_total", "counter", "Time spent handling requests", seconds)
    return out.text()


async def metrics(request: web.Request) -> web.Response:
    nc = request.app[NATS_CLIENT]
    catalog: CatalogStats | None = None
    services: list[dict[str, Any]] = []
    if nc.is_connected:
        async def ask_catalog() -> CatalogStats | None:
            try:
                return await rpc.request(nc, subjects.CATALOG_STATS, CatalogStatsRequest(), CatalogStats,
                                         timeout=request.app[CONFIG].request_timeout)
            except ServiceError:
                return None

        catalog, services = await asyncio.gather(ask_catalog(), gather_stats(nc))
    return web.Response(text=render(catalog, services, nc.is_connected), headers={"Content-Type": CONTENT_TYPE})
