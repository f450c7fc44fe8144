"""A new machine attaches an existing repository: `timevault plan attach` through `timevault up`.

Machine A (data dir 1) creates a plan and backs up twice, then stops. Machine B (a fresh data dir,
so a new catalog) attaches the same location with the password: it sees both snapshots with their
sizes, restores each byte for byte, refuses a wrong password, and its next backup is incremental.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.services.conftest import ROOT
from timevault.cli.up import gateway_available

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not gateway_available(), reason="the CLI needs timevault.services.gateway"),
]
PLAN = "laptop"
CLI = "import sys; from timevault.cli.main import main; sys.exit(main(sys.argv[1:]))"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


async def cli(data: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", CLI, *argv, "--data-dir", str(data)],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60)


async def cli_ok(data: Path, *argv: str) -> str:
    result = await cli(data, *argv)
    assert result.returncode == 0, f"timevault {' '.join(argv)}: {result.stderr}"
    return result.stdout


@asynccontextmanager
async def timevault_up(data: Path) -> AsyncIterator[None]:
    """`timevault up` with its own data dir, ready to answer the CLI; stopped with SIGTERM."""
    proc = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child we signal, not awaited output
        [sys.executable, "-c", CLI, "up", "--data-dir", str(data), "--listen", "127.0.0.1:0"],
        cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while (await cli(data, "plan", "list", "--json")).returncode != 0:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "timevault up did not become ready"
            await asyncio.sleep(0.3)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def restored_tree(out: Path, source: Path) -> dict[str, bytes]:
    """The restored copy of `source` (restores keep the source's path below the target)."""
    roots = [p for p in out.rglob(source.name) if p.is_dir()]
    assert len(roots) == 1, f"restored {source.name} not found once in {out}: {roots}"
    return tree(roots[0])


def make_source(src: Path) -> None:
    src.mkdir()
    (src / "docs").mkdir()
    for i in range(20):
        (src / "docs" / f"note-{i}.txt").write_text(f"note {i}\n" * (50 + i))
    (src / "photo.bin").write_bytes(os.urandom(3 * 1024 * 1024))  # several chunks, incompressible


async def test_attach_existing_repository_on_a_new_machine(tmp_path: Path) -> None:
    src, repo = tmp_path / "attach-src", tmp_path / "repo"
    make_source(src)
    pw, wrong = tmp_path / "pw", tmp_path / "wrong"
    pw.write_text("attach password\n")
    wrong.write_text("not the password\n")
    for f in (pw, wrong):
        f.chmod(0o600)
    machine_a, machine_b = tmp_path / "data-a", tmp_path / "data-b"
    schedule = ("--daily", "--at", "03:00", "--timezone", "UTC")

    # Machine A: create, back up, change the files, back up again.
    states: list[dict[str, bytes]] = []
    async with timevault_up(machine_a):
        await cli_ok(machine_a, "plan", "create", PLAN, "--source", str(src), "--location", str(repo),
                     *schedule, "--password-file", str(pw))
        await cli_ok(machine_a, "backup", PLAN, "--wait")
        states.append(tree(src))
        (src / "docs" / "note-3.txt").write_text("rewritten\n")
        (src / "docs" / "new.txt").write_text("added on the second day\n")
        (src / "docs" / "note-7.txt").unlink()
        await cli_ok(machine_a, "backup", PLAN, "--wait")
        states.append(tree(src))
        plan_a = json.loads(await cli_ok(machine_a, "plan", "show", PLAN, "--json"))
        before = plan_a["snapshots"]
    assert [s["status"] for s in before] == ["completed", "completed"]

    # Machine B: a fresh catalog that knows nothing about the plan.
    async with timevault_up(machine_b):
        refused = await cli(machine_b, "plan", "attach", PLAN, "--location", str(repo), *schedule,
                            "--password-file", str(wrong))
        assert refused.returncode == 12  # wrong password
        assert "wrong password" in refused.stderr and "Traceback" not in refused.stderr
        assert json.loads(await cli_ok(machine_b, "plan", "list", "--json")) == []

        attached = json.loads(await cli_ok(machine_b, "plan", "attach", PLAN, "--location", str(repo), *schedule,
                                           "--password-file", str(pw), "--json"))
        assert attached["sources"] == [str(src)]  # taken from the latest snapshot
        # Same plan id as on machine A: the archiver finds its parent snapshot by plan id.
        assert attached["id"] == plan_a["id"]
        shown = json.loads(await cli_ok(machine_b, "plan", "show", PLAN, "--json"))
        snaps = shown["snapshots"]
        assert [s["id"] for s in snaps] == [s["id"] for s in before]
        for got, had in zip(snaps, before, strict=True):
            assert got["status"] == "completed" and got["size"] > 0
            assert (got["size"], got["added_size"], got["files"]) == (had["size"], had["added_size"], had["files"])
        assert shown["total_size"] > 0

        for snap, expected in zip(snaps, states, strict=True):
            out = tmp_path / f"restore-{snap['id'][:12]}"
            await cli_ok(machine_b, "restore", PLAN, snap["id"], "--target", str(out), "--password-file", str(pw),
                         "--wait")
            assert restored_tree(out, src) == expected

        # Nothing changed since machine A's last backup: only a new snapshot manifest, no data.
        await cli_ok(machine_b, "backup", PLAN, "--wait")
        after = json.loads(await cli_ok(machine_b, "plan", "show", PLAN, "--json"))["snapshots"]
        assert len(after) == 3 and after[-1]["status"] == "completed"
        assert after[-1]["size"] == snaps[-1]["size"]
        assert after[-1]["added_size"] < 0.01 * snaps[0]["added_size"], after[-1]
