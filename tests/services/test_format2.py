"""Format 2 through the services: endorsement marks, restore roots, set-id bits, private endpoints."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from tests.services.conftest import ServiceProc
from tests.services.helpers import PASSWORD, create_plan, wait_job
from tests.services.test_end_to_end import backup_now
from timevault.proto import subjects
from timevault.proto.errors import ServiceError
from timevault.proto.jobs import Job, RestoreRequest
from timevault.proto.plans import Location, Plan, PlanCreate, PlanDetail, PlanRef, Schedule
from timevault.services.common import rpc
from timevault.services.common.locations import ALLOW_PRIVATE_ENV, open_service_location

pytestmark = pytest.mark.timeout(120)


async def _snapshots(nc: NATS, plan_id: str) -> PlanDetail:
    return await rpc.request(nc, subjects.PLAN_GET, PlanRef(plan=plan_id), PlanDetail)


async def test_restore_endorses_and_the_catalog_shows_it(catalog: NATS, workers: dict[str, ServiceProc],
                                                         tmp_path: Path) -> None:
    src = tmp_path / "data"
    src.mkdir()
    (src / "tool").write_text("#!/bin/sh\n")
    os.chmod(src / "tool", 0o4755)
    plan = await create_plan(catalog, "endorse", [src], tmp_path / "repo")
    first = await backup_now(catalog, plan.id)
    assert first.status == "completed", first.error
    detail = await _snapshots(catalog, plan.id)
    (snap,) = [s for s in detail.snapshots if s.status == "completed"]
    assert snap.endorsed is False  # written by the services, without the password

    target = tmp_path / "restored"
    job = await rpc.request(catalog, subjects.RESTORE_START, RestoreRequest(
        plan=plan.id, snapshot=snap.id, target=str(target), password=PASSWORD), Job, timeout=30)
    job = await wait_job(catalog, job.id)
    assert job.status == "completed", job.error
    (tool,) = target.rglob("tool")
    assert stat.S_IMODE(tool.stat().st_mode) == 0o755  # set-user-ID dropped
    assert [s.endorsed for s in (await _snapshots(catalog, plan.id)).snapshots if s.status == "completed"] == [True]

    kept = tmp_path / "kept"
    job = await rpc.request(catalog, subjects.RESTORE_START, RestoreRequest(
        plan=plan.id, snapshot=snap.id, target=str(kept), password=PASSWORD, keep_setid=True), Job, timeout=30)
    assert (await wait_job(catalog, job.id)).status == "completed"
    (tool,) = kept.rglob("tool")
    assert stat.S_IMODE(tool.stat().st_mode) == 0o4755


@pytest.mark.parametrize("target", ["/etc/timevault-restore", "/root/x", "{tmp}/.ssh", "{tmp}/a/.config/b"])
async def test_api_restore_must_land_under_a_restore_root(catalog: NATS, workers: dict[str, ServiceProc],
                                                          tmp_path: Path, target: str) -> None:
    src = tmp_path / "data"
    src.mkdir()
    (src / "f").write_text("x")
    plan = await create_plan(catalog, f"roots-{abs(hash(target)) % 10**6}", [src], tmp_path / "repo")
    assert (await backup_now(catalog, plan.id)).status == "completed"
    target = target.format(tmp=tmp_path)
    with pytest.raises(ServiceError) as info:
        await rpc.request(catalog, subjects.RESTORE_START, RestoreRequest(
            plan=plan.id, snapshot="latest", target=target, password=PASSWORD), Job, timeout=30)
    assert info.value.code == "invalid" and info.value.field == "target"
    assert not os.path.lexists(target)


async def test_private_s3_endpoints_are_refused_in_service_mode(catalog: NATS, tmp_path: Path) -> None:
    for endpoint in ("http://127.0.0.1:9", "http://169.254.169.254", "http://10.0.0.1:9000", "http://[::1]:9"):
        req = PlanCreate(name="private", sources=[str(tmp_path)], password=PASSWORD, password_confirm=PASSWORD,
                         schedule=Schedule(frequency="daily", time="03:00"),
                         location=Location(type="s3", bucket="bucket", endpoint=endpoint, region="us-east-1"))
        with pytest.raises(ServiceError) as info:
            await rpc.request(catalog, subjects.PLAN_CREATE, req, Plan, timeout=20)
        assert info.value.field == "location", info.value
        assert "private" in info.value.message and "--allow-private-endpoints" in info.value.message


def test_private_endpoints_allowed_by_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "s3://bucket/p?endpoint=http://127.0.0.1:9000&region=us-east-1"
    monkeypatch.delenv(ALLOW_PRIVATE_ENV, raising=False)
    with pytest.raises(ValueError, match="private"):
        open_service_location(url)
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, "1")
    assert open_service_location(url).location == "s3://bucket/p"


async def test_name_resolving_to_loopback_is_not_connected_to() -> None:
    """A name that resolves (or is rebound) to an internal address: the resolver drops it."""
    from timevault.core.storage.s3 import _PublicOnlyResolver

    resolver = _PublicOnlyResolver()
    try:
        with pytest.raises(OSError, match="private"):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()


async def test_upload_session_needs_the_jobs_sealed_key(tmp_path: Path) -> None:
    """Format 2 packs carry the job's sealed data key once: a session without it is refused."""
    import nats as nats_client

    from timevault.core.repository import Repository
    from timevault.core.storage import open_location
    from timevault.proto.plans import PlanSecrets
    from timevault.proto.upload import UploadOpen, UploadOpened
    from timevault.services.common.natsd import NatsServer
    from timevault.services.uploader.service import UploaderService

    server = NatsServer(tmp_path / "nats")
    server.start()
    nc = await nats_client.connect(server.url)
    try:
        repo = await Repository.init(open_location(str(tmp_path / "repo")), PASSWORD)
        keys = repo.export_write_keys()

        async def secrets(_req: PlanRef) -> PlanSecrets:
            return PlanSecrets(plan_id="p_x", location=str(tmp_path / "repo"), write_keys=keys)

        await rpc.serve(nc, subjects.PLAN_SECRETS, PlanRef, secrets)
        uploader = UploaderService(nc)
        await uploader.start()
        for sealed in (b"", b"x" * 10):
            with pytest.raises(ServiceError) as info:
                await rpc.request(nc, subjects.UPLOAD_OPEN, UploadOpen(job_id="j", plan_id="p_x", sealed_key=sealed),
                                  UploadOpened)
            assert info.value.field == "sealed_key"
        await uploader.stop()
        await repo.close()
    finally:
        await nc.close()
        server.stop()
