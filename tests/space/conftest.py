"""Fixtures: real Space servers (``timevault space serve`` processes) and the CLI as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.space_server import PASSWORD, SpaceServer

pytestmark = pytest.mark.space

CLI = [sys.executable, "-m", "timevault.cli.main"]
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpaceServer]:
    """A Space for the module: polling interval 1 s (tests wait less), folder storage."""
    server = SpaceServer(tmp_path_factory.mktemp("space") / "data", args=["--device-interval", "1"])
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_space(tmp_path: Path) -> Iterator[Callable[..., SpaceServer]]:
    """Factory for Spaces with their own flags, stopped at the test's end."""
    started: list[SpaceServer] = []

    def make(*args: str, env: dict[str, str] | None = None) -> SpaceServer:
        server = SpaceServer(tmp_path / f"space{len(started)}", args=list(args), env=env or {})
        started.append(server.start())
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def space_password_file(tmp_path: Path) -> Path:
    path = tmp_path / "space-password"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """Run ``timevault …``; returns the completed process (text), never raises on exit status."""

    def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
                input: str | None = None) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), **(env or {})}
        return subprocess.run([*CLI, *args], capture_output=True, text=True, env=full_env, timeout=timeout,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL)

    return run_cli
