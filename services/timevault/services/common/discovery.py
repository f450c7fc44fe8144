"""NATS service discovery: ``$SRV.PING``, ``$SRV.INFO`` and ``$SRV.STATS`` for every service.

Wire-compatible with nats.micro (the replies are built with its own dataclasses, so `nats micro
ls/info/stats` and any micro client read them), but fed by `rpc.Stats`, which `rpc.serve`
already keeps: TimeVault's request handlers need things micro's endpoints do not give (bodies
in parts, msgpack, per-session subjects, ordered handling), so they stay as they are and only
their figures are reported. Each copy answers on ``$SRV.<VERB>``, ``$SRV.<VERB>.<name>`` and
``$SRV.<VERB>.<name>.<id>``; its id is the instance id the service also writes into jobs.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.micro.service import (
    EndpointInfo,
    EndpointStats,
    ServiceInfo,
    ServicePing,
    ServiceStats,
    ServiceVerb,
    control_subject,
)

from timevault.services.common import rpc

DESCRIPTIONS = {
    "catalog": "TimeVault catalog: plans, jobs, snapshots and the chunk index",
    "scheduler": "TimeVault scheduler: fires each plan's schedule slots once",
    "snapshotter": "TimeVault snapshotter: runs backup jobs from the work queue",
    "uploader": "TimeVault uploader: writes encrypted blobs into packs",
    "restorer": "TimeVault restorer: runs restore jobs",
    "gateway": "TimeVault HTTP gateway: the /api/v1 API and the web UI",
}


def package_version() -> str:
    try:
        return version("timevault")
    except PackageNotFoundError:
        return "0.0.0"


class Discovery:
    """Answers discovery requests for one service copy until `stop`."""

    def __init__(self, nc: NATS, name: str, instance: str, stats: rpc.Stats | None = None,
                 metadata: dict[str, str] | None = None,
                 extra: Callable[[], dict[str, rpc.Endpoint]] | None = None) -> None:
        self.nc = nc
        self.name = name
        self.id = instance
        self.stats = stats or rpc.STATS
        self.extra = extra
        self.version = package_version()
        self.metadata = dict(metadata or {})
        self.started = datetime.now(UTC).replace(tzinfo=None)  # micro writes naive UTC + "Z"
        self._subs: list[Subscription] = []

    def _endpoints(self) -> dict[str, rpc.Endpoint]:
        endpoints = dict(self.stats.endpoints)
        if self.extra is not None:
            endpoints.update(self.extra())
        return endpoints

    def ping(self) -> ServicePing:
        return ServicePing(id=self.id, name=self.name, version=self.version, metadata=self.metadata)

    def info(self) -> ServiceInfo:
        return ServiceInfo(
            id=self.id, name=self.name, version=self.version, metadata=self.metadata,
            description=DESCRIPTIONS.get(self.name, f"TimeVault {self.name}"),
            endpoints=[EndpointInfo(name=name, subject=e.subject, queue_group=e.queue_group)
                       for name, e in sorted(self._endpoints().items())])

    def statistics(self) -> ServiceStats:
        return ServiceStats(
            id=self.id, name=self.name, version=self.version, metadata=self.metadata, started=self.started,
            endpoints=[EndpointStats(name=name, subject=e.subject, queue_group=e.queue_group,
                                     num_requests=e.requests, num_errors=e.errors, last_error=e.last_error,
                                     processing_time=e.processing_ns,
                                     average_processing_time=e.processing_ns // e.requests if e.requests else 0)
                       for name, e in sorted(self._endpoints().items())])

    async def start(self) -> None:
        answers: dict[ServiceVerb, Callable[[], ServicePing | ServiceInfo | ServiceStats]] = {
            ServiceVerb.PING: self.ping, ServiceVerb.INFO: self.info, ServiceVerb.STATS: self.statistics}
        for verb, build in answers.items():
            async def answer(msg: Msg, build: Callable[[], ServicePing | ServiceInfo | ServiceStats] = build) -> None:
                if msg.reply:
                    with contextlib.suppress(Exception):  # the asker went away, or NATS did
                        await msg.respond(json.dumps(build().to_dict()).encode())

            for name, id_ in ((None, None), (self.name, None), (self.name, self.id)):
                self._subs.append(await self.nc.subscribe(control_subject(verb, name, id_), cb=answer))

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
