"""`timevault up`: one command starts NATS and every service; SIGTERM stops them all cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import nats
import pytest

from tests.services.conftest import ROOT
from tests.services.helpers import discover
from timevault.cli.up import gateway_available
from timevault.proto import subjects
from timevault.proto.errors import ServiceError
from timevault.proto.plans import PlanList, PlanListRequest
from timevault.services.common import rpc

pytestmark = pytest.mark.timeout(90)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


async def test_up_runs_everything_and_stops_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child we signal, not awaited output
        [sys.executable, "-c", "import sys; from timevault.cli.main import main; sys.exit(main(sys.argv[1:]))",
         "up", "--data-dir", str(data), "--listen", "127.0.0.1:0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    info_path = data / "gateway.json"
    try:
        deadline = time.monotonic() + 30
        while not info_path.exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "gateway.json not written"
            await asyncio.sleep(0.1)
        assert stat.S_IMODE(info_path.stat().st_mode) == 0o600
        if gateway_available():
            # gateway.json appears only once the system answers: the very first command works.
            first = await _cli("plan", "list", "--json", "--data-dir", str(data))
            assert first.returncode == 0, first.stderr
        info = json.loads(info_path.read_text())
        assert info["url"].startswith("http://") and len(info["token"]) >= 32
        children = _children(proc.pid)
        assert len(children) >= 6  # nats-server + five services (+ gateway when present)

        # gateway.json's NATS identity is the operator's: discovery and events, no service request.
        nc = await nats.connect(info["nats"], inbox_prefix=info["nats_inbox_prefix"])
        try:
            names: set[str] = set()
            deadline = time.monotonic() + 20
            while not {"catalog", "scheduler", "snapshotter", "uploader", "restorer"} <= names:
                assert time.monotonic() < deadline, names
                names |= {ping["name"] for ping in await discover(nc, "PING")}
            with pytest.raises(ServiceError):
                await rpc.request(nc, subjects.PLAN_LIST, PlanListRequest(), PlanList, timeout=1)
        finally:
            await nc.close()
        if gateway_available():
            await _cli_through_gateway(data, tmp_path)
        assert (data / "catalog.db").exists() and (data / "nats" / "jetstream").is_dir()
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    assert rc == 0, proc.stderr.read().decode() if proc.stderr else ""
    for child in children:
        with pytest.raises(ProcessLookupError):
            os.kill(child, 0)
    assert not info_path.exists()


async def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", "import sys; from timevault.cli.main import main; sys.exit(main(sys.argv[1:]))", *argv],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


async def _cli_through_gateway(data: Path, tmp_path: Path) -> None:
    """The CLI contract end to end: create, back up, change, back up, show --json, restore each."""
    deadline = time.monotonic() + 20
    while (result := await _cli("plan", "list", "--data-dir", str(data))).returncode != 0:
        assert time.monotonic() < deadline, result.stderr
        await asyncio.sleep(0.3)
    src = tmp_path / "cli-src"
    src.mkdir()
    (src / "a.txt").write_text("first\n")
    pw = tmp_path / "pw"
    pw.write_text("cli password\n")
    pw.chmod(0o600)
    d = ("--data-dir", str(data))
    r = await _cli("plan", "create", "cli plan", "--source", str(src), "--weekly", "sunday", "--at", "04:00",
                   "--location", str(tmp_path / "cli-repo"), "--timezone", "Europe/Berlin", "--password-file",
                   str(pw), *d)
    assert r.returncode == 0, r.stderr
    r = await _cli("plan", "create", "cli plan", "--source", str(src), "--daily", "--at", "04:00",
                   "--location", str(tmp_path / "cli-repo2"), "--password-file", str(pw), *d)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert (await _cli("backup", "cli plan", "--wait", *d)).returncode == 0
    (src / "a.txt").write_text("second\n")
    assert (await _cli("backup", "cli plan", "--wait", *d)).returncode == 0
    r = await _cli("plan", "show", "cli plan", "--json", *d)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["name"] == "cli plan" and shown["schedule"]["weekday"] == 7
    snaps = shown["snapshots"]
    assert [s["status"] for s in snaps] == ["completed", "completed"]
    for key in ("id", "started_at", "finished_at", "size", "added_size", "files", "status"):
        assert key in snaps[0]
    for snap, expected in zip(snaps, ("first\n", "second\n"), strict=True):
        out = tmp_path / f"cli-out-{snap['id'][:8]}"
        r = await _cli("restore", "cli plan", snap["id"], "--target", str(out), "--password-file", str(pw),
                       "--wait", *d)
        assert r.returncode == 0, r.stderr
        assert next(out.rglob("a.txt")).read_text() == expected
    r = await _cli("plan", "delete", "cli plan", "--yes", *d)
    assert r.returncode == 0, r.stderr
    assert not [p for p in (tmp_path / "cli-repo").rglob("*") if p.is_file()]
