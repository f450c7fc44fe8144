"""kill -9 of every part of `timevault up`, at three moments each, while `--wait` follows the job.

Parts: nats-server, catalog, snapshotter, uploader and gateway during a backup, the restorer
during a restore, and the whole `up` process group. Moments are exact (the services hold at
named points, `timevault.services.common.holds`): a backup just claimed (``backup.start``), a
pack written but not yet recorded (``upload.record``: mid-upload), the snapshot written but not
yet reported (``backup.finish``); for restores ``restore.start``, ``restore.read`` (the first
pack's files written, the next pack about to be read) and ``restore.finish``.

Each case asserts: `--wait` returns within the job timeout + 30 s with the job's real outcome
(completed, or failed with a reason; never a hang); a reported snapshot is really there; the
next backup succeeds; `check --read-data` is clean; the latest snapshot restores byte for byte;
no 500 in the gateway's log. The matrix goes to test-output/fault-matrix.json.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from tests.core.conftest import PASSWORD
from tests.faults.system import JOB_TIMEOUT, WAIT_LIMIT, MiB, System, alive, job_of

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
PLAN = "matrix"
BACKUP_MOMENTS = {"start": ("backup.start", 1), "upload": ("upload.record", 1), "finish": ("backup.finish", 1)}
RESTORE_MOMENTS = {"start": ("restore.start", 1), "read": ("restore.read", 2), "finish": ("restore.finish", 1)}
# Which process holds at each point: killing it releases the point with it.
HOLDER = {"backup.start": "snapshotter", "upload.record": "uploader", "backup.finish": "snapshotter",
          "restore.start": "restorer", "restore.read": "restorer", "restore.finish": "restorer"}


@dataclass
class Row:
    case: str
    outcome: str  # the job's final status as --wait reported it
    seconds: float  # from the kill to --wait returning
    survived: bool  # ended (no hang), real outcome, next backup fine
    hang: bool
    false_success: bool
    http_5xx: int  # 5xx answers in the gateway log during the case (503 while a part restarts is expected)
    http_500: int
    detail: str = ""


ROWS: list[Row] = []


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, test_output_dir: Path) -> Iterator[System]:
    root = tmp_path_factory.mktemp("matrix")
    password = root / "pw"
    password.write_text(PASSWORD + "\n")
    password.chmod(0o600)
    s = System(root, password)
    s.start()
    source, location = root / "src", root / "repo"
    _grow(source, "base", files=4)
    created = s.cli("plan", "create", PLAN, "--source", source, "--daily", "--at", "03:00", "--location",
                    location, "--timezone", "UTC", "--password-file", password)
    assert created.returncode == 0, created.stderr + s.logs()
    first = s.cli("backup", PLAN, "--wait")
    assert first.returncode == 0, first.stderr + s.logs()
    s.source, s.location = source, location  # type: ignore[attr-defined]
    try:
        yield s
    finally:
        s.holds.release()
        rc = s.stop()
        (test_output_dir / "fault-matrix.json").write_text(json.dumps([asdict(r) for r in ROWS], indent=2))
        assert rc == 0, s.log.read_text()[-3000:]


def _grow(source: Path, tag: str, files: int = 3) -> None:
    """New incompressible data for the next backup (every case backs up something new)."""
    rng = random.Random(tag)
    folder = source / tag
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (folder / f"f{i}.bin").write_bytes(rng.randbytes(MiB + rng.randrange(4096)))
    (folder / "note.txt").write_text(f"case {tag}\n")


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _statuses(log: str) -> list[int]:
    return [int(code) for code in __import__("re").findall(r'" (\d{3}) ', log)]


def _finish(cli: subprocess.Popen[str], killed_at: float) -> tuple[dict[str, object] | None, str, float, bool]:
    """(final job from --wait --json, stderr, seconds after the kill, hung)."""
    try:
        stdout, stderr = cli.communicate(timeout=WAIT_LIMIT)
    except subprocess.TimeoutExpired:
        cli.kill()
        stdout, stderr = cli.communicate()
        return None, stderr, time.monotonic() - killed_at, True
    return job_of(stdout), stderr, time.monotonic() - killed_at, False


def _kill(system: System, victim: str, point: str) -> None:
    """kill -9 `victim` while a service holds at `point`, then let the held one go on."""
    if victim == "group":
        children = system.kill_group()
        deadline = time.monotonic() + 5
        while [pid for pid in children if alive(pid)]:
            assert time.monotonic() < deadline, f"orphans after kill -9 of the up group: {children}"
            time.sleep(0.02)
        system.holds.release()
        system.start()
        return
    old = system.kill(victim)
    if HOLDER[point] == victim:
        system.holds.release(point)  # before the restart: the redelivered job must not hold again
        system.wait_back(victim, old)
    else:
        system.wait_back(victim, old)
        system.holds.release(point)


def _record(row: Row) -> None:
    ROWS.append(row)


@pytest.mark.parametrize("moment", list(BACKUP_MOMENTS))
@pytest.mark.parametrize("victim", ["nats", "catalog", "snapshotter", "uploader", "gateway", "group"])
def test_kill_during_backup(system: System, victim: str, moment: str) -> None:
    case = f"{victim}@{moment}"
    source: Path = system.source  # type: ignore[attr-defined]
    _grow(source, case)
    point, start = BACKUP_MOMENTS[moment]
    log_before = len(system.gateway_log())
    system.holds.set(point, start)
    cli = system.cli_start("backup", PLAN, "--wait", "--json")
    try:
        system.holds.wait(point)
    except AssertionError:
        cli.kill()
        raise AssertionError(f"{case}: {cli.communicate()[1]}\n{system.logs()}") from None
    killed_at = time.monotonic()
    _kill(system, victim, point)
    job, stderr, seconds, hang = _finish(cli, killed_at)
    assert "Traceback" not in stderr, stderr
    status = str(job.get("status")) if job else "none"
    false_success = False
    if status == "completed":
        # A reported snapshot must be in the repository and restorable (checked with the others below).
        snapshot = str(job.get("snapshot_id")) if job else ""
        listed = system.cli("repo", "snapshots", system.location, "--json")  # type: ignore[attr-defined]
        false_success = snapshot not in {s["id"] for s in json.loads(listed.stdout or "[]")}
    else:
        assert job is None or job.get("error"), f"{case}: a failed job must say why: {job} {stderr}"
    nxt = system.cli("backup", PLAN, "--wait")
    log = system.gateway_log()[log_before:]
    codes = _statuses(log)
    row = Row(case, status, round(seconds, 1), not hang and nxt.returncode == 0 and not false_success,
              hang, false_success, sum(c >= 500 for c in codes), codes.count(500),
              (job or {}).get("error") or stderr.strip()[-300:])  # type: ignore[arg-type]
    _record(row)
    assert not hang, f"{case}: --wait still waiting {WAIT_LIMIT} s after the kill\n{system.logs()}"
    assert status in ("completed", "failed"), f"{case}: {job} {stderr}"
    assert seconds < JOB_TIMEOUT + 30 + 15, f"{case}: --wait took {seconds:.0f} s"
    assert not false_success, f"{case}: reported snapshot is not in the repository"
    assert nxt.returncode == 0, f"{case}: the next backup failed: {nxt.stderr}\n{system.logs()}"
    assert row.http_500 == 0, f"{case}: the gateway answered 500:\n{log[-2000:]}"
    _verify(system, case)


def _verify(system: System, case: str) -> None:
    """check --read-data is clean and the latest snapshot restores exactly the source."""
    location: Path = system.location  # type: ignore[attr-defined]
    checked = system.cli("repo", "check", location, "--read-data")
    assert checked.returncode == 0 and "no errors found" in checked.stdout, f"{case}: {checked}"
    target = system.root / f"restore-{case.replace('@', '-')}"
    restored = system.cli("restore", PLAN, "latest", "--target", target, "--wait")
    assert restored.returncode == 0, f"{case}: {restored.stderr}"
    source: Path = system.source  # type: ignore[attr-defined]
    inside = target / source.relative_to("/")
    assert _tree(inside) == _tree(source), f"{case}: the restore differs from the source"
    shutil.rmtree(target)


@pytest.mark.parametrize("moment", list(RESTORE_MOMENTS))
def test_kill_restorer_during_restore(system: System, moment: str) -> None:
    case = f"restorer@{moment}"
    source: Path = system.source  # type: ignore[attr-defined]
    point, start = RESTORE_MOMENTS[moment]
    target = system.root / f"target-{moment}"
    system.holds.set(point, start)
    cli = system.cli_start("restore", PLAN, "latest", "--target", target, "--wait", "--json")
    system.holds.wait(point)
    killed_at = time.monotonic()
    _kill(system, "restorer", point)
    job, stderr, seconds, hang = _finish(cli, killed_at)
    status = str(job.get("status")) if job else "none"
    again = system.root / f"again-{moment}"
    retry = system.cli("restore", PLAN, "latest", "--target", again, "--wait")
    exact = retry.returncode == 0 and _tree(again / source.relative_to("/")) == _tree(source)
    nxt = system.cli("backup", PLAN, "--wait")
    row = Row(case, status, round(seconds, 1), not hang and exact and nxt.returncode == 0, hang,
              status == "completed" and moment != "finish", 0, 0,
              (job or {}).get("error") or stderr.strip()[-300:])  # type: ignore[arg-type]
    _record(row)
    assert not hang, f"{case}: --wait hung\n{system.logs()}"
    # The restorer died with the job: it ends failed (its heartbeat stops) within the job timeout.
    assert status == "failed" and job and "stopped responding" in str(job.get("error")), (job, stderr)
    assert seconds < JOB_TIMEOUT + 30, seconds
    assert exact, f"{case}: the next restore is not byte-exact: {retry.stderr}"
    assert nxt.returncode == 0, nxt.stderr
    leftovers = [p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.restore-")]
    assert not (target.exists() and moment == "start"), "nothing was restored yet"
    del leftovers  # a killed restorer leaves its temporary folder; the target itself is untouched
    shutil.rmtree(again)
    _verify(system, case)


def test_no_stale_nats_server_after_group_kill(system: System) -> None:
    """After a kill -9 of the group (above) and a restart, one nats-server holds the store."""
    store = str(system.data / "nats")
    servers = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
               if "nats-server" in _name(pid) and store in _args(pid)]
    assert len(servers) == 1, servers


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _args(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
