"""Fixtures: a real nats-server per session, services as real processes, a NATS client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from timevault.services.common.natsd import NatsServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()


class ServiceProc:
    """One service as a child process (``python -m services.<name>``), logging to a file."""

    def __init__(self, name: str, nats_url: str, log_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.env = env or {}
        self.args = [sys.executable, "-m", f"timevault.services.{name}", "--nats", nats_url, "--log-level", "DEBUG",
                     *args]
        self.log = log_dir / f"{name}-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProc:
        env = {**os.environ, "PYTHONPATH": str(ROOT), **self.env}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.args, cwd=ROOT, env=env, stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Services:
    def __init__(self, nats_url: str, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.nats_url = nats_url
        self.log_dir = log_dir
        self.env = env  # extra environment for every service (e.g. TIMEVAULT_TEST_HOLDS)
        self.procs: list[ServiceProc] = []

    def start(self, name: str, *args: str) -> ServiceProc:
        proc = ServiceProc(name, self.nats_url, self.log_dir, *args, env=self.env).start()
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def catalog_proc(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory,
                 log_dir: Path) -> Iterator[ServiceProc]:
    """One catalog for the session (short job timeout so dead workers are noticed fast)."""
    services = Services(nats_server.url, log_dir)
    db = tmp_path_factory.mktemp("catalog") / "catalog.db"
    proc = services.start("catalog", "--db", str(db), "--job-timeout", "6", "--reap-every", "0.5",
                          "--delete-wait", "20", "--test-weak-kdf", "--notify-attempts", "3", "--notify-backoff", "0.2")
    yield proc
    services.stop_all()


@pytest.fixture(scope="session")
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    yield client
    await client.close()


@pytest.fixture(scope="session")
async def catalog(nc: NATS, catalog_proc: ServiceProc) -> NATS:
    """A NATS client with the catalog answering."""
    from timevault.proto import subjects
    from timevault.proto.errors import ServiceError
    from timevault.proto.plans import PlanList, PlanListRequest
    from timevault.services.common import rpc

    try:
        await rpc.request_retrying(nc, subjects.PLAN_LIST, PlanListRequest(), PlanList, timeout=1, give_up_after=20)
    except ServiceError:
        raise RuntimeError("catalog did not start:\n" + catalog_proc.output()[-3000:]) from None
    return nc


@pytest.fixture(scope="session")
def workers(nats_server: NatsServer, catalog_proc: ServiceProc, log_dir: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServiceProc]]:
    """Uploader, snapshotter and restorer processes (short ack wait so redelivery is quick)."""
    services = Services(nats_server.url, log_dir)
    data = tmp_path_factory.mktemp("worker-data")
    procs = {
        "uploader": services.start("uploader", "--pack-size", str(4 * 1024 * 1024)),
        "snapshotter": services.start("snapshotter", "--ack-wait", "4", "--data-dir", str(data)),
        "restorer": services.start("restorer"),
    }
    yield procs
    for proc in procs.values():
        proc.stop()
    services.stop_all()
