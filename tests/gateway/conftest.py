"""Fixtures: the real services and a real gateway as processes on a private nats-server.

`stack` starts nats-server, catalog, uploader, snapshotter, restorer and ``python -m timevault.services.gateway``
(token file mode 0600, free loopback port) once per session. `app_url` additionally serves
`create_app(config)` in this test process (so API tests exercise the factory itself); both
talk to the same services. Browser and schemathesis tests use the gateway process, because
they block the test's event loop.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from playwright.sync_api import Browser, sync_playwright

from tests.services.conftest import ServiceProc, Services
from timevault.services.common.natsd import NatsServer, free_port
from timevault.services.gateway.app import create_app
from timevault.services.gateway.config import GatewayConfig

PASSWORD = "correct horse"


@dataclass
class Stack:
    url: str
    token: str
    nats_url: str
    root: Path
    services: Services
    procs: dict[str, ServiceProc] = field(default_factory=dict)
    nats_monitor: str = ""  # nats-server's monitoring address (http://host:port)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @contextmanager
    def snapshotter_stopped(self) -> Iterator[None]:
        """SIGSTOP the snapshotter so a new backup job stays pending (deterministic 'busy')."""
        proc = self.procs["snapshotter"].proc
        assert proc is not None
        proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            proc.send_signal(signal.SIGCONT)


def _wait_http(url: str, headers: dict[str, str], proc: ServiceProc, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if proc.proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited:\n{proc.output()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not answering:\n{proc.output()[-3000:]}")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("gw")
    nats = NatsServer(root / "nats")
    nats.start()
    # No AWS access key, whatever fixtures of other test modules put in this process's
    # environment: an S3 location without one must be refused the same way in every order.
    services = Services(nats.url, root, env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
                                             "AWS_SESSION_TOKEN": ""})
    token = secrets.token_urlsafe(32)
    token_file = root / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    port = free_port()
    procs = {
        "catalog": services.start("catalog", "--db", str(root / "catalog.db"), "--job-timeout", "10",
                                  "--reap-every", "0.5", "--delete-wait", "10", "--test-weak-kdf",
                                  "--notify-attempts", "3", "--notify-backoff", "0.2"),
        "uploader": services.start("uploader", "--pack-size", str(4 * 1024 * 1024)),
        "snapshotter": services.start("snapshotter", "--ack-wait", "5", "--data-dir", str(root / "worker"),
                                      "--root", str(tmp_path_factory.getbasetemp())),
        "restorer": services.start("restorer"),
        "gateway": services.start("gateway", "--listen", f"127.0.0.1:{port}", "--token-file", str(token_file)),
    }
    s = Stack(url=f"http://127.0.0.1:{port}", token=token, nats_url=nats.url, root=root, services=services,
              procs=procs, nats_monitor=f"http://{nats.host}:{nats.monitor_port}")
    try:
        _wait_http(f"{s.url}/api/v1/plans", s.headers, procs["gateway"])
        yield s
    finally:
        services.stop_all()
        nats.stop()


@pytest.fixture(scope="session")
async def app_url(stack: Stack) -> AsyncIterator[str]:
    """`create_app(config)` served in-process on a free loopback port, against the same services."""
    config = GatewayConfig(nats_url=stack.nats_url, token=stack.token, host="127.0.0.1", port=free_port())
    runner = web.AppRunner(create_app(config), shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    yield f"http://{config.host}:{config.port}"
    await runner.cleanup()


@pytest.fixture
async def http(app_url: str, stack: Stack) -> AsyncIterator[aiohttp.ClientSession]:
    """A client for the in-process app that sends the bearer token."""
    async with aiohttp.ClientSession(app_url, headers=stack.headers,
                                     timeout=aiohttp.ClientTimeout(total=90)) as session:
        yield session


@pytest.fixture
async def anon(app_url: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A client without credentials."""
    async with aiohttp.ClientSession(app_url, timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


def plan_body(name: str, source: Path, repo: Path, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "name": name,
        "sources": [str(source)],
        "schedule": {"frequency": "daily", "time": "03:00", "timezone": "UTC"},
        "location": {"type": "local", "path": str(repo)},
        "password": PASSWORD,
        "password_confirm": PASSWORD,
    }
    body.update(overrides)
    return body


async def wait_job(http: aiohttp.ClientSession, job_id: str, seconds: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    while True:
        async with http.get(f"/api/v1/jobs/{job_id}") as resp:
            assert resp.status == 200
            job = await resp.json()
        if job["status"] in ("completed", "failed", "canceled"):
            return job
        assert time.monotonic() < deadline, f"job still {job['status']}: {job}"
        await asyncio.sleep(0.1)


def source_tree(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@pytest.fixture(scope="session")
def screenshots(test_output_dir: Path) -> Path:
    path = test_output_dir / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def chromium_args() -> list[str]:
    return ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"]


CHROMIUM = os.environ.get("TIMEVAULT_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium, one per test module (scripts/setup.sh installs it: a missing browser
    fails the browser tests rather than skipping them)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: run scripts/setup.sh")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=chromium_args())
        yield browser
        browser.close()
