"""HTTP API against the real services: every endpoint, every invalid input, auth and security headers."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from tests.gateway.conftest import PASSWORD, Stack, plan_body, source_tree, wait_job
from timevault.proto.plans import PlanCreate
from timevault.services.gateway import app as gateway_app
from timevault.services.gateway.routes import endpoints

pytestmark = pytest.mark.timeout(120)


async def expect_error(resp: aiohttp.ClientResponse, status: int, code: str, field: str | None = None) -> str:
    body = await resp.json()
    assert resp.status == status, body
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["field"] == field, body
    assert body["error"]["message"]
    return str(body["error"]["message"])


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("api")
    return source_tree(root / "src", {"a.txt": b"hello\n", "sub/b.bin": bytes(range(256)) * 64})


@pytest.fixture
async def plan(http: aiohttp.ClientSession, tree: Path, tmp_path: Path) -> dict[str, Any]:
    name = f"plan-{tmp_path.name[-40:]}"
    async with http.post("/api/v1/plans", json=plan_body(name, tree, tmp_path / "repo")) as resp:
        assert resp.status == 201, await resp.text()
        return await resp.json()


# --- health, auth, headers -------------------------------------------------------------------


async def test_health_needs_no_auth(anon: aiohttp.ClientSession) -> None:
    async with anon.get("/api/v1/health") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok", "nats": True}


PROTECTED = [(e.method, e.path.replace("{plan_id}", "p_x").replace("{snapshot_id}", "s").replace("{job_id}", "j_x"))
             for e in endpoints() if e.auth]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_every_endpoint_but_health_needs_the_token(anon: aiohttp.ClientSession, method: str,
                                                         path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": "Basic abc"}):
        async with anon.request(method, path, headers=headers, json={} if method != "GET" else None) as resp:
            await expect_error(resp, 401, "unauthorized")
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_token_of_another_length_and_scheme_case(anon: aiohttp.ClientSession, stack: Stack) -> None:
    async with anon.get("/api/v1/plans", headers={"Authorization": f"Bearer {stack.token}x"}) as resp:
        assert resp.status == 401
    async with anon.get("/api/v1/plans", headers={"Authorization": f"bearer {stack.token}"}) as resp:
        assert resp.status == 200


async def test_security_headers_and_ui_without_auth(anon: aiohttp.ClientSession) -> None:
    async with anon.get("/") as resp:
        assert resp.status == 200
        assert "text/html" in resp.headers["Content-Type"]
        csp = resp.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert "/static/app.js" in await resp.text()
    for path in ("/static/app.js", "/static/style.css", "/api/v1/health"):
        async with anon.get(path) as resp:
            assert resp.status == 200
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert "Access-Control-Allow-Origin" not in resp.headers
    async with anon.get("/static/../conftest.py") as resp:
        assert resp.status in (403, 404)


async def test_ui_modules_are_javascript_under_the_csp(anon: aiohttp.ClientSession) -> None:
    """The UI is ES modules: each is served with a JavaScript type (browsers refuse a module
    otherwise, nosniff too), and the page has no inline script for the CSP to allow."""
    static = gateway_app.STATIC_DIR
    async with anon.get("/") as resp:
        page = await resp.text()
        csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, re.S)
    assert scripts == [(' type="module" src="/static/app.js"', "")]
    modules = sorted(p.relative_to(static).as_posix() for p in static.rglob("*.js"))
    assert "views/plans.js" in modules
    for rel in modules:
        async with anon.get(f"/static/{rel}") as resp:
            assert resp.status == 200, rel
            assert resp.content_type in ("text/javascript", "application/javascript"), (rel, resp.content_type)
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["Content-Security-Policy"] == csp
            assert resp.headers["Cache-Control"] == "no-cache"  # never a mix of old and new modules
            assert await resp.read() == (static / rel).read_bytes()
            etag = resp.headers["ETag"]
        async with anon.get(f"/static/{rel}", headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304, rel


async def test_no_cors_for_other_origins(http: aiohttp.ClientSession) -> None:
    async with http.get("/api/v1/plans", headers={"Origin": "http://evil.example"}) as resp:
        await expect_error(resp, 403, "forbidden")
        assert "Access-Control-Allow-Origin" not in resp.headers
    async with http.options("/api/v1/plans", headers={"Origin": "http://evil.example",
                                                      "Access-Control-Request-Method": "POST"}) as resp:
        assert resp.status == 403
        assert "Access-Control-Allow-Origin" not in resp.headers
    host = http._base_url.authority if http._base_url else ""  # same origin is fine
    async with http.get("/api/v1/plans", headers={"Origin": f"http://{host}"}) as resp:
        assert resp.status == 200


async def test_unknown_route_and_method_are_json_errors(http: aiohttp.ClientSession) -> None:
    async with http.get("/api/v1/nope") as resp:
        await expect_error(resp, 404, "not_found")
    async with http.put("/api/v1/plans") as resp:
        await expect_error(resp, 405, "method_not_allowed")


async def test_openapi_is_generated_from_the_proto_types(anon: aiohttp.ClientSession) -> None:
    async with anon.get("/api/v1/openapi.json") as resp:
        assert resp.status == 200
        doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    for e in endpoints():
        assert e.method.lower() in doc["paths"][e.path], e.path
    _, components = msgspec.json.schema_components([PlanCreate], ref_template="#/components/schemas/{name}")
    served = doc["components"]["schemas"]["PlanCreate"]
    assert set(served["properties"]) == set(components["PlanCreate"]["properties"])
    assert served["additionalProperties"] is False
    assert doc["paths"]["/api/v1/health"]["get"]["security"] == []


# --- plans ---------------------------------------------------------------------------------


async def test_create_list_get_plan(http: aiohttp.ClientSession, tree: Path, tmp_path: Path) -> None:
    body = plan_body("créer & lister", tree, tmp_path / "repo",
                     schedule={"frequency": "weekly", "time": "21:30", "weekday": 5, "timezone": "Europe/Berlin"})
    async with http.post("/api/v1/plans", json=body) as resp:
        assert resp.status == 201, await resp.text()
        text = await resp.text()
        plan = json.loads(text)
        assert resp.headers["Location"] == f"/api/v1/plans/{plan['id']}"
    assert PASSWORD not in text and "password" not in plan
    assert plan["schedule"] == {"frequency": "weekly", "time": "21:30", "weekday": 5, "timezone": "Europe/Berlin",
                                "day_of_month": None}
    assert plan["next_run"] and plan["total_size"] == 0 and plan["paused"] is False
    async with http.get("/api/v1/plans") as resp:
        plans = await resp.json()
        assert any(p["id"] == plan["id"] for p in plans)
    async with http.get(f"/api/v1/plans/{plan['id']}") as resp:
        detail = await resp.json()
        assert detail["snapshots"] == [] and detail["name"] == "créer & lister"
    async with http.get(f"/api/v1/plans/{plan['id']}/log") as resp:
        assert [e["kind"] for e in await resp.json()] == ["created"]
    async with http.post("/api/v1/plans", json=plan_body("créer & lister", tree, tmp_path / "other")) as resp:
        assert "already exists" in await expect_error(resp, 409, "conflict", "name")


def _invalid_bodies(tree: Path, repo: Path) -> list[tuple[str, dict[str, Any], str | None]]:
    base = plan_body("x", tree, repo)

    def with_schedule(**kw: Any) -> dict[str, Any]:
        return {**base, "schedule": {"frequency": "daily", "time": "03:00", "timezone": "UTC", **kw}}

    return [
        ("empty name", {**base, "name": ""}, "name"),
        ("whitespace name", {**base, "name": "   \t "}, "name"),
        ("name too long", {**base, "name": "n" * 65}, "name"),
        ("short password", {**base, "password": "abc", "password_confirm": "abc"}, "password"),
        ("passwords differ", {**base, "password_confirm": PASSWORD + "!"}, "password_confirm"),
        ("unknown frequency", with_schedule(frequency="yearly"), "schedule.frequency"),
        ("weekly without weekday", with_schedule(frequency="weekly"), "schedule.weekday"),
        ("weekday 0", with_schedule(frequency="weekly", weekday=0), "schedule.weekday"),
        ("weekday 8", with_schedule(frequency="weekly", weekday=8), "schedule.weekday"),
        ("time 24:00", with_schedule(time="24:00"), "schedule.time"),
        ("time 7:00", with_schedule(time="7:00"), "schedule.time"),
        ("time noon", with_schedule(time="noon"), "schedule.time"),
        ("unknown time zone", with_schedule(timezone="Mars/Olympus_Mons"), "schedule.timezone"),
        ("no sources", {**base, "sources": []}, "sources"),
        ("missing sources", {k: v for k, v in base.items() if k != "sources"}, "sources"),
        ("relative source", {**base, "sources": ["home/me"]}, "sources"),
        ("location inside a source", {**base, "location": {"type": "local", "path": str(tree / "repo")}},
         "location.path"),
        ("relative location", {**base, "location": {"type": "local", "path": "repo"}}, "location.path"),
        ("unknown location type", {**base, "location": {"type": "ftp"}}, "location.type"),
        ("s3 without bucket", {**base, "location": {"type": "s3"}}, "location.bucket"),
        ("unknown field", {**base, "retention": 3}, "retention"),
        ("unknown nested field", with_schedule(hour=3), "schedule.hour"),
        ("name of wrong type", {**base, "name": 5}, "name"),
        ("sources of wrong type", {**base, "sources": "/home"}, "sources"),
        ("source of wrong type", {**base, "sources": [1]}, "sources"),
        ("weekday of wrong type", with_schedule(frequency="weekly", weekday="monday"), "schedule.weekday"),
        ("schedule of wrong type", {**base, "schedule": "daily"}, "schedule"),
    ]


async def test_every_invalid_plan_is_a_400_naming_the_field(http: aiohttp.ClientSession, tree: Path,
                                                            tmp_path: Path) -> None:
    for label, body, field in _invalid_bodies(tree, tmp_path / "repo"):
        async with http.post("/api/v1/plans", json=body) as resp:
            message = await expect_error(resp, 400, "invalid", field)
            assert PASSWORD not in message, label
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize(("data", "content_type"), [
    (b"{not json", "application/json"),
    (b"", "application/json"),
    (b"[1, 2]", "application/json"),
    (b"name=x", "application/x-www-form-urlencoded"),
    (b"\xff\xfe", "application/json"),
])
async def test_bodies_that_are_not_a_json_object(http: aiohttp.ClientSession, data: bytes, content_type: str) -> None:
    async with http.post("/api/v1/plans", data=data, headers={"Content-Type": content_type}) as resp:
        await expect_error(resp, 400, "invalid")


async def test_body_over_the_size_limit(http: aiohttp.ClientSession, tree: Path, tmp_path: Path) -> None:
    body = plan_body("big", tree, tmp_path / "repo", sources=[str(tree)] * 20_000)
    async with http.post("/api/v1/plans", json=body) as resp:
        assert "larger than" in await expect_error(resp, 400, "too_large")

    async def chunks() -> Any:  # no Content-Length: the limit applies while reading
        for _ in range(100):
            yield b" " * 1024
        yield b"{}"

    async with http.post("/api/v1/plans", data=chunks(), headers={"Content-Type": "application/json"}) as resp:
        await expect_error(resp, 400, "too_large")


async def test_patch_schedule_and_sources(http: aiohttp.ClientSession, plan: dict[str, Any], tree: Path) -> None:
    url = f"/api/v1/plans/{plan['id']}"
    patch = {"schedule": {"frequency": "weekly", "weekday": 7, "time": "05:15"}}
    async with http.patch(url, json=patch) as resp:
        updated = await resp.json()
        assert resp.status == 200, updated
    assert updated["schedule"] == {"frequency": "weekly", "weekday": 7, "time": "05:15", "timezone": "UTC",
                                   "day_of_month": None}
    assert updated["next_run"] != plan["next_run"]
    async with http.patch(url, json={"sources": [str(tree / "sub")], "name": plan["name"]}) as resp:
        assert resp.status == 200
        assert (await resp.json())["sources"] == [str(tree / "sub")]
    async with http.patch(url, json={"schedule": {"frequency": "daily"}}) as resp:
        assert (await resp.json())["schedule"]["weekday"] is None


@pytest.mark.parametrize(("patch", "status", "code", "field"), [
    ({"name": "renamed"}, 400, "invalid", "name"),
    ({"schedule": {"frequency": "weekly"}}, 400, "invalid", "schedule.weekday"),
    ({"schedule": {"frequency": "weekly", "weekday": 9}}, 400, "invalid", "schedule.weekday"),
    ({"schedule": {"time": "3pm"}}, 400, "invalid", "schedule.time"),
    ({"schedule": {"timezone": "Nowhere/Land"}}, 400, "invalid", "schedule.timezone"),
    ({"schedule": {"frequency": "yearly"}}, 400, "invalid", "schedule.frequency"),
    ({"schedule": {"frequency": "monthly"}}, 400, "invalid", "schedule.day_of_month"),
    ({"sources": ["relative"]}, 400, "invalid", "sources"),
    ({"sources": []}, 400, "invalid", "sources"),
    ({"location": {"type": "local", "path": "/elsewhere"}}, 400, "invalid", "location"),
    ({"password": "newpass"}, 400, "invalid", "password"),
    ({"schedule": {"weekday": "mon"}}, 400, "invalid", "schedule.weekday"),
])
async def test_patch_refusals(http: aiohttp.ClientSession, plan: dict[str, Any], patch: dict[str, Any],
                              status: int, code: str, field: str) -> None:
    async with http.patch(f"/api/v1/plans/{plan['id']}", json=patch) as resp:
        message = await expect_error(resp, status, code, field)
    if field == "name":
        assert "cannot be changed" in message


async def test_pause_and_resume(http: aiohttp.ClientSession, plan: dict[str, Any]) -> None:
    async with http.post(f"/api/v1/plans/{plan['id']}/pause") as resp:
        paused = await resp.json()
        assert resp.status == 200 and paused["paused"] is True and paused["next_run"] is None
    async with http.post(f"/api/v1/plans/{plan['id']}/resume") as resp:
        resumed = await resp.json()
        assert resumed["paused"] is False and resumed["next_run"]


@pytest.mark.parametrize("path", ["/api/v1/plans/p_missing", "/api/v1/plans/p_missing/snapshots",
                                  "/api/v1/plans/p_missing/log", "/api/v1/plans/p_missing/jobs",
                                  "/api/v1/jobs/j_missing"])
async def test_unknown_ids_are_404(http: aiohttp.ClientSession, path: str) -> None:
    async with http.get(path) as resp:
        await expect_error(resp, 404, "not_found", "job_id" if "/jobs/" in path and "plans" not in path else "plan")


@pytest.mark.parametrize(("method", "path"), [
    ("DELETE", "/api/v1/plans/p_missing"), ("POST", "/api/v1/plans/p_missing/pause"),
    ("POST", "/api/v1/plans/p_missing/resume"), ("POST", "/api/v1/plans/p_missing/backups"),
    ("POST", "/api/v1/jobs/j_missing/cancel"), ("PATCH", "/api/v1/plans/p_missing"),
])
async def test_unknown_ids_are_404_for_changes(http: aiohttp.ClientSession, method: str, path: str) -> None:
    async with http.request(method, path, json={} if method == "PATCH" else None) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"


async def test_bad_query_parameters(http: aiohttp.ClientSession, plan: dict[str, Any]) -> None:
    async with http.get(f"/api/v1/plans/{plan['id']}/jobs", params={"active": "maybe"}) as resp:
        await expect_error(resp, 400, "invalid", "active")
    async with http.get(f"/api/v1/plans/{plan['id']}/log", params={"limit": "0"}) as resp:
        await expect_error(resp, 400, "invalid", "limit")


# --- backups, snapshots, restore, jobs, delete ---------------------------------------------------


async def test_backup_busy_cancel_snapshot_restore_delete(http: aiohttp.ClientSession, stack: Stack,
                                                          plan: dict[str, Any], tree: Path,
                                                          tmp_path: Path) -> None:
    pid = plan["id"]
    with stack.snapshotter_stopped():
        async with http.post(f"/api/v1/plans/{pid}/backups") as resp:
            assert resp.status == 202
            pending = await resp.json()
            assert pending["status"] == "pending" and resp.headers["Location"] == f"/api/v1/jobs/{pending['id']}"
        async with http.post(f"/api/v1/plans/{pid}/backups") as resp:
            assert "busy" in await expect_error(resp, 409, "busy", "plan")
        async with http.get(f"/api/v1/plans/{pid}/jobs", params={"active": "true"}) as resp:
            assert [j["id"] for j in await resp.json()] == [pending["id"]]
        async with http.post(f"/api/v1/jobs/{pending['id']}/cancel") as resp:
            assert (await resp.json())["status"] == "canceled"

    async with http.post(f"/api/v1/plans/{pid}/backups") as resp:
        job = await resp.json()
    done = await wait_job(http, job["id"])
    assert done["status"] == "completed", done
    async with http.post(f"/api/v1/jobs/{job['id']}/cancel") as resp:  # finished jobs stay as they are
        assert (await resp.json())["status"] == "completed"

    async with http.get(f"/api/v1/plans/{pid}") as resp:
        detail = await resp.json()
    snaps = [s for s in detail["snapshots"] if s["status"] == "completed"]
    assert len(snaps) == 1 and detail["total_size"] > 0 and detail["active_job"] is None
    snap = snaps[0]
    assert snap["size"] == 6 + 256 * 64 and snap["files"] == 2 and snap["added_size"] > 0
    assert snap["started_at"] and snap["finished_at"] and snap["error"] is None
    assert any(s["status"] == "canceled" for s in detail["snapshots"])
    async with http.get(f"/api/v1/plans/{pid}/snapshots") as resp:
        assert await resp.json() == detail["snapshots"]

    restore = f"/api/v1/plans/{pid}/snapshots/{snap['id']}/restore"
    for target in ("/", "/etc", "/etc/restore", "/usr/local/x", "/proc/1", "/sys", "/dev/shm/x", "/boot",
                   "/bin", "/home", "/tmp/../etc", "relative/dir", "", "/root"):
        async with http.post(restore, json={"target": target, "password": PASSWORD}) as resp:
            await expect_error(resp, 400, "invalid", "target")
    async with http.post(restore, json={"target": str(tmp_path / "out"), "password": "wrong password"}) as resp:
        await expect_error(resp, 401, "unauthorized", "password")
    async with http.post(restore, json={"target": str(tmp_path / "out"), "password": ""}) as resp:
        await expect_error(resp, 400, "invalid", "password")
    async with http.post(restore, json={"target": str(tmp_path / "out"), "password": PASSWORD, "x": 1}) as resp:
        await expect_error(resp, 400, "invalid", "x")
    async with http.post(restore, json={"target": str(tmp_path / "out")}) as resp:
        await expect_error(resp, 400, "invalid", "password")
    async with http.post(f"/api/v1/plans/{pid}/snapshots/ffffffff/restore",
                         json={"target": str(tmp_path / "out"), "password": PASSWORD}) as resp:
        await expect_error(resp, 404, "not_found", "snapshot")
    async with http.post(restore, json={"target": str(tmp_path / "out"), "password": PASSWORD,
                                        "includes": [str(tree / "a.txt")]}) as resp:
        assert resp.status == 202, await resp.text()
        rjob = await resp.json()
        assert rjob["kind"] == "restore" and "password" not in json.dumps(rjob)
    rdone = await wait_job(http, rjob["id"])
    assert rdone["status"] == "completed", rdone
    restored = tmp_path / "out" / str(tree).lstrip("/")
    assert (restored / "a.txt").read_bytes() == b"hello\n"
    assert not (restored / "sub").exists()

    async with http.delete(f"/api/v1/plans/{pid}") as resp:
        assert resp.status == 200
        assert (await resp.json())["plan_id"] == pid
    async with http.get(f"/api/v1/plans/{pid}") as resp:
        assert resp.status == 404
    async with http.delete(f"/api/v1/plans/{pid}") as resp:
        assert resp.status == 404


def _nats_subscriptions(stack: Stack) -> int:
    with urllib.request.urlopen(f"{stack.nats_monitor}/subsz", timeout=5) as resp:
        return int(json.loads(resp.read())["num_subscriptions"])


def _get(stack: Stack, path: str) -> Any:
    req = urllib.request.Request(f"{stack.url}/api/v1{path}", headers={"Authorization": f"Bearer {stack.token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


async def _no_jobs_running(stack: Stack) -> None:
    """Jobs subscribe while they run (a prune after an earlier test's backup): wait them out."""
    deadline = time.monotonic() + 60
    while any(_get(stack, f"/plans/{plan['id']}/jobs?active=true") for plan in _get(stack, "/plans")):
        assert time.monotonic() < deadline, "jobs still running"
        await asyncio.sleep(0.2)


async def _settled_subscriptions(stack: Stack) -> int:
    """The subscription count once it stops moving: services that are still starting, or streams of
    earlier tests still closing, must not be counted as this test's."""
    last, steady = _nats_subscriptions(stack), 0
    for _ in range(100):
        await asyncio.sleep(0.2)
        now = _nats_subscriptions(stack)
        steady = steady + 1 if now == last else 0
        if steady == 6:  # unchanged for 1.2 s: longer than a closed stream takes to end (1 s)
            return now
        last = now
    return last


async def test_events_stream_ends_soon_after_its_client_leaves(app_url: str, stack: Stack) -> None:
    """`--wait` closes its stream when the job ends; the gateway must not keep the subscription
    until its next keep-alive (15 s)."""
    await _no_jobs_running(stack)
    before = await _settled_subscriptions(stack)
    host, port = app_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET /api/v1/events?job=j_gone HTTP/1.1\r\nHost: {host}\r\n"
                 f"Authorization: Bearer {stack.token}\r\n\r\n".encode())
    await writer.drain()
    await asyncio.wait_for(reader.readuntil(b": connected\n\n"), 10)
    # The job's progress subject and its status events (an ordered consumer on the events stream,
    # which adds the server's own subscriptions for the consumer).
    assert _nats_subscriptions(stack) >= before + 2
    writer.close()
    deadline = time.monotonic() + 5
    while _nats_subscriptions(stack) != before:
        assert time.monotonic() < deadline, "the stream's subscriptions outlived their client"
        await asyncio.sleep(0.2)


async def test_events_stream_job_progress(http: aiohttp.ClientSession, anon: aiohttp.ClientSession,
                                          plan: dict[str, Any]) -> None:
    async with anon.get("/api/v1/events") as resp:
        await expect_error(resp, 401, "unauthorized")
    async with http.get("/api/v1/events", params={"job": "bad.subject"}) as resp:
        await expect_error(resp, 400, "invalid", "job")
    seen: list[tuple[str, dict[str, Any]]] = []
    async with http.get("/api/v1/events") as stream:
        assert stream.status == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        assert stream.headers["X-Content-Type-Options"] == "nosniff"
        await stream.content.readuntil(b"\n\n")  # the stream is subscribed once the first frame arrives
        async with http.post(f"/api/v1/plans/{plan['id']}/backups") as resp:
            job = await resp.json()

        async def read() -> None:
            while True:
                frame = (await stream.content.readuntil(b"\n\n")).decode()
                fields = dict(line.split(": ", 1) for line in frame.strip().splitlines() if not line.startswith(":"))
                if "event" not in fields:
                    continue
                seen.append((fields["event"], json.loads(fields["data"])))
                if fields["event"] == "job" and seen[-1][1]["job"]["status"] == "completed":
                    return

        await asyncio.wait_for(read(), 60)
    kinds = {kind for kind, _ in seen}
    assert {"job", "plan"} <= kinds
    assert all(m["job"]["id"] == job["id"] for k, m in seen if k == "job")
    assert any(k == "plan" and m["plan_id"] == plan["id"] for k, m in seen)
