"""The system CLI against a stub of the gateway's HTTP API (request shapes, output, exit codes)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from timevault.cli.main import main

pytestmark = pytest.mark.timeout(30)
TOKEN = "t" * 40
PLAN = {"id": "p_1", "name": "Photos", "sources": ["/data"], "paused": False, "total_size": 2048,
        "schedule": {"frequency": "weekly", "time": "02:30", "weekday": 1, "timezone": "UTC"},
        "location": {"type": "local", "path": "/backups"}, "next_run": None,
        "snapshots": [{"id": "ab" * 32, "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:01:00Z",
                       "size": 10, "added_size": 5, "files": 1, "status": "completed", "error": None}]}


class Stub:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.job_polls = 0
        # When set: GET /jobs/j_1 answers these statuses in turn, and /events streams `events`.
        self.job_statuses: list[str] | None = None
        self.events: list[tuple[str, dict[str, Any]]] | None = None

    async def stream_events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b": connected\n\n")
        for kind, data in self.events or []:
            await response.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())
        return response  # the stream ends here, as when a gateway goes away

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": {"code": "unauthorized", "message": "bad token"}}, status=401)
        body: Any = await request.json() if request.can_read_body else None
        path = request.path.removeprefix("/api/v1")
        self.requests.append((request.method, path, body))
        if (request.method, path) == ("GET", "/plans"):
            return web.json_response([PLAN])
        if (request.method, path) == ("POST", "/plans"):
            if body["name"] == "Photos":
                return web.json_response({"error": {"code": "conflict", "field": "name",
                                                    "message": "a plan named 'Photos' already exists"}}, status=409)
            return web.json_response({**PLAN, "name": body["name"], "id": "p_2"}, status=201)
        if (request.method, path) == ("GET", "/plans/p_1"):
            return web.json_response(PLAN)
        if (request.method, path) == ("POST", "/plans/p_1/backups"):
            return web.json_response({"id": "j_1", "kind": "backup", "status": "pending", "plan_id": "p_1"},
                                     status=202)
        if (request.method, path) == ("GET", "/events") and self.events is not None:
            return await self.stream_events(request)
        if (request.method, path) == ("GET", "/jobs/j_1") and self.job_statuses is not None:
            self.job_polls += 1
            status = self.job_statuses[min(self.job_polls, len(self.job_statuses)) - 1]
            return web.json_response({"id": "j_1", "kind": "backup", "status": status, "snapshot_id": "cd" * 32})
        if (request.method, path) == ("GET", "/jobs/j_1"):
            self.job_polls += 1
            status = "running" if self.job_polls < 2 else "failed"
            return web.json_response({"id": "j_1", "kind": "backup", "status": status, "error": "disk full"})
        if (request.method, path) == ("POST", "/plans/p_1/pause"):  # e.g. a proxy in between
            return web.Response(status=502, reason="Bad Gateway", text="<html>bad gateway</html>")
        if (request.method, path) == ("PATCH", "/plans/p_1"):
            return web.json_response(PLAN)
        if request.method == "POST" and path.startswith("/plans/p_1/snapshots/"):
            return web.json_response({"id": "j_2", "kind": "restore", "status": "completed"}, status=202)
        return web.json_response({"error": {"code": "not_found", "message": "nope"}}, status=404)


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[tuple[Stub, Path]]:
    s = Stub()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", s.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    data = tmp_path / "data"
    data.mkdir()
    (data / "gateway.json").write_text(json.dumps({"url": f"http://127.0.0.1:{port}", "token": TOKEN}))
    yield s, data
    await runner.cleanup()


async def run(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def test_plan_show_json_and_list(stub: tuple[Stub, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, data = stub
    assert await run("plan", "show", "Photos", "--json", "--data-dir", str(data)) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["total_size"] == 2048 and shown["snapshots"][0]["status"] == "completed"
    assert await run("plan", "list", "--data-dir", str(data)) == 0
    assert "Photos" in capsys.readouterr().out


async def test_plan_create_sends_the_api_shape(stub: tuple[Stub, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    s, data = stub
    pw = tmp_path / "pw"
    pw.write_text("s3cret pass\n")
    src = tmp_path / "src"
    src.mkdir()
    rc = await run("plan", "create", "Docs", "--source", str(src), "--weekly", "friday", "--at", "21:05",
                   "--location", str(tmp_path / "loc"), "--timezone", "Europe/Berlin", "--password-file", str(pw),
                   "--data-dir", str(data))
    assert rc == 0, capsys.readouterr().err
    method, path, body = s.requests[-1]
    assert (method, path) == ("POST", "/plans")
    assert body == {"name": "Docs", "sources": [str(src)], "password": "s3cret pass",
                    "password_confirm": "s3cret pass",
                    "schedule": {"frequency": "weekly", "time": "21:05", "weekday": 5, "timezone": "Europe/Berlin"},
                    "location": {"type": "local", "path": str(tmp_path / "loc")}}
    # Duplicate name: one clear line from the API's error, non-zero exit.
    rc = await run("plan", "create", "Photos", "--source", str(src), "--daily", "--at", "01:00",
                   "--location", str(tmp_path / "loc2"), "--password-file", str(pw), "--data-dir", str(data))
    err = capsys.readouterr().err
    assert rc == 1 and err.strip() == "timevault: error: a plan named 'Photos' already exists (name)"


async def test_short_password_and_missing_day(stub: tuple[Stub, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    _, data = stub
    pw = tmp_path / "pw"
    pw.write_text("abc\n")
    rc = await run("plan", "create", "X", "--source", str(tmp_path), "--daily", "--at", "01:00",
                   "--location", "/elsewhere", "--password-file", str(pw), "--data-dir", str(data))
    err = capsys.readouterr().err
    assert rc == 2 and "at least 4" in err and "Traceback" not in err  # a value given is not acceptable
    # argparse: --weekly needs DAY; a usage error, with the usage first
    assert await run("plan", "create", "X", "--source", "/a", "--weekly", "--at", "01:00", "--location", "/b") == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: timevault plan create")
    assert err.splitlines()[-1] == "timevault plan create: error: argument --weekly: expected one argument"


async def test_backup_wait_exit_code_follows_the_job(stub: tuple[Stub, Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    _, data = stub
    assert await run("backup", "Photos", "--wait", "--data-dir", str(data)) == 1
    assert "disk full" in capsys.readouterr().err


_PROGRESS = ("progress", {"job_id": "j_1", "bytes_done": 5, "bytes_total": 10, "files_done": 1, "files_total": 2})


async def test_backup_wait_ends_on_the_jobs_final_event(stub: tuple[Stub, Path],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    s, data = stub
    s.job_statuses = ["running", "completed"]
    s.events = [_PROGRESS, ("job", {"job": {"id": "j_1", "status": "completed"}}),
                _PROGRESS]  # anything after the final event is not waited for
    assert await run("backup", "Photos", "--wait", "--json", "--data-dir", str(data)) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "completed"
    # One stream; one GET once it was open (the job might have ended before), one for the result.
    assert [p for m, p, _ in s.requests if p.startswith(("/events", "/jobs"))] == ["/events", "/jobs/j_1", "/jobs/j_1"]


async def test_backup_wait_survives_a_dropped_event_stream(stub: tuple[Stub, Path],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    s, data = stub
    s.job_statuses = ["running", "running", "running", "completed"]
    s.events = [_PROGRESS]  # then the stream ends without the job's final event
    assert await run("backup", "Photos", "--wait", "--json", "--data-dir", str(data)) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "completed"
    # Each dropped stream: a GET, then a new stream, until a GET finds the job ended.
    assert [p for m, p, _ in s.requests if p.startswith(("/events", "/jobs"))] == \
        ["/events", "/jobs/j_1", "/jobs/j_1", "/events", "/jobs/j_1", "/jobs/j_1"]


async def test_restore_sends_password_in_body_only(stub: tuple[Stub, Path], tmp_path: Path) -> None:
    s, data = stub
    pw = tmp_path / "pw"
    pw.write_text("s3cret pass\n")
    rc = await run("restore", "Photos", "latest", "--target", str(tmp_path / "out"), "--include", "/data/a",
                   "--password-file", str(pw), "--wait", "--data-dir", str(data))
    assert rc == 0
    method, path, body = s.requests[-1]
    assert (method, path) == ("POST", "/plans/p_1/snapshots/latest/restore")
    assert body == {"target": str(tmp_path / "out"), "includes": ["/data/a"], "password": "s3cret pass"}


async def test_not_running_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run("plan", "list", "--data-dir", str(tmp_path)) == 1
    assert capsys.readouterr().err.count("\n") == 1


async def test_gateway_errors_keep_their_code(stub: tuple[Stub, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    _, data = stub
    pw = tmp_path / "pw"
    pw.write_text("s3cret pass\n")
    (tmp_path / "src").mkdir()
    rc = await run("plan", "create", "Photos", "--source", str(tmp_path / "src"), "--daily", "--at", "01:00",
                   "--location", str(tmp_path / "loc"), "--password-file", str(pw), "--data-dir", str(data), "--json")
    assert rc == 1
    assert json.loads(capsys.readouterr().out) == {
        "error": {"code": "conflict", "message": "a plan named 'Photos' already exists (name)"}}
    # An error reply that is not the API's JSON: its status says what it was.
    assert await run("plan", "pause", "Photos", "--json", "--data-dir", str(data)) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"error": {"code": "internal", "message": "gateway answered HTTP 502 Bad Gateway"}}
    assert captured.err == "timevault: error: gateway answered HTTP 502 Bad Gateway\n"
    # A job that failed while --wait followed it: exit 1, the error object carries the job.
    assert await run("backup", "Photos", "--wait", "--json", "--data-dir", str(data)) == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["code"] == "job_failed" and error["job"]["error"] == "disk full"
async def test_plan_options_flags_become_api_fields(stub: tuple[Stub, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    s, data = stub
    pw = tmp_path / "pw"
    pw.write_text("s3cret pass\n")
    src = tmp_path / "src"
    src.mkdir()
    rc = await run("plan", "create", "Db", "--source", str(src), "--daily", "--at", "01:00",
                   "--location", str(tmp_path / "loc"), "--timezone", "Etc/UTC", "--password-file", str(pw),
                   "--exclude", "*.tmp", "--exclude", "cache/", "--exclude-file", "ex.txt", "--one-file-system",
                   "--no-exclude-caches", "--pre-command", "pg_dump db > dump.sql", "--pre-command-optional",
                   "--post-command", "rm dump.sql", "--hook-timeout", "30",
                   "--notify", "https://hooks.example/a", "--notify", "http://127.0.0.1:9/b", "--notify-success",
                   "--data-dir", str(data))
    assert rc == 0, capsys.readouterr().err
    body = s.requests[-1][2]
    assert body["schedule"]["timezone"] == "UTC"  # one name for UTC
    assert {k: body[k] for k in ("excludes", "exclude_files", "one_file_system", "exclude_caches", "pre_command",
                                 "pre_command_optional", "post_command", "hook_timeout", "notify",
                                 "notify_success")} == {
        "excludes": ["*.tmp", "cache/"], "exclude_files": [os.path.abspath("ex.txt")], "one_file_system": True,
        "exclude_caches": False, "pre_command": "pg_dump db > dump.sql", "pre_command_optional": True,
        "post_command": "rm dump.sql", "hook_timeout": 30,
        "notify": ["https://hooks.example/a", "http://127.0.0.1:9/b"], "notify_success": True}
    # Defaults are not sent at all.
    rc = await run("plan", "create", "Plain", "--source", str(src), "--daily", "--at", "01:00",
                   "--location", str(tmp_path / "loc3"), "--password-file", str(pw), "--data-dir", str(data))
    assert rc == 0
    assert set(s.requests[-1][2]) == {"name", "sources", "schedule", "location", "password", "password_confirm"}
    # A bad URL is refused before anything is sent.
    before = len(s.requests)
    rc = await run("plan", "create", "Bad", "--source", str(src), "--daily", "--at", "01:00",
                   "--location", str(tmp_path / "loc4"), "--password-file", str(pw), "--notify", "ftp://x",
                   "--data-dir", str(data))
    assert rc == 2 and "notification URL" in capsys.readouterr().err and len(s.requests) == before
    # An update sends only what it names; '' removes a hook.
    rc = await run("plan", "update", "Photos", "--pre-command", "", "--no-notify", "--any-file-system",
                   "--data-dir", str(data))
    assert rc == 0, capsys.readouterr().err
    assert s.requests[-1] == ("PATCH", "/plans/p_1", {"pre_command": "", "notify": [], "one_file_system": False})


async def test_plan_show_speaks_like_the_ui(stub: tuple[Stub, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """Decimal sizes as in the web UI, times with seconds and a zone, natural plurals."""
    import re

    _, data = stub
    assert await run("plan", "show", "Photos", "--data-dir", str(data)) == 0
    out = capsys.readouterr().out
    assert "total size: 2.0 KB" in out  # 2048 bytes, as the UI says it (not "2.0 KiB")
    [row] = [line for line in out.splitlines() if line.startswith("  abababab")]
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+", row), row
    assert "1 file" in row and "10 bytes" in row and "+   5 bytes" in row
    assert "excludes:   -  [CACHEDIR.TAG folders skipped]" in out and "notify:     -" in out
