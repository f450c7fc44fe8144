"""Commands around a backup, with a real PostgreSQL server: a pre-command dumps a database into a
source folder, the backup takes the dump, and the restored dump loaded into a fresh database has
the same rows. Also: the job's log holds their output, the post-command always runs and knows
the outcome, a failing pre-command fails the backup unless the plan says it is optional, and a
command that hangs is stopped at the plan's timeout."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from tests.services.conftest import ServiceProc
from tests.services.helpers import PASSWORD, wait_job
from tests.services.test_end_to_end import backup_now, restore
from timevault.proto import subjects
from timevault.proto.jobs import Job, JobCreate, JobRef
from timevault.proto.plans import Location, Plan, PlanCreate, PlanEventList, Schedule
from timevault.services.common import rpc

pytestmark = pytest.mark.timeout(180)

ROLE, ROLE_PASSWORD = "tv_hooks", "tv-hooks-pass"
SOURCE_DB, RESTORED_DB = "tv_hooks_src", "tv_hooks_restored"


def _admin(*args: str, db: str = "postgres", stdin: str | None = None) -> str:
    """psql as the database superuser (peer auth as the postgres user when we are root)."""
    base = ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-At", "-d", db, *args]
    command = ["runuser", "-u", "postgres", "--", *base] if os.geteuid() == 0 else [*base[:1], "-U", "postgres",
                                                                                   *base[1:]]
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def postgres() -> Iterator[None]:
    """A role and a database with rows on the machine's PostgreSQL (scripts/setup.sh installs and starts it)."""
    if shutil.which("pg_dump") is None or subprocess.run(["pg_isready", "-q"], timeout=30).returncode != 0:
        pytest.fail("PostgreSQL is not running here: run scripts/setup.sh (it installs and starts it)")
    for db in (SOURCE_DB, RESTORED_DB):
        _admin("-c", f"DROP DATABASE IF EXISTS {db}")
    _admin("-c", f"DROP ROLE IF EXISTS {ROLE}")
    _admin("-c", f"CREATE ROLE {ROLE} LOGIN PASSWORD '{ROLE_PASSWORD}'")
    _admin("-c", f"CREATE DATABASE {SOURCE_DB} OWNER {ROLE}")
    _admin("-c", f"CREATE DATABASE {RESTORED_DB} OWNER {ROLE}")
    sql = ("CREATE TABLE notes (id integer PRIMARY KEY, title text NOT NULL, body text, created timestamptz);\n"
           "INSERT INTO notes SELECT i, 'note ' || i, repeat(md5(i::text), 20), "
           "timestamptz '2024-01-01 00:00:00+00' + i * interval '1 hour' FROM generate_series(1, 2000) i;\n"
           "INSERT INTO notes VALUES (5000, 'ünïcödé ✓', E'line one\\nline two', NULL);\n")
    _user_psql(SOURCE_DB, sql)
    yield
    for db in (SOURCE_DB, RESTORED_DB):
        _admin("-c", f"DROP DATABASE IF EXISTS {db}")
    _admin("-c", f"DROP ROLE IF EXISTS {ROLE}")


def _user_env() -> dict[str, str]:
    return {**os.environ, "PGPASSWORD": ROLE_PASSWORD, "PGHOST": "127.0.0.1", "PGUSER": ROLE}


def _user_psql(db: str, sql: str) -> str:
    result = subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-At", "-d", db], input=sql, capture_output=True,
                            text=True, env=_user_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


async def _plan(nc: NATS, name: str, sources: list[Path], location: Path, **options: Any) -> Plan:
    req = PlanCreate(name=name, sources=[str(s) for s in sources],
                     schedule=Schedule(frequency="daily", time="03:00", timezone="UTC"),
                     location=Location(type="local", path=str(location)), password=PASSWORD,
                     password_confirm=PASSWORD, **options)
    return await rpc.request(nc, subjects.PLAN_CREATE, req, Plan, timeout=20)


async def _job_log(nc: NATS, job_id: str) -> list[str]:
    events = await rpc.request(nc, subjects.JOB_EVENTS, JobRef(job_id=job_id), PlanEventList)
    return [e.message for e in events.events if e.kind == "hook"]


async def test_pre_command_dumps_postgres_and_the_restored_dump_loads(
        postgres: None, catalog: NATS, workers: dict[str, ServiceProc], tmp_path: Path) -> None:
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    marker = tmp_path / "post.txt"
    # The connection settings are part of the command, as a user would write them (the snapshotter
    # passes no TIMEVAULT_* settings of its own, only the plan's name, the job and the status).
    pre = (f"PGPASSWORD={ROLE_PASSWORD} pg_dump -h 127.0.0.1 -U {ROLE} --no-owner -f {dumps}/{SOURCE_DB}.sql "
           f"{SOURCE_DB} && echo \"dumped for $TIMEVAULT_PLAN in $TIMEVAULT_JOB\" && "
           "env | grep -c '^TIMEVAULT_' || true")
    post = f"echo \"$TIMEVAULT_PLAN $TIMEVAULT_JOB $TIMEVAULT_STATUS\" > {marker}; rm -f {dumps}/{SOURCE_DB}.sql"
    plan = await _plan(catalog, "postgres-hooks", [dumps], tmp_path / "vault", pre_command=pre, post_command=post,
                       hook_timeout=60)
    assert plan.pre_command == pre and plan.post_command == post and plan.hook_timeout == 60
    job = await backup_now(catalog, plan.id)
    assert job.status == "completed", job.error
    assert job.files_done == 1
    log = await _job_log(catalog, job.id)
    assert f"pre-command: dumped for postgres-hooks in {job.id}" in log, log
    assert "pre-command: 2" in log  # TIMEVAULT_PLAN and TIMEVAULT_JOB, none of the service's own
    assert any(line.startswith("pre-command exited with status 0") for line in log), log
    assert any(line.startswith("post-command exited with status 0") for line in log), log
    assert marker.read_text().split() == ["postgres-hooks", job.id, "completed"]
    assert not (dumps / f"{SOURCE_DB}.sql").exists()  # the post-command cleaned up after the backup

    # A new machine's view: restore the dump, load it into a fresh database, compare every row.
    target = tmp_path / "restored"
    restored = await restore(catalog, plan.id, job.snapshot_id or "latest", target)
    assert restored.status == "completed", restored.error
    dump = target / str(dumps).lstrip("/") / f"{SOURCE_DB}.sql"
    result = await asyncio.to_thread(subprocess.run, ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-q", "-d", RESTORED_DB,
                                                      "-f", str(dump)], capture_output=True, text=True,
                                     env=_user_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    query = "SELECT id, title, body, created FROM notes ORDER BY id"
    source_rows = await asyncio.to_thread(_user_psql, SOURCE_DB, query)
    restored_rows = await asyncio.to_thread(_user_psql, RESTORED_DB, query)
    assert restored_rows == source_rows and source_rows.count("\n") >= 2001
    assert "ünïcödé ✓" in restored_rows


async def test_failing_pre_command_fails_the_backup_unless_optional(
        catalog: NATS, workers: dict[str, ServiceProc], tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    marker = tmp_path / "post.txt"
    post = f"echo $TIMEVAULT_STATUS >> {marker}"
    strict = await _plan(catalog, "hook-strict", [src], tmp_path / "v1", pre_command="echo about to fail; exit 3",
                         post_command=post)
    job = await backup_now(catalog, strict.id)
    assert job.status == "failed" and "pre-command exited with status 3" in (job.error or ""), job
    log = await _job_log(catalog, job.id)
    assert "pre-command: about to fail" in log
    assert marker.read_text().split() == ["failed"]  # the post-command ran, and knew

    lenient = await _plan(catalog, "hook-optional", [src], tmp_path / "v2", pre_command="exit 4",
                          pre_command_optional=True, post_command=post)
    job = await backup_now(catalog, lenient.id)
    assert job.status == "completed", job.error
    assert "the plan lets the backup go on without it" in await _job_log(catalog, job.id)
    assert marker.read_text().split() == ["failed", "completed"]


async def test_a_hanging_pre_command_is_stopped_at_the_timeout(
        catalog: NATS, workers: dict[str, ServiceProc], tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    pidfile = tmp_path / "pid"
    plan = await _plan(catalog, "hook-hangs", [src], tmp_path / "v", pre_command=f"echo $$ > {pidfile}; sleep 300",
                       hook_timeout=2)
    started = time.monotonic()
    job = await backup_now(catalog, plan.id)
    assert job.status == "failed" and "timed out" in (job.error or ""), job
    assert time.monotonic() - started < 30
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the shell and its sleep are gone, not left behind
    assert (await rpc.request(catalog, subjects.JOB_GET, JobRef(job_id=job.id), Job)).status == "failed"
    # Canceling a backup while its pre-command runs stops the command too.
    slow = await _plan(catalog, "hook-cancel", [src], tmp_path / "v3", pre_command="sleep 300", hook_timeout=600)
    job = await rpc.request(catalog, subjects.JOB_CREATE, JobCreate(plan=slow.id), Job)
    await wait_job(catalog, job.id, 30, frozenset({"running"}))
    await asyncio.sleep(1)
    await rpc.request(catalog, subjects.JOB_CANCEL, JobRef(job_id=job.id), Job)
    done = await wait_job(catalog, job.id, 30)
    assert done.status == "canceled", done


def test_hook_environment_drops_the_services_own_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from timevault.services.snapshotter.hooks import hook_environment

    monkeypatch.setenv("TIMEVAULT_NATS", "nats://secret-token@127.0.0.1:4222")
    monkeypatch.setenv("TIMEVAULT_TOKEN", "gateway-token")
    monkeypatch.setenv("PATH_FOR_TEST", "kept")
    env = hook_environment("Photos", "j_1", "failed")
    assert {k: v for k, v in env.items() if k.startswith("TIMEVAULT_")} == {
        "TIMEVAULT_PLAN": "Photos", "TIMEVAULT_JOB": "j_1", "TIMEVAULT_STATUS": "failed"}
    assert env["PATH_FOR_TEST"] == "kept" and "secret-token" not in repr(env)
