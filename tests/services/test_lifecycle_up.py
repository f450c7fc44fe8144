"""A year of backups, end to end as a user runs it: `timevault up`, then the command line.

`plan create --keep-last 2`, several backups with `--wait`: the plan keeps two snapshots (each
saying which rule keeps it), the location holds less than the backups added, `plan prune
--wait --json` reports what it did, `repo check --read-data` finds nothing wrong and every
kept snapshot restores byte for byte. Also an hourly and a monthly schedule, and a location
that contains the source, refused before any password is asked for.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.services.conftest import ROOT

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]
MiB = 1024 * 1024


async def cli(*argv: str | Path, data: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEVAULT_")}
    env["PYTHONPATH"] = str(ROOT)
    args = [str(a) for a in argv] + (["--data-dir", str(data)] if data else [])
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", "import sys; from timevault.cli.main import main; sys.exit(main(sys.argv[1:]))", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def wait_quiet(data: Path, name: str) -> None:
    """Until the plan has no job pending or running (the prune after a backup included)."""
    deadline = time.monotonic() + 90
    while True:
        shown = json.loads((await cli("plan", "show", name, "--json", data=data)).stdout)
        info = json.loads((data / "gateway.json").read_text())
        req = urllib.request.Request(f"{info['url']}/api/v1/plans/{shown['id']}/jobs?active=true",
                                     headers={"Authorization": f"Bearer {info['token']}"})
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: ASYNC210 - a test's short poll
            if not json.loads(resp.read()):
                return
        assert time.monotonic() < deadline, "jobs still running"
        await asyncio.sleep(0.3)


async def test_keep_last_two_through_timevault_up(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEVAULT_")}
    env["PYTHONPATH"] = str(ROOT)
    up = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child we signal, not awaited output
        [sys.executable, "-c", "import sys; from timevault.cli.main import main; sys.exit(main(sys.argv[1:]))",
         "up", "--data-dir", str(data), "--listen", "127.0.0.1:0"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (data / "gateway.json").exists():
            assert up.poll() is None, up.stderr.read().decode() if up.stderr else ""
            assert time.monotonic() < deadline, "timevault up did not start"
            await asyncio.sleep(0.2)
        await run_the_year(data, tmp_path)
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0


async def run_the_year(data: Path, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("year password\n")
    source = tmp_path / "home" / "docs"
    source.mkdir(parents=True)
    (source / "letter.txt").write_text("dear future\n")
    vault = tmp_path / "vault"

    # A location that contains the source is refused, naming the field, before a password is asked for.
    parent = await cli("plan", "create", "Docs", "--source", source, "--daily", "--at", "03:00",
                       "--location", tmp_path / "home", "--password-file", pw, "--json", data=data)
    assert parent.returncode == 2, parent.stderr
    assert json.loads(parent.stdout)["error"]["code"] == "invalid" and "contain the source" in parent.stderr

    made = await cli("plan", "create", "Docs", "--source", source, "--hourly", "--at", ":15", "--location", vault,
                     "--timezone", "Europe/Berlin", "--keep-last", "2", "--password-file", pw, "--json", data=data)
    assert made.returncode == 0, made.stderr
    plan = json.loads(made.stdout)
    assert plan["schedule"]["frequency"] == "hourly" and plan["schedule"]["time"] == ":15"
    assert plan["retention"]["policy"] == "custom" and plan["retention"]["keep_last"] == 2

    states: dict[str, dict[str, bytes]] = {}
    added = 0
    for i in range(4):
        for old in source.glob("*.bin"):
            old.unlink()
        (source / f"week-{i}.bin").write_bytes(os.urandom(2 * MiB))
        done = await cli("backup", "Docs", "--wait", "--json", data=data)
        assert done.returncode == 0, done.stderr
        job = json.loads(done.stdout)
        states[job["snapshot_id"]] = tree(source)
        added += job["added_size"]
        await wait_quiet(data, "Docs")

    shown = await cli("plan", "show", "Docs", "--json", data=data)
    detail = json.loads(shown.stdout)
    kept = [snap for snap in detail["snapshots"] if snap["status"] == "completed"]
    assert len(kept) == 2 and all(snap["kept_by"] == ["last"] for snap in kept), kept
    assert added > 8 * MiB and folder_bytes(vault) < 6 * MiB
    text = await cli("plan", "show", "Docs", data=data)
    assert "retention:  keep-last 2" in text.stdout and "kept by: last" in text.stdout

    pruned = await cli("plan", "prune", "Docs", "--wait", "--json", data=data)
    assert pruned.returncode == 0, pruned.stderr
    report = json.loads(pruned.stdout)
    assert report["kind"] == "prune" and report["status"] == "completed"
    assert report["prune"]["forgotten"] == [] and sorted(report["prune"]["kept_by"]) == sorted(s["id"] for s in kept)

    changed = await cli("plan", "update", "Docs", "--monthly", "31", "--at", "02:00", "--retention", "timemachine",
                        "--json", data=data)
    assert changed.returncode == 0, changed.stderr
    updated = json.loads(changed.stdout)
    assert updated["schedule"]["day_of_month"] == 31 and updated["retention"]["policy"] == "timemachine"

    checked = await cli("repo", "check", vault, "--read-data", "--password-file", pw)
    assert checked.returncode == 0 and "no errors found" in checked.stdout, checked.stdout + checked.stderr
    for snap in kept:
        target = tmp_path / f"restore-{snap['id'][:8]}"
        restored = await cli("repo", "restore", vault, snap["id"], "--target", target, "--password-file", pw)
        assert restored.returncode == 0, restored.stderr
        assert tree(target / str(source).lstrip("/")) == states[snap["id"]]

    # Delete removes the plan's objects and leaves a foreign file next to them.
    (vault / "README.txt").write_text("not TimeVault's\n")
    deleted = await cli("plan", "delete", "Docs", "--yes", data=data)
    assert deleted.returncode == 0, deleted.stderr
    assert sorted(os.listdir(vault)) == ["README.txt"]
    assert (source / "letter.txt").read_text() == "dear future\n"
