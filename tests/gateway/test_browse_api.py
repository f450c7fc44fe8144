"""Browsing through the services: unlock, ls, diff, find, restore chosen items, lock — over HTTP
and with `timevault ls|diff|find`, on snapshots with thousands of files."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.gateway.conftest import PASSWORD, Stack, plan_body, wait_job
from tests.gateway.test_api import expect_error

pytestmark = pytest.mark.timeout(240)

FILES = 2500
HEADER = "X-Timevault-Session"


@dataclass
class Browsable:
    plan: dict[str, Any]
    src: Path
    snapshots: list[str]


async def backup_now(http: aiohttp.ClientSession, plan_id: str) -> str:
    async with http.post(f"/api/v1/plans/{plan_id}/backups") as resp:
        assert resp.status == 202, await resp.text()
        job = await resp.json()
    done = await wait_job(http, job["id"], 120)
    assert done["status"] == "completed", done
    return str(done["snapshot_id"])


@pytest.fixture(scope="module")
async def browsable(app_url: str, stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Browsable:
    base = tmp_path_factory.mktemp("browse")
    src = base / "Home"
    (src / "many").mkdir(parents=True)
    for i in range(FILES):
        (src / "many" / f"file{i:05d}.txt").write_bytes(b"%d" % i)
    (src / "notes.txt").write_text("first notes")
    (src / "photos").mkdir()
    (src / "photos" / "cat.jpg").write_bytes(b"\x89cat" * 100)
    (src / "build").mkdir()
    (src / "build" / "out.o").write_text("object")
    (src / "scratch.tmp").write_text("tmp")
    async with aiohttp.ClientSession(app_url, headers=stack.headers) as http:
        body = plan_body("browse-me", src, base / "vault", excludes=["*.tmp", "build/"])
        async with http.post("/api/v1/plans", json=body) as resp:
            assert resp.status == 201, await resp.text()
            plan = await resp.json()
        first = await backup_now(http, plan["id"])
        (src / "notes.txt").write_text("second notes, longer")
        (src / "photos" / "dog.jpg").write_bytes(b"dog")
        (src / "many" / "file00000.txt").unlink()
        second = await backup_now(http, plan["id"])
    return Browsable(plan, src, [first, second])


async def unlock(http: aiohttp.ClientSession, plan_id: str, **extra: Any) -> dict[str, str]:
    async with http.post(f"/api/v1/plans/{plan_id}/unlock", json={"password": PASSWORD, **extra}) as resp:
        assert resp.status == 201, await resp.text()
        session = await resp.json()
    assert set(session) == {"session", "plan_id", "expires_at", "idle_timeout"}
    assert session["plan_id"] == plan_id and session["idle_timeout"] == extra.get("idle_timeout", 600)
    return {HEADER: session["session"]}


async def test_plan_excludes_left_out_and_shown(http: aiohttp.ClientSession, browsable: Browsable) -> None:
    assert browsable.plan["excludes"] == ["*.tmp", "build/"] and browsable.plan["exclude_caches"] is True
    headers = await unlock(http, browsable.plan["id"])
    async with http.get(f"/api/v1/plans/{browsable.plan['id']}/snapshots/latest/ls",
                        params={"path": str(browsable.src)}, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        names = [e["name"] for e in (await resp.json())["entries"]]
    assert names == ["many", "notes.txt", "photos"]  # no build/, no scratch.tmp


async def test_unlock_list_diff_find_lock(http: aiohttp.ClientSession, browsable: Browsable) -> None:
    plan_id, src = browsable.plan["id"], browsable.src
    async with http.post(f"/api/v1/plans/{plan_id}/unlock", json={"password": "wrong horse"}) as resp:
        await expect_error(resp, 401, "unauthorized", "password")
    async with http.post(f"/api/v1/plans/{plan_id}/unlock", json={"password": PASSWORD, "idle_timeout": 5}) as resp:
        await expect_error(resp, 400, "invalid", "idle_timeout")
    ls = f"/api/v1/plans/{plan_id}/snapshots/{browsable.snapshots[0]}/ls"
    async with http.get(ls, params={"path": str(src)}) as resp:
        await expect_error(resp, 401, "unauthorized", "session")
    headers = await unlock(http, plan_id)

    started = time.perf_counter()
    async with http.get(ls, params={"path": f"{src}/many"}, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        listing = await resp.json()
    assert time.perf_counter() - started < 5
    assert listing["snapshot"] == browsable.snapshots[0] and listing["path"] == f"{src}/many"
    assert listing["total"] == FILES and len(listing["entries"]) == FILES
    assert listing["entries"][17] == {"name": "file00017.txt", "path": f"{src}/many/file00017.txt", "type": "file",
                                      "size": 2, "mode": listing["entries"][17]["mode"],
                                      "mtime": listing["entries"][17]["mtime"], "target": None}
    async with http.get(ls, params={"path": f"{src}/nope"}, headers=headers) as resp:
        await expect_error(resp, 404, "not_found", "path")
    async with http.get(ls, params={"path": "relative"}, headers=headers) as resp:
        await expect_error(resp, 400, "invalid", "path")

    async with http.get(f"/api/v1/plans/{plan_id}/diff", params={"from": browsable.snapshots[0][:10]},
                        headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        diff = await resp.json()
    assert diff["from_snapshot"] == browsable.snapshots[0] and diff["to_snapshot"] == browsable.snapshots[1]
    assert [c["path"] for c in diff["added"]] == [f"{src}/photos/dog.jpg"]
    assert [c["path"] for c in diff["removed"]] == [f"{src}/many/file00000.txt"]
    assert [(c["path"], c["what"], c["old_size"], c["size"]) for c in diff["changed"]] == [
        (f"{src}/notes.txt", "content", 11, 20)]
    assert diff["added_size"] == 3

    async with http.get(f"/api/v1/plans/{plan_id}/find", params={"pattern": "*.jpg"}, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        found = await resp.json()
    assert [(m["path"], len(m["versions"])) for m in found["matches"]] == [
        (f"{src}/photos/cat.jpg", 2), (f"{src}/photos/dog.jpg", 1)]
    assert found["matches"][0]["versions"][0]["size"] == 400 and found["truncated"] is False

    async with http.get(f"/api/v1/plans/{plan_id}/session", headers=headers) as resp:
        assert resp.status == 200
    async with http.post(f"/api/v1/plans/{plan_id}/lock", headers=headers) as resp:
        assert resp.status == 200 and await resp.json() == {"locked": True}
    async with http.get(ls, params={"path": str(src)}, headers=headers) as resp:
        await expect_error(resp, 401, "unauthorized", "session")
    async with http.get(ls, params={"path": str(src)}, headers={HEADER: "restorer-x-1.forged"}) as resp:
        await expect_error(resp, 401, "unauthorized", "session")
    async with http.get(ls, params={"path": str(src)}, headers={HEADER: "no dot here"}) as resp:
        await expect_error(resp, 401, "unauthorized", "session")


async def test_a_session_opens_only_its_own_plan(http: aiohttp.ClientSession, browsable: Browsable,
                                                 tmp_path: Path) -> None:
    other_src = tmp_path / "other"
    other_src.mkdir()
    async with http.post("/api/v1/plans", json=plan_body("browse-other", other_src, tmp_path / "v")) as resp:
        other = await resp.json()
    headers = await unlock(http, browsable.plan["id"])
    async with http.get(f"/api/v1/plans/{other['id']}/find", params={"pattern": "notes"}, headers=headers) as resp:
        await expect_error(resp, 401, "unauthorized", "session")
    async with http.get(f"/api/v1/plans/{browsable.plan['name']}/find", params={"pattern": "notes"},
                        headers=headers) as resp:
        assert resp.status == 200  # by name works as well


async def test_restore_items_back_to_their_place_and_into_a_folder(
        http: aiohttp.ClientSession, browsable: Browsable, tmp_path: Path) -> None:
    plan_id, src = browsable.plan["id"], browsable.src
    headers = await unlock(http, plan_id)
    url = f"/api/v1/plans/{plan_id}/snapshots/{browsable.snapshots[0]}/restore-items"
    (src / "photos" / "cat.jpg").unlink()  # gone: comes back as it was
    assert (src / "notes.txt").read_text() == "second notes, longer"  # there: kept, the old one beside it
    async with http.post(url, json={"paths": [f"{src}/notes.txt", f"{src}/photos/cat.jpg"]}, headers=headers) as resp:
        assert resp.status == 202, await resp.text()
        job = await resp.json()
    assert job["kind"] == "restore" and job["original_place"] is True
    done = await wait_job(http, job["id"])
    assert done["status"] == "completed", done
    assert (src / "photos" / "cat.jpg").read_bytes() == b"\x89cat" * 100
    assert (src / "notes.txt").read_text() == "second notes, longer"
    beside = [p for p in src.iterdir() if p.name.startswith("notes (restored ")]
    assert len(beside) == 1 and beside[0].read_text() == "first notes" and beside[0].suffix == ".txt"
    async with http.get(f"/api/v1/jobs/{job['id']}/log") as resp:
        lines = [e["message"] for e in await resp.json()]
    assert any("kept what is there" in line and beside[0].name in line for line in lines), lines
    beside[0].unlink()

    target = tmp_path / "Picked"
    async with http.post(url, json={"paths": [f"{src}/photos"], "target": str(target)}, headers=headers) as resp:
        assert resp.status == 202, await resp.text()
        job = await resp.json()
    assert (await wait_job(http, job["id"]))["status"] == "completed"
    assert sorted(os.listdir(target / "photos")) == ["cat.jpg"]
    async with http.post(url, json={"paths": [f"{src}/photos"], "target": "/etc"}, headers=headers) as resp:
        await expect_error(resp, 400, "invalid", "target")
    async with http.post(url, json={"paths": ["relative/path"]}, headers=headers) as resp:
        await expect_error(resp, 400, "invalid", "paths")
    async with http.post(url, json={"paths": [f"{src}/nope.txt"]}, headers=headers) as resp:
        await expect_error(resp, 404, "not_found", "path")
    async with http.post(url, json={"paths": [f"{src}/notes.txt"]}) as resp:
        await expect_error(resp, 401, "unauthorized", "session")


def cli(stack: Stack, *args: str, password_file: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TIMEVAULT_URL": stack.url, "TIMEVAULT_TOKEN": stack.token}
    return subprocess.run([sys.executable, "-m", "timevault.cli.main", *args, "--password-file", str(password_file)],
                          capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)


async def test_cli_ls_diff_find(stack: Stack, browsable: Browsable, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    name, src = browsable.plan["name"], browsable.src
    result = await asyncio.to_thread(cli, stack, "ls", name, "latest", f"{src}/many", "--json", password_file=pw)
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert listing["total"] == FILES - 1 and len(listing["entries"]) == FILES - 1
    result = await asyncio.to_thread(cli, stack, "ls", name, browsable.snapshots[0][:12], str(src), password_file=pw)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"{src}: 2 folders, 1 file, 11 bytes"
    result = await asyncio.to_thread(cli, stack, "diff", name, browsable.snapshots[0], "latest", password_file=pw)
    assert result.returncode == 0, result.stderr
    assert f"+ {src}/photos/dog.jpg (3 bytes)" in result.stdout
    assert f"M {src}/notes.txt (11 bytes → 20 bytes)" in result.stdout
    result = await asyncio.to_thread(cli, stack, "find", name, "file0000?.txt", "--json", password_file=pw)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert len(found["matches"]) == 10
    assert [len(m["versions"]) for m in found["matches"]][:2] == [1, 2]  # file00000.txt is only in the first
    bad = tmp_path / "bad"
    bad.write_text("wrong horse\n")
    result = await asyncio.to_thread(cli, stack, "ls", name, "latest", password_file=bad)
    assert result.returncode == 12 and "wrong password" in result.stderr and "Traceback" not in result.stderr


async def test_folder_picker_lists_folders_under_the_roots(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    async with http.get("/api/v1/folders") as resp:
        assert resp.status == 200, await resp.text()
        roots = await resp.json()
    assert roots["path"] is None and roots["roots"] and roots["folders"][0]["path"] == roots["roots"][0]
    (tmp_path / "Pictures" / "2024").mkdir(parents=True)
    (tmp_path / "Music").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "file.txt").write_text("not a folder")
    (tmp_path / "escape").symlink_to("/etc")
    async with http.get("/api/v1/folders", params={"path": str(tmp_path)}) as resp:
        assert resp.status == 200, await resp.text()
        listing = await resp.json()
    assert [f["name"] for f in listing["folders"]] == ["Music", "Pictures", ".hidden"]  # no files, no symlinks
    assert listing["parent"] == str(tmp_path.parent) and listing["truncated"] is False
    async with http.get("/api/v1/folders", params={"path": str(tmp_path / "escape")}) as resp:
        await expect_error(resp, 404, "not_found", "path")
    async with http.get("/api/v1/folders", params={"path": "/etc"}) as resp:
        await expect_error(resp, 404, "not_found", "path")
    async with http.get("/api/v1/folders", params={"path": str(tmp_path / "file.txt")}) as resp:
        await expect_error(resp, 400, "invalid", "path")
    async with http.get("/api/v1/folders", params={"path": "relative"}) as resp:
        await expect_error(resp, 400, "invalid", "path")
