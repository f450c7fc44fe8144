"""Discovery, metrics, readiness and replayable events against the real services."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from aiohttp import web
from nats.micro.service import ServiceInfo, ServicePing, ServiceStats

from tests.gateway.conftest import Stack, plan_body, source_tree, wait_job
from tests.services.helpers import discover
from timevault.services.common.natsd import NatsServer, free_port
from timevault.services.gateway.app import create_app
from timevault.services.gateway.config import GatewayConfig

pytestmark = pytest.mark.timeout(120)


async def _backup(http: aiohttp.ClientSession, tmp_path: Path, name: str) -> dict[str, Any]:
    tree = source_tree(tmp_path / "src", {"a.txt": b"observed\n" * 100})
    async with http.post("/api/v1/plans", json=plan_body(name, tree, tmp_path / "repo")) as resp:
        assert resp.status == 201, await resp.text()
        plan: dict[str, Any] = await resp.json()
    async with http.post(f"/api/v1/plans/{plan['id']}/backups") as resp:
        job = await resp.json()
    assert (await wait_job(http, job["id"]))["status"] == "completed"
    return plan


async def test_every_service_answers_discovery_as_nats_micro_does(stack: Stack, http: aiohttp.ClientSession,
                                                                  tmp_path: Path) -> None:
    await _backup(http, tmp_path, "discovered")
    nc = await nats.connect(stack.nats_url)
    try:
        pings = [ServicePing.from_dict(p) for p in await discover(nc, "PING")]
        assert {p.name for p in pings} >= {"catalog", "uploader", "snapshotter", "restorer", "gateway"}
        (info,) = [ServiceInfo.from_dict(i) for i in await discover(nc, "INFO", "catalog")]
        assert info.type == "io.nats.micro.v1.info_response" and info.description
        assert {e.subject for e in info.endpoints} >= {"tv.catalog.plan.create", "tv.catalog.job.finish"}
        assert all(e.queue_group == "catalog" for e in info.endpoints)
        # One copy by its id, and its statistics in nats.micro's own schema.
        (stats_raw,) = await discover(nc, "STATS", f"catalog.{info.id}")
        stats = ServiceStats.from_dict(stats_raw)
        by_name = {e.name: e for e in stats.endpoints}
        finish = by_name["tv.catalog.job.finish"]
        assert finish.num_requests >= 1 and finish.processing_time > 0
        assert finish.average_processing_time == finish.processing_time // finish.num_requests
        uploader = ServiceStats.from_dict((await discover(nc, "STATS", "uploader"))[0])
        assert "upload.session.frames" in {e.name for e in uploader.endpoints}  # one endpoint for all sessions
        # Two gateways answer (the process and the in-process app this test's client used).
        gateways = [ServiceStats.from_dict(g) for g in await discover(nc, "STATS", "gateway")]
        assert any(e.name == "POST /api/v1/plans/{plan_id}/backups" and e.num_requests >= 1
                   for g in gateways for e in g.endpoints)
    finally:
        await nc.close()


async def test_metrics_need_the_token_and_report_jobs_bytes_and_services(http: aiohttp.ClientSession,
                                                                          anon: aiohttp.ClientSession,
                                                                          tmp_path: Path) -> None:
    async with anon.get("/metrics") as resp:
        assert resp.status == 401
    await _backup(http, tmp_path, "measured")
    async with http.get("/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples["timevault_nats_connected"] == 1 and samples["timevault_catalog_up"] == 1
    assert samples['timevault_jobs{kind="backup",status="completed"}'] >= 1
    assert samples["timevault_backup_read_bytes_total"] >= 900
    assert samples['timevault_job_duration_seconds_count{kind="backup",status="completed"}'] >= 1
    assert samples['timevault_job_duration_seconds_bucket{kind="backup",status="completed",le="+Inf"}'] >= 1
    finish = [v for k, v in samples.items() if k.startswith("timevault_service_requests_total{service=\"catalog\"")
              and 'endpoint="tv.catalog.job.finish"' in k]
    assert finish and finish[0] >= 1
    assert any(k.startswith('timevault_service_up{service="gateway"') for k in samples)
    for line in text.splitlines():  # every family declared before its samples
        if line.startswith("# TYPE"):
            assert line.split()[3] in ("gauge", "counter", "histogram")


async def test_ready_follows_nats_and_the_catalog_health_stays_alive(anon: aiohttp.ClientSession,
                                                                      tmp_path: Path) -> None:
    async with anon.get("/api/v1/ready") as resp:  # the full stack
        assert resp.status == 200 and (await resp.json())["catalog"] is True
    server = NatsServer(tmp_path / "nats")  # a NATS with no catalog on it
    server.start()
    config = GatewayConfig(nats_url=server.url, token="t" * 32, host="127.0.0.1", port=free_port())
    runner = web.AppRunner(create_app(config), shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, config.host, config.port).start()
    url = f"http://{config.host}:{config.port}"
    try:
        async with aiohttp.ClientSession(url) as client:
            async with client.get("/api/v1/ready") as resp:
                assert resp.status == 503
                assert (await resp.json())["error"]["message"] == "no catalog answers"
            server.stop()
            await asyncio.sleep(1.2)  # past the cached answer
            async with client.get("/api/v1/ready") as resp:
                assert resp.status == 503
                body = await resp.json()
                assert body["error"]["code"] == "unavailable" and "NATS" in body["error"]["message"]
            async with client.get("/api/v1/health") as resp:
                assert resp.status == 200 and (await resp.json())["nats"] is False
    finally:
        server.stop()
        await runner.cleanup()


def _frames(raw: bytes) -> list[dict[str, str]]:
    out = []
    for frame in raw.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in fields:
            out.append(fields)
    return out


async def _read_until(stream: aiohttp.ClientResponse, want: Any, seconds: float = 20) -> list[dict[str, str]]:
    buffer = b""
    seen: list[dict[str, str]] = []

    async def read() -> None:
        nonlocal buffer
        while not any(want(f) for f in seen):
            buffer += await stream.content.readuntil(b"\n\n")
            seen[:] = _frames(buffer)

    await asyncio.wait_for(read(), seconds)
    return seen


async def test_events_carry_ids_and_resume_from_last_event_id(http: aiohttp.ClientSession,
                                                               tmp_path: Path) -> None:
    async with http.get("/api/v1/events") as stream:
        await stream.content.readuntil(b"\n\n")
        plan = await _backup(http, tmp_path, "replayed")
        seen = await _read_until(stream, lambda f: f["event"] == "job" and '"completed"' in f["data"])
    kept = [f for f in seen if f["event"] in ("job", "plan")]
    assert kept and all(f["id"].isdigit() for f in kept)
    assert all("id" not in f for f in seen if f["event"] == "progress")  # heartbeats are not kept
    ids = [int(f["id"]) for f in kept]
    assert ids == sorted(ids)
    created = next(f for f in kept if f["event"] == "plan" and json.loads(f["data"])["plan_id"] == plan["id"])
    # Reconnect as EventSource does: everything after the last id seen is replayed first.
    async with http.get("/api/v1/events", headers={"Last-Event-ID": str(int(created["id"]) - 1)}) as stream:
        replay = await _read_until(stream, lambda f: f.get("id") == kept[-1]["id"])
    replayed = [f for f in replay if "id" in f]
    assert replayed[0]["id"] == created["id"] and replayed[0]["data"] == created["data"]
    assert [f["id"] for f in replayed if int(f["id"]) <= ids[-1]][-len(ids):] == [str(i) for i in ids]
    async with http.get("/api/v1/events", headers={"Last-Event-ID": "x"}) as resp:
        assert resp.status == 400
