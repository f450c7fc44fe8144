"""Exit codes and `--json` errors of the system commands, run as a subprocess against the real system.

The gateway's error codes become exit codes in `timevault.cli.exits`: `invalid` 2, `unauthorized`
for the backup password 12, `not_found` for the plan's location 10, anything else 1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.core.conftest import TIMEVAULT, CliResult
from tests.gateway.conftest import PASSWORD, Stack, source_tree

pytestmark = pytest.mark.timeout(120)


def run_cli(stack: Stack, *args: str | Path, token: str | None = None, url: str | None = None) -> CliResult:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEVAULT_")}
    env |= {"TIMEVAULT_URL": url or stack.url, "TIMEVAULT_TOKEN": token or stack.token}
    proc = subprocess.run([str(TIMEVAULT), *map(str, args)], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=90)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def error_of(result: CliResult) -> dict[str, object]:
    """The one JSON object of a failing `--json` command, after checking stderr has one line."""
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    body = json.loads(lines[0])
    assert set(body) == {"error"}, body
    error: dict[str, object] = body["error"]
    return error


@dataclass
class Plan:
    name: str
    source: Path
    location: Path
    pw: Path


@pytest.fixture(scope="module")
def make_plan(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Callable[[], Plan]:
    """A new plan made with the CLI, with one completed backup."""
    base = tmp_path_factory.mktemp("cli-exits")
    pw = base / "pw"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)

    def make() -> Plan:
        name = f"exits-{uuid.uuid4().hex[:8]}"
        source = source_tree(base / name / "src", {"a.txt": b"alpha\n", "d/b.txt": b"beta\n"})
        location = base / name / "repo"
        created = run_cli(stack, "plan", "create", name, "--source", source, "--daily", "--at", "03:00",
                          "--timezone", "UTC", "--location", location, "--password-file", pw, "--json")
        assert created.code == 0, created.stderr
        backup = run_cli(stack, "backup", name, "--wait", "--json")
        assert backup.code == 0, backup.stderr
        assert json.loads(backup.stdout)["status"] == "completed"
        return Plan(name, source, location, pw)

    return make


def test_missing_plan_exits_1(stack: Stack) -> None:
    result = run_cli(stack, "backup", "no such plan", "--json")
    assert result.code == 1
    assert error_of(result) == {"code": "not_found", "message": "no plan named 'no such plan'"}
    shown = run_cli(stack, "plan", "show", "no such plan")
    assert shown.code == 1 and shown.stderr == "timevault: error: no plan named 'no such plan'\n"


def test_wrong_password_exits_12(stack: Stack, make_plan: Callable[[], Plan], tmp_path: Path) -> None:
    plan = make_plan()
    bad = tmp_path / "bad"
    bad.write_text("not the password\n")
    target = tmp_path / "out"
    result = run_cli(stack, "restore", plan.name, "latest", "--target", target, "--password-file", bad,
                     "--wait", "--json")
    assert result.code == 12
    error = error_of(result)
    assert error["code"] == "wrong_password" and "wrong password" in str(error["message"])
    assert not target.exists()
    good = run_cli(stack, "restore", plan.name, "latest", "--target", target, "--password-file", plan.pw, "--wait")
    assert good.code == 0, good.stderr


def test_gone_location_exits_10(stack: Stack, make_plan: Callable[[], Plan], tmp_path: Path) -> None:
    plan = make_plan()
    moved = plan.location.with_name("moved-away")
    plan.location.rename(moved)
    try:
        result = run_cli(stack, "restore", plan.name, "latest", "--target", tmp_path / "out",
                         "--password-file", plan.pw, "--json")
    finally:
        moved.rename(plan.location)
    assert result.code == 10, result
    error = error_of(result)
    assert error["code"] == "no_repository" and "(location)" in str(error["message"])


def test_unacceptable_values_exit_2(stack: Stack, make_plan: Callable[[], Plan], tmp_path: Path) -> None:
    plan = make_plan()
    # Checked by the gateway: the target must not be a system folder.
    result = run_cli(stack, "restore", plan.name, "latest", "--target", "/etc", "--password-file", plan.pw,
                     "--json")
    assert result.code == 2
    error = error_of(result)
    assert error["code"] == "invalid" and "system folder" in str(error["message"])
    # Checked by the CLI before anything is sent, with the services' own rules.
    bad_time = run_cli(stack, "plan", "update", plan.name, "--at", "25:00", "--json")
    assert bad_time.code == 2 and error_of(bad_time)["code"] == "invalid"
    nothing = run_cli(stack, "plan", "update", plan.name, "--json")
    assert nothing.code == 2 and error_of(nothing)["code"] == "usage"
    unconfirmed = run_cli(stack, "plan", "delete", plan.name)
    assert unconfirmed.code == 2 and "--yes" in unconfirmed.stderr
    assert run_cli(stack, "plan", "show", plan.name).code == 0, "nothing was changed or deleted"


def test_failed_job_exits_1_with_the_job(stack: Stack, make_plan: Callable[[], Plan]) -> None:
    plan = make_plan()
    shutil.rmtree(plan.source)
    result = run_cli(stack, "backup", plan.name, "--wait", "--json")
    assert result.code == 1
    error = error_of(result)
    job = error["job"]
    assert error["code"] == "job_failed" and isinstance(job, dict)
    assert job["status"] == "failed" and job["kind"] == "backup"
    assert str(plan.source) in str(error["message"])


def test_bad_token_and_no_gateway_exit_1(stack: Stack) -> None:
    result = run_cli(stack, "plan", "list", "--json", token="x" * 40)
    assert result.code == 1 and error_of(result)["code"] == "unauthorized"
    gone = run_cli(stack, "plan", "list", "--json", url="http://127.0.0.1:9")
    assert gone.code == 1 and error_of(gone)["code"] == "unavailable"
