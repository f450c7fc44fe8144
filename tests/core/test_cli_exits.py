"""Exit codes and `--json` errors of the `timevault` command, run as a subprocess on real repositories.

0 success, 1 failure, 2 usage, 3 finished but incomplete, 10 no repository, 11 locked,
12 wrong password, 130 interrupted; 141 (quietly) when the output's reader has gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest

from timevault.core.repository import Repository
from timevault.core.storage import LocalStorage

from .conftest import (
    PASSWORD,
    TIMEVAULT,
    CliResult,
    assert_clean_error,
    build_tree,
    random_bytes,
    restored_path,
    run_cli,
)

pytestmark = pytest.mark.timeout(120)


@dataclass
class Vault:
    path: Path
    pw: Path
    source: Path


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Vault:
    """A repository made with the CLI, holding one backup of a small tree."""
    base = tmp_path_factory.mktemp("exits")
    pw = base / "pw"
    pw.write_text(PASSWORD + "\n")
    path = base / "repo"
    assert run_cli("repo", "init", path, "--password-file", pw).code == 0
    source = build_tree(base / "src", {"a.txt": "alpha", "d/b.bin": random_bytes(20_000, 2)})
    result = run_cli("repo", "backup", path, source, "--password-file", pw)
    assert result.code == 0, result.stderr
    return Vault(path, pw, source)


def error_object(result: CliResult) -> dict[str, str]:
    """The one JSON object a failing `--json` command prints: {"error": {"code", "message"}}."""
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    body = json.loads(lines[0])
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    return body["error"]


def test_version() -> None:
    result = run_cli("--version")
    assert result.code == 0, result.stderr
    assert result.stdout == f"timevault {version('timevault')}\n"


def test_usage_errors_exit_2() -> None:
    result = run_cli("repo", "snapshots")
    assert result.code == 2
    assert result.stderr.startswith("usage: timevault repo snapshots")
    assert result.stderr.splitlines()[-1] == (
        "timevault repo snapshots: error: the following arguments are required: LOCATION"
    )
    assert result.stdout == ""
    as_json = run_cli("repo", "snapshots", "--json")
    assert as_json.code == 2 and error_object(as_json)["code"] == "usage"
    assert run_cli().code == 2  # no command at all
    assert run_cli("repo", "frobnicate", "x").code == 2


def test_unacceptable_values_exit_2(tmp_path: Path, pw_file: Path) -> None:
    bad_scheme = run_cli("repo", "snapshots", "ftp://host/x", "--json", "--password-file", pw_file)
    assert bad_scheme.code == 2
    assert error_object(bad_scheme) == {"code": "invalid", "message": "unsupported location scheme: ftp"}
    weak = tmp_path / "weak"
    weak.write_text("abc\n")
    result = run_cli("repo", "init", tmp_path / "repo", "--password-file", weak)
    assert result.code == 2
    assert_clean_error(result, "at least 4")


def test_missing_repository_exits_10(tmp_path: Path, pw_file: Path) -> None:
    (tmp_path / "empty").mkdir()
    for location in (tmp_path / "nowhere", tmp_path / "empty", f"file://{tmp_path}/nowhere"):
        result = run_cli("repo", "snapshots", location, "--password-file", pw_file)
        assert result.code == 10, result
        assert_clean_error(result, "not a TimeVault repository")
    as_json = run_cli("repo", "snapshots", tmp_path / "nowhere", "--json", "--password-file", pw_file)
    assert as_json.code == 10
    assert error_object(as_json)["code"] == "no_repository"
    assert not (tmp_path / "nowhere").exists(), "looking must not create the location"


async def test_locked_repository_exits_11(vault: Vault) -> None:
    repo = await Repository.open(LocalStorage(vault.path), PASSWORD)
    try:
        async with repo.lock(exclusive=True):  # as `repo prune` holds it, from this live process
            result = await asyncio.to_thread(
                run_cli, "repo", "backup", vault.path, vault.source, "--json", "--password-file", vault.pw
            )
            pruned = await asyncio.to_thread(run_cli, "repo", "prune", vault.path, "--password-file", vault.pw)
    finally:
        await repo.close()
    assert result.code == 11, result
    error = error_object(result)
    assert error["code"] == "locked" and f"pid {os.getpid()}" in error["message"]
    assert pruned.code == 11
    assert_clean_error(pruned, "exclusive lock is held")
    # The lock is gone with the process that held it: the same backup now runs.
    again = await asyncio.to_thread(
        run_cli, "repo", "backup", vault.path, vault.source, "--json", "--password-file", vault.pw
    )
    assert again.code == 0, again.stderr


def test_wrong_password_exits_12(vault: Vault, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_text("not the password\n")
    result = run_cli("repo", "snapshots", vault.path, "--json", "--password-file", bad)
    assert result.code == 12
    error = error_object(result)
    assert error["code"] == "wrong_password" and "wrong password" in error["message"]
    assert_clean_error(result, "wrong password")


def test_other_failures_exit_1(vault: Vault, tmp_path: Path) -> None:
    args = ("--target", str(tmp_path / "out"), "--password-file", str(vault.pw))
    result = run_cli("repo", "restore", vault.path, "feedface", "--json", *args)
    assert result.code == 1
    assert error_object(result) == {"code": "failed", "message": "no snapshot matches 'feedface'"}
    assert not (tmp_path / "out").exists()


def test_unreadable_item_exits_3_after_saving_the_rest(tmp_path: Path, pw_file: Path) -> None:
    repo = tmp_path / "repo"
    assert run_cli("repo", "init", repo, "--password-file", pw_file).code == 0
    source = build_tree(tmp_path / "src", {"keep.txt": "kept"})
    os.mkfifo(source / "pipe")  # not a file, folder or symlink: left out, with a warning
    result = run_cli("repo", "backup", repo, source, "--json", "--password-file", pw_file)
    assert result.code == 3, result
    snapshot = json.loads(result.stdout)  # the result is the output, not an error object
    assert snapshot["files"] == 1 and any("pipe" in w for w in snapshot["warnings"])
    assert_clean_error(result, "saved without 1 item(s)")
    assert result.stderr.startswith("timevault: incomplete: ")
    text = run_cli("repo", "backup", repo, source, "--password-file", pw_file)
    assert text.code == 3
    assert "warning: skipped" in text.stderr and "saved without 1 item(s)" in text.stderr.splitlines()[-1]
    listed = run_cli("repo", "snapshots", repo, "--json", "--password-file", pw_file)
    assert listed.code == 0 and len(json.loads(listed.stdout)) == 2


def test_partly_restored_exits_3(vault: Vault, tmp_path: Path) -> None:
    target = tmp_path / "out"
    blocked = restored_path(target, vault.source) / "a.txt"
    blocked.mkdir(parents=True)  # a folder where the snapshot has a file: left as it is
    result = run_cli("repo", "restore", vault.path, "latest", "--target", target, "--json",
                     "--password-file", vault.pw)
    assert result.code == 3, result
    report = json.loads(result.stdout)
    assert len(report["errors"]) == 1 and "a.txt" in report["errors"][0]
    assert blocked.is_dir()
    assert (restored_path(target, vault.source) / "d" / "b.bin").read_bytes() == random_bytes(20_000, 2)
    assert result.stderr.splitlines()[-1] == "timevault: incomplete: 1 item(s) could not be restored"


def _wait_for_reader(fifo: Path, proc: subprocess.Popen[str]) -> int:
    """Open `fifo` for writing once the command has it open for reading (it then blocks in read)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the command never opened the password file"
        time.sleep(0.05)


@pytest.mark.parametrize("command", ["repo", "system"])
def test_ctrl_c_exits_130(vault: Vault, tmp_path: Path, command: str) -> None:
    """Ctrl-C while the command waits (here: for its password) ends it with 130 and one line."""
    fifo = tmp_path / "pw-fifo"
    os.mkfifo(fifo)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEVAULT_")}
    if command == "repo":  # async: asyncio.run turns the interrupt into a cancellation
        argv = ["repo", "snapshots", str(vault.path), "--json"]
    else:  # plain blocking code; the gateway is not asked before the password is read
        env |= {"TIMEVAULT_URL": "http://127.0.0.1:9", "TIMEVAULT_TOKEN": "t" * 32}
        argv = ["plan", "create", "x", "--source", str(vault.source), "--daily", "--at", "01:00",
                "--location", str(tmp_path / "loc"), "--json"]
    # A runner that started the tests in the background (a shell without job control) passes
    # SIGINT on ignored, and a program started so rightly keeps ignoring it: give it the default.
    proc = subprocess.Popen([str(TIMEVAULT), *argv, "--password-file", str(fifo)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    writer = _wait_for_reader(fifo, proc)
    try:
        time.sleep(0.2)  # let it settle into the read
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        # The repo command goes on reading until its next await; give it a password to get there.
        # (The system command has stopped already: nobody reads.)
        with contextlib.suppress(BrokenPipeError):
            os.write(writer, (PASSWORD + "\n").encode())
    finally:
        os.close(writer)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert err == "timevault: interrupted\n"
    assert json.loads(out) == {"error": {"code": "interrupted", "message": "interrupted"}}


@pytest.mark.parametrize(
    ("argv", "codes"),
    [
        (["repo", "snapshots", "--json"], {141}),
        (["--version"], {141}),
        # argparse writes --help itself and ignores a failed write: 0 when it found no room left.
        (["--help"], {0, 141}),
    ],
)
def test_closed_output_ends_quietly(vault: Vault, argv: list[str], codes: set[int]) -> None:
    """`timevault … | head -1`: when the reader has gone, no traceback and no message."""
    if argv[0] == "repo":
        argv = [*argv, str(vault.path), "--password-file", str(vault.pw)]
    proc = subprocess.Popen([str(TIMEVAULT), *argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader goes away before anything is written
    err = proc.stderr.read()
    assert proc.wait(60) in codes
    assert err == b""


def test_head_in_a_shell_pipeline(vault: Vault) -> None:
    """The literal case: whether or not the command was still writing when `head` left, no message."""
    script = '"$0" repo snapshots "$1" --json --password-file "$2" | head -c 1; echo " ${PIPESTATUS[0]}"'
    proc = subprocess.run(["bash", "-c", script, str(TIMEVAULT), str(vault.path), str(vault.pw)],
                          capture_output=True, text=True, timeout=60)
    first, status = proc.stdout.split()
    assert first == "[" and status in ("0", "141")
    assert proc.stderr == ""
