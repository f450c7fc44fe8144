"""deploy/compose.yaml run as local processes: its topology, its commands, its environment.

No container runtime is reachable here, so this test stands in for one: every compose service
(every replica) becomes a process with the service's own command and interpolated environment.
Container networking becomes loopback addresses (each container gets one, under a random
127.X.Y.0/24, so its ports stay those of compose), mounts become folders, and ``python`` the
test's interpreter. A NATS node's container-wide listen address is pinned with ``--addr`` and
``--cluster`` (a container would have its own interface). S3 is the moto server.

Then: a backup and a restore through the gateway; a schedule slot; and during a larger backup,
kill -9 of the snapshotter running it, the uploader holding its session and the JetStream meta
leader among the NATS nodes. The backup completes exactly once, the slot fires exactly once and
restores are byte-exact. How the work was split between the copies is measured and printed
(and written to test-output/).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import random_bytes
from tests.deploy import manifests
from tests.deploy.manifests import DEPLOY, Container
from tests.deploy.support import nats_passwords, write_tls
from tests.support.moto_server import DUMMY_AWS_ENV, create_bucket, start_moto_server
from timevault.services.common.natsd import find_nats_server

pytestmark = [pytest.mark.slow, pytest.mark.s3, pytest.mark.timeout(240)]
BUCKET = "tv-compose"
BIG_FILES = 80  # 2 MiB each: long enough a backup to kill its workers in the middle


@dataclass
class Proc:
    service: str
    copy: int
    ip: str
    args: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"{self.service}-{self.copy}"

    def start(self) -> None:
        fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self.popen = subprocess.Popen(self.args, env=self.env, stdout=fd, stderr=fd, stdin=subprocess.DEVNULL)
        finally:
            os.close(fd)

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait()

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Topology:
    root: Path
    env_file: dict[str, str]
    procs: list[Proc] = field(default_factory=list)
    moto: str = ""
    calls: int = 0

    def of(self, service: str) -> list[Proc]:
        return [p for p in self.procs if p.service == service]

    @property
    def gateway(self) -> str:
        """The gateway copies in turn, like a load balancer in front of them."""
        self.calls += 1
        copies = self.of("gateway")
        return f"http://{copies[self.calls % len(copies)].ip}:7480"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env_file['TIMEVAULT_TOKEN']}"}


def _rewrite(text: str, mapping: dict[str, str]) -> str:
    """Container paths and ``host:port`` names in `text` replaced by local ones (longest first)."""
    for old in sorted(mapping, key=len, reverse=True):
        follows = "(?![\\w-])" if old.startswith("/") else "(?=:\\d)"  # a host only before its port
        text = re.sub(rf"(?<![\w.-]){re.escape(old)}{follows}", mapping[old], text)
    return text


def _mounts(container: Container, copy_dir: Path, topo_root: Path) -> dict[str, str]:
    """Mount target → local folder or file."""
    out: dict[str, str] = {}
    for mount in container.mounts:
        if mount.kind == "volume":  # named volumes are shared by the copies, as in compose
            local = topo_root / "volumes" / mount.source
        elif mount.source.startswith("./tls"):
            local = topo_root / "tls" / mount.source.removeprefix("./tls").lstrip("/")
        elif mount.source.startswith("./"):
            local = copy_dir / "mounts" / mount.target.strip("/").replace("/", "_")  # localised copy
        else:  # an absolute host folder
            local = topo_root / "host" / mount.source.lstrip("/")
        if not local.suffix:
            local.mkdir(parents=True, exist_ok=True, mode=0o700)
        out[mount.target] = str(local)
    return out


def plan_topology(root: Path, block: str) -> Topology:
    # moto listens on loopback: allowed as compose allows a MinIO on a private network.
    env_file = {**nats_passwords(), "TIMEVAULT_TOKEN": os.urandom(24).hex(), "TIMEVAULT_ALLOW_PRIVATE_ENDPOINTS": "1", **{
        k: v for k, v in DUMMY_AWS_ENV.items() if k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                        "AWS_DEFAULT_REGION")}}
    topo = Topology(root, env_file)
    containers = manifests.compose(env_file)
    ips: dict[str, list[str]] = {}
    n = 1
    for name, container in containers.items():
        ips[name] = [f"{block}.{n + i}" for i in range(container.replicas)]
        n += container.replicas
    hosts = {name: addresses[0] for name, addresses in ips.items()}
    write_tls(root / "tls", "localhost", *(ip for addresses in ips.values() for ip in addresses))
    (root / "logs").mkdir()
    for name, container in containers.items():
        for copy, ip in enumerate(ips[name], 1):
            copy_dir = root / "containers" / f"{name}-{copy}"
            copy_dir.mkdir(parents=True)
            mounts = _mounts(container, copy_dir, root)
            mapping = {**mounts, **hosts, "0.0.0.0": ip}
            env = {"PATH": os.environ["PATH"], "HOME": str(copy_dir), "LANG": "C.UTF-8"}
            if container.command[0] == "nats-server":
                env |= env_file  # env_file: .env
                # ./nats is the config folder: its files are localised the way the container sees them.
                config = Path(mounts["/etc/nats/config"])
                for f in (DEPLOY / "nats").iterdir():
                    (config / f.name).write_text(_rewrite(f.read_text(), mapping))
                args = [find_nats_server(), *(_rewrite(a, mapping) for a in container.command[1:]),
                        "--addr", ip, "--cluster", f"nats://{ip}:6222"]
            else:
                args = [sys.executable, *(_rewrite(a, mapping) for a in container.command[1:])]
                env["PYTHONPATH"] = str(DEPLOY.parent)
            env |= {k: _rewrite(v, mapping) for k, v in container.env.items()}
            topo.procs.append(Proc(name, copy, ip, args, env, root / "logs" / f"{name}-{copy}.log"))
    return topo


def _get(url: str, timeout: float = 2) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except OSError:
        return 0, b""


async def _until(what: str, check: Any, seconds: float, topo: Topology) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.text()[-1500:]}" for p in topo.procs)
            raise AssertionError(f"{what}: not within {seconds:g} s\n{tails}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def topology(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Topology]:
    block = f"127.{random.randint(2, 250)}.{random.randint(1, 250)}"
    topo = plan_topology(tmp_path, block)
    topo.moto, stop_moto = start_moto_server()
    try:
        for key, value in DUMMY_AWS_ENV.items():  # for create_bucket here; undone after the test
            monkeypatch.setenv(key, value)
        await create_bucket(topo.moto, BUCKET)
        for proc in topo.procs:
            if proc.service.startswith("nats-"):
                proc.start()
        for proc in topo.procs:
            if proc.service.startswith("nats-"):
                url = f"http://{proc.ip}:8222/healthz?js-enabled-only=true"
                await _until(f"{proc.name} healthy", lambda url=url: asyncio.to_thread(
                    lambda: _get(url)[0] == 200), 30, topo)
        for proc in topo.procs:
            if not proc.service.startswith("nats-"):
                proc.start()
        yield topo
    finally:
        for proc in reversed(topo.procs):
            proc.stop()
        stop_moto()


async def _api(http: aiohttp.ClientSession, topo: Topology, method: str, path: str, body: Any = None,
               status: int = 200) -> Any:
    async with http.request(method, topo.gateway + path, json=body, headers=topo.headers) as resp:
        data = await resp.json()
        assert resp.status == status, (method, path, resp.status, data)
        return data


async def _wait_job(http: aiohttp.ClientSession, topo: Topology, job_id: str, seconds: float) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        async with http.get(topo.gateway + f"/api/v1/jobs/{job_id}", headers=topo.headers) as resp:
            job: dict[str, Any] = await resp.json()
            if resp.status == 503:  # a NATS node just died: clients reconnect, ask again
                return None
            assert resp.status == 200, job
        return job if job["status"] in ("completed", "failed", "canceled") else None

    job: dict[str, Any] = await _until(f"job {job_id}", done, seconds, topo)
    return job


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _plan(name: str, source: Path, topo: Topology, at: str = "03:00") -> dict[str, Any]:
    return {"name": name, "sources": [str(source)], "password": "compose password",
            "password_confirm": "compose password",
            "schedule": {"frequency": "daily", "time": at, "timezone": "UTC"},
            "location": {"type": "s3", "bucket": BUCKET, "prefix": name, "endpoint": topo.moto,
                         "region": "us-east-1"}}


async def _restore(http: aiohttp.ClientSession, topo: Topology, plan: dict[str, Any], snapshot: str,
                   target: Path) -> None:
    job = await _api(http, topo, "POST", f"/api/v1/plans/{plan['id']}/snapshots/{snapshot}/restore",
                     {"target": str(target), "password": "compose password"}, 202)
    done = await _wait_job(http, topo, job["id"], 60)
    assert done["status"] == "completed", (done.get("error"), done.get("warnings"))


def _restored(target: Path, source: Path) -> Path:
    return target / str(source).lstrip("/")  # a restore recreates the source's full path


def _jsz(proc: Proc) -> dict[str, Any]:
    status, body = _get(f"http://{proc.ip}:8222/jsz?accounts=true&streams=true&config=true")
    return json.loads(body) if status == 200 else {}


async def test_compose_topology_as_processes(topology: Topology, tmp_path: Path, artifact_dir: Path) -> None:
    topo = topology
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        for gateway in topo.of("gateway"):
            url = f"http://{gateway.ip}:7480/api/v1/ready"
            await _until(f"{gateway.name} ready", lambda url=url: asyncio.to_thread(
                lambda: _get(url)[0] == 200), 60, topo)
        for proc in topo.procs:  # compose's health checks answer
            if "--health-listen" in proc.args:
                url = f"http://{proc.ip}:8081/readyz"
                await _until(f"{proc.name} ready", lambda url=url: asyncio.to_thread(
                    lambda: _get(url)[0] == 200), 30, topo)
        sources = topo.root / "host" / "srv" / "backup-sources"  # the snapshotters' /sources
        restores = topo.root / "host" / "srv" / "restores"  # the restorer's /restores

        # A schedule slot 50..110 s ahead; both schedulers watch it.
        slot = (datetime.now(UTC) + timedelta(seconds=110)).replace(second=0, microsecond=0)
        small = _tree(sources / "small", {"a.txt": b"compose\n" * 1000, "b/c.bin": random_bytes(300_000, 1)})
        scheduled = await _api(http, topo, "POST", "/api/v1/plans",
                               _plan("scheduled", small, topo, slot.strftime("%H:%M")), 201)

        # 1. A backup and a restore through the gateway.
        first = await _api(http, topo, "POST", "/api/v1/plans", _plan("first", small, topo), 201)
        job = await _api(http, topo, "POST", f"/api/v1/plans/{first['id']}/backups", None, 202)
        done = await _wait_job(http, topo, job["id"], 60)
        assert done["status"] == "completed", (done.get("error"), done.get("warnings"))
        await _restore(http, topo, first, done["snapshot_id"], restores / "first")
        assert _digest(_restored(restores / "first", small)) == _digest(small)

        # 2. During a larger backup: kill -9 its snapshotter, its uploader and the meta leader.
        big = _tree(sources / "big", {f"f{i:03d}.bin": os.urandom(2 * 1024 * 1024) for i in range(BIG_FILES)})
        second = await _api(http, topo, "POST", "/api/v1/plans", _plan("second", big, topo), 201)
        job = await _api(http, topo, "POST", f"/api/v1/plans/{second['id']}/backups", None, 202)

        async def under_way() -> tuple[Proc, Proc] | None:
            # Its snapshotter took it and an uploader holds its session: both copies are at work.
            snapshotters = [p for p in topo.of("snapshotter") if f"job {job['id']}: backup" in p.text()]
            uploaders = [p for p in topo.of("uploader") if f"for job {job['id']}" in p.text()]
            return (snapshotters[0], uploaders[0]) if snapshotters and uploaders else None

        snapshotter, uploader = await _until("the big backup under way", under_way, 60, topo)
        state = await _api(http, topo, "GET", f"/api/v1/jobs/{job['id']}")
        assert state["status"] == "running", state  # killed in the middle, not after
        nodes = [p for p in topo.procs if p.service.startswith("nats-")]
        leader_name = next((j.get("meta_cluster", {}).get("leader") for j in map(_jsz, nodes) if j), None)
        leader = next(p for p in nodes if p.service == leader_name)
        for victim in (snapshotter, uploader, leader):
            victim.kill()
        killed_at = time.monotonic()
        done = await _wait_job(http, topo, job["id"], 120)
        failover = time.monotonic() - killed_at
        assert done["status"] == "completed", (done.get("error"), done.get("warnings"))
        assert done["attempt"] >= 2  # taken over by the other copy
        snaps = await _api(http, topo, "GET", f"/api/v1/plans/{second['id']}/snapshots")
        assert [s["id"] for s in snaps] == [done["snapshot_id"]]  # exactly once
        await _restore(http, topo, second, done["snapshot_id"], restores / "second")
        assert _digest(_restored(restores / "second", big)) == _digest(big)

        # 3. The slot fired exactly once (both schedulers were asking).
        async def fired() -> list[dict[str, Any]]:
            if datetime.now(UTC) < slot + timedelta(seconds=3):
                return []
            jobs: list[dict[str, Any]] = await _api(http, topo, "GET", f"/api/v1/plans/{scheduled['id']}/jobs")
            return [j for j in jobs if j["trigger"] == "schedule"]

        sched_jobs = await _until("the scheduled slot", fired, 150, topo)
        await asyncio.sleep(2)  # a second firing would show by now
        sched_jobs = await fired()
        assert len(sched_jobs) == 1 and sched_jobs[0]["slot"].startswith(slot.strftime("%Y-%m-%dT%H:%M")), sched_jobs
        assert (await _wait_job(http, topo, sched_jobs[0]["id"], 60))["status"] == "completed"

        # Streams are replicated to the cluster's size.
        survivor = next(p for p in nodes if p is not leader)
        streams = {s["name"]: s["config"]["num_replicas"] for s in
                   _jsz(survivor).get("account_details", [{}])[0].get("stream_detail", [])}
        assert streams == {"TV_WORK": 3, "TV_EVENTS": 3}, streams

        # How the work was split between the copies (from their logs and discovery figures).
        split = _work_split(topo)
        async with http.get(topo.gateway + "/metrics", headers=topo.headers) as resp:
            metrics = await resp.text()
            assert resp.status == 200
    assert 'timevault_jobs{kind="backup",status="completed"} 3' in metrics, metrics
    assert 'timevault_jobs{kind="restore",status="completed"} 2' in metrics, metrics
    report = {"elapsed_s": round(time.monotonic() - started, 1), "failover_s": round(failover, 1),
              "killed": [snapshotter.name, uploader.name, leader.name], "split": split,
              "load_average": os.getloadavg()}
    (artifact_dir / "work_split.json").write_text(json.dumps(report, indent=2))
    print("compose as processes:", json.dumps(report))
    for proc in topo.procs:  # no credential in any log
        text = proc.text()
        for secret in topo.env_file.values():
            if len(secret) > 12:
                assert secret not in text, proc.name


def _work_split(topo: Topology) -> dict[str, dict[str, int]]:
    split: dict[str, dict[str, int]] = {}
    for service, pattern in (("snapshotter", r"job (j_\w+): backup of plan"), ("uploader", r"session \S+ opened"),
                             ("scheduler", r"slot .* started job"), ("gateway", r"(?:GET|POST|PATCH) /api/v1/")):
        for proc in topo.of(service):
            split.setdefault(service, {})[proc.name] = len(re.findall(pattern, proc.text()))
    return split
