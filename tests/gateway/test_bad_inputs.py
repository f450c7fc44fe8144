"""Every bad HTTP input of issue 12 gets a 4xx with the JSON error body, against the real gateway
process: `field` names the input at fault, no job is started for it, and no service logs a
traceback. Includes requests that aiohttp's own parser refuses before any route."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.gateway.conftest import PASSWORD, Stack, plan_body, source_tree, wait_job

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def gw(stack: Stack) -> AsyncIterator[aiohttp.ClientSession]:
    """A client of the gateway *process* (its parser, its log), with the token."""
    async with aiohttp.ClientSession(stack.url, headers=stack.headers,
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return source_tree(tmp_path_factory.mktemp("bad-inputs") / "src", {"a.txt": b"a\n", "d/b.txt": b"b\n"})


async def _error(resp: aiohttp.ClientResponse, field: str | None, *, status: int | None = None) -> dict[str, Any]:
    assert resp.content_type == "application/json", (resp.status, await resp.text())
    body = await resp.json()
    assert 400 <= resp.status < 500, (resp.status, body)
    if status is not None:
        assert resp.status == status, body
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}, body
    assert body["error"]["field"] == field, body
    assert body["error"]["message"] and PASSWORD not in body["error"]["message"]
    return body["error"]


def _tracebacks(stack: Stack) -> dict[str, int]:
    return {name: proc.output().count("Traceback") for name, proc in stack.procs.items()}


@pytest.fixture
def no_new_tracebacks(stack: Stack) -> Any:
    before = _tracebacks(stack)
    yield
    assert _tracebacks(stack) == before, "bad input must never put a traceback in a service log"


def _schedule(**kw: Any) -> dict[str, Any]:
    return {"frequency": "daily", "time": "03:00", "timezone": "UTC", **kw}


def _bodies(src: Path, repo: Path) -> list[tuple[str, dict[str, Any], str]]:
    base = plan_body("bad", src, repo)
    local = {"type": "local", "path": str(repo)}
    return [
        ("5000-character time zone", {**base, "schedule": _schedule(timezone="A" * 5000)}, "schedule.timezone"),
        ("time zone with a NUL", {**base, "schedule": _schedule(timezone="Europe/Ber\0lin")}, "schedule.timezone"),
        ("weekday 9 on a daily plan", {**base, "schedule": _schedule(weekday=9)}, "schedule.weekday"),
        ("weekday -1 on a weekly plan", {**base, "schedule": _schedule(frequency="weekly", weekday=-1)},
         "schedule.weekday"),
        ("NUL in the location path", {**base, "location": {**local, "path": str(repo) + "\0x"}}, "location.path"),
        ("location /proc/x", {**base, "location": {**local, "path": "/proc/x"}}, "location.path"),
        ("location /dev/null", {**base, "location": {**local, "path": "/dev/null"}}, "location.path"),
        ("location /etc/passwd", {**base, "location": {**local, "path": "/etc/passwd"}}, "location.path"),
        ("location / + 5000 d", {**base, "location": {**local, "path": "/" + "d" * 5000}}, "location.path"),
        ("location /", {**base, "location": {**local, "path": "/"}}, "location.path"),
        ("location an existing file", {**base, "location": {**local, "path": str(src / "a.txt")}},
         "location.path"),
        ("local location with a bucket", {**base, "location": {**local, "bucket": "b"}}, "location.bucket"),
        ("local location with a region", {**base, "location": {**local, "region": "eu-west-1"}},
         "location.region"),
        ("s3 location with a path", {**base, "location": {"type": "s3", "bucket": "bucket", "path": "/x"}},
         "location.path"),
        ("s3 bucket of bad characters", {**base, "location": {"type": "s3", "bucket": "Bad_Bucket!"}},
         "location.bucket"),
        ("s3 endpoint that is no URL", {**base, "location": {"type": "s3", "bucket": "bucket",
                                                             "endpoint": "ftp:/x"}}, "location.endpoint"),
        ("source with a NUL", {**base, "sources": [str(src) + "\0"]}, "sources"),
        ("source with a newline", {**base, "sources": [str(src) + "\nx"]}, "sources"),
        ("source / + 5000 s", {**base, "sources": ["/" + "s" * 5000]}, "sources"),
        ("source of 5000 bytes in short names", {**base, "sources": ["/a" * 2500]}, "sources"),
    ]


async def test_bad_plan_bodies(gw: aiohttp.ClientSession, src: Path, tmp_path: Path, no_new_tracebacks: None) -> None:
    repo = tmp_path / "repo"
    for label, body, field in _bodies(src, repo):
        async with gw.post("/api/v1/plans", json=body) as resp:
            error = await _error(resp, field, status=400)
            assert error["code"] == "invalid", (label, error)
    assert not repo.exists(), "no repository is created for a refused plan"
    async with gw.get("/api/v1/plans") as resp:
        assert "bad" not in {p["name"] for p in await resp.json()}


async def test_deeply_nested_json(gw: aiohttp.ClientSession, no_new_tracebacks: None) -> None:
    for body in (b"[" * 6000, b"[" * 6000 + b"]" * 6000, b'{"name": ' + b"[" * 6000 + b"]" * 6000 + b"}"):
        async with gw.post("/api/v1/plans", data=body, headers={"Content-Type": "application/json"}) as resp:
            await _error(resp, None, status=400)


async def test_bad_patches(gw: aiohttp.ClientSession, src: Path, tmp_path: Path, no_new_tracebacks: None) -> None:
    async with gw.post("/api/v1/plans", json=plan_body("patched", src, tmp_path / "repo")) as resp:
        assert resp.status == 201, await resp.text()
        plan = await resp.json()
    url = f"/api/v1/plans/{plan['id']}"
    for patch, field in [
        ({"schedule": {"timezone": "Z" * 5000}}, "schedule.timezone"),
        ({"schedule": {"weekday": 9}}, "schedule.weekday"),
        ({"sources": ["/x\0y"]}, "sources"),
        ({"location": {"type": "local", "path": str(tmp_path / "repo"), "bucket": "b"}}, "location.bucket"),
    ]:
        async with gw.patch(url, json=patch) as resp:
            await _error(resp, field, status=400)
    async with gw.get(url) as resp:
        assert (await resp.json())["schedule"] == plan["schedule"], "a refused change changes nothing"
    async with gw.delete(url) as resp:
        assert resp.status == 200


async def test_attach_with_only_an_s3_bucket(gw: aiohttp.ClientSession, src: Path, no_new_tracebacks: None) -> None:
    body = {"name": "attached", "location": {"type": "s3", "bucket": "no-such-bucket-here"},
            "password": PASSWORD, "schedule": _schedule()}
    async with gw.post("/api/v1/plans/attach", json=body) as resp:
        await _error(resp, "location", status=400)  # no credentials, no such bucket: not a 5xx
    async with gw.post("/api/v1/plans/attach", json={"location": {"type": "s3", "bucket": "b"}}) as resp:
        await _error(resp, "name", status=400)


async def test_long_ids_and_requests_refused_before_any_route(gw: aiohttp.ClientSession, stack: Stack,
                                                              no_new_tracebacks: None) -> None:
    async with gw.get("/api/v1/plans/" + "p" * 10_000) as resp:
        await _error(resp, "plan_id", status=404)
    async with gw.post("/api/v1/plans/" + "p" * 10_000 + "/backups") as resp:
        await _error(resp, "plan_id", status=404)
    async with gw.get("/api/v1/jobs/" + "j" * 10_000) as resp:
        await _error(resp, "job_id", status=404)
    # Longer than any request line the gateway reads: aiohttp's parser refuses it, still as JSON.
    async with gw.get("/api/v1/plans/" + "p" * 40_000) as resp:
        await _error(resp, None, status=400)
    async with gw.get("/api/v1/plans", headers={"X-Big": "h" * 40_000}) as resp:
        await _error(resp, None)
    for raw in (b"GARBAGE\r\n\r\n", b"GET /api/v1/plans HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n",
                b"POST /api/v1/plans HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"):
        status, content_type, body = await _raw(stack.url, raw)
        assert 400 <= status < 500 and content_type.startswith("application/json"), (raw, status, body)
        assert b'"error"' in body


async def _raw(url: str, request: bytes) -> tuple[int, str, bytes]:
    """Send bytes as they are (no client library would send these) and read the answer."""
    parts = urlsplit(url)

    def exchange() -> bytes:
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            sock.sendall(request)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)

    answer = await asyncio.to_thread(exchange)
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers.get("content-type", ""), body


async def test_restore_includes_are_refused_before_any_job(gw: aiohttp.ClientSession, src: Path, tmp_path: Path,
                                                           stack: Stack, no_new_tracebacks: None) -> None:
    async with gw.post("/api/v1/plans", json=plan_body("restorable", src, tmp_path / "repo")) as resp:
        assert resp.status == 201, await resp.text()
        plan = await resp.json()
    async with gw.post(f"/api/v1/plans/{plan['id']}/backups") as resp:
        job = await resp.json()
    assert (await wait_job(gw, job["id"]))["status"] == "completed"
    restore = f"/api/v1/plans/{plan['id']}/snapshots/latest/restore"
    target = str(tmp_path / "out")
    for includes in ([".."], ["../../etc/passwd"], ["/src/../../etc"], ["a/../../b"], ["x\0y"], [""],
                     ["ok", ".."]):
        async with gw.post(restore, json={"target": target, "password": PASSWORD, "includes": includes}) as resp:
            await _error(resp, "includes", status=400)
    for bad_target in ("/" + "t" * 5000, "/tmp/x\ny"):
        async with gw.post(restore, json={"target": bad_target, "password": PASSWORD}) as resp:
            await _error(resp, "target", status=400)
    async with gw.get(f"/api/v1/plans/{plan['id']}/jobs") as resp:
        kinds = [j["kind"] for j in await resp.json()]
    assert "restore" not in kinds and "backup" in kinds, "no restore job may start for a refused request"
    assert not (tmp_path / "out").exists()
    async with gw.delete(f"/api/v1/plans/{plan['id']}") as resp:
        assert resp.status == 200
