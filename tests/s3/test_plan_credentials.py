"""An S3 access key given for a plan (as the web UI and the API do) instead of the environment of
`timevault up`: the services run with no AWS credentials at all, yet create, back up, restore,
browse and delete work with the key the catalog keeps; the key never comes back in a reply."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from tests.faults.system import System
from tests.s3.conftest import PASSWORD, s3_location
from tests.services.helpers import wait_job
from timevault.proto import subjects
from timevault.proto.browse import BrowseList, BrowseListing, BrowseOpen, BrowseSession
from timevault.proto.errors import ServiceError
from timevault.proto.jobs import Job, JobCreate, RestoreRequest
from timevault.proto.plans import (
    Location,
    Plan,
    PlanCreate,
    PlanDeleted,
    PlanDetail,
    PlanList,
    PlanListRequest,
    PlanRef,
    S3Credentials,
    Schedule,
    parse_location,
)
from timevault.services.common import rpc
from timevault.services.common.natsd import NatsServer

pytestmark = [pytest.mark.s3, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
KEY_ID, SECRET = "AKIAPLANKEY0001", "plan-secret-0123456789abcdef"


@pytest.fixture
def keyless_services(tmp_path: Path) -> Iterator[str]:
    """NATS and the services, with every AWS credential removed from their environment."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(PYTHONPATH=str(ROOT), AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull,
               AWS_SHARED_CREDENTIALS_FILE=os.devnull, HOME=str(tmp_path / "home"),
               TIMEVAULT_ALLOW_PRIVATE_ENDPOINTS="1")  # moto listens on loopback
    (tmp_path / "home").mkdir()
    procs = []
    for name, *args in (("catalog", "--db", str(tmp_path / "catalog.db"), "--kdf-n", "1024"),
                        ("uploader",), ("snapshotter", "--data-dir", str(tmp_path / "w")), ("restorer",)):
        log = open(tmp_path / f"{name}.log", "wb")
        procs.append((subprocess.Popen([sys.executable, "-m", f"timevault.services.{name}", "--nats", server.url,
                                        *args], env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                       cwd=ROOT), log))
    try:
        yield server.url
    finally:
        for proc, log in procs:
            proc.terminate()
            proc.wait(15)
            log.close()
        server.stop()
    for path in tmp_path.glob("*.log"):
        assert SECRET not in path.read_text(errors="replace"), f"the secret key is in {path.name}"


async def test_a_plan_with_its_own_access_key(keyless_services: str, moto_endpoint: str, s3_bucket: str,
                                             tmp_path: Path) -> None:
    nc = await nats.connect(keyless_services)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                await rpc.request(nc, subjects.PLAN_LIST, PlanListRequest(), PlanList, timeout=1)
                break
            except ServiceError:
                assert time.monotonic() < deadline
        src = tmp_path / "src"
        src.mkdir()
        (src / "a.txt").write_text("in the cloud")
        schedule = Schedule(frequency="daily", time="03:00", timezone="UTC")

        def request(prefix: str, credentials: S3Credentials | None) -> PlanCreate:
            location: Location = parse_location(s3_location(moto_endpoint, s3_bucket, prefix))
            return PlanCreate(name=prefix, sources=[str(src)], schedule=schedule, location=location,
                              password=PASSWORD, password_confirm=PASSWORD, credentials=credentials)

        # Without a key and without AWS settings, the location cannot be written: a clear error.
        with pytest.raises(ServiceError) as err:
            await rpc.request(nc, subjects.PLAN_CREATE, request("nokey", None), Plan, timeout=60)
        assert err.value.code == "invalid" and err.value.field == "location" and "credentials" in err.value.message

        plan = await rpc.request(nc, subjects.PLAN_CREATE, request("withkey", S3Credentials(
            access_key_id=KEY_ID, secret_access_key=SECRET)), Plan, timeout=60)
        assert plan.credentials_stored
        job = await rpc.request(nc, subjects.JOB_CREATE, JobCreate(plan=plan.id), Job)
        done = await wait_job(nc, job.id, 90)
        assert done.status == "completed", done.error
        target = tmp_path / "restored"
        restore = await rpc.request(nc, subjects.RESTORE_START, RestoreRequest(
            plan=plan.id, snapshot="latest", target=str(target), password=PASSWORD), Job, timeout=60)
        assert (await wait_job(nc, restore.id, 60)).status == "completed"
        assert (target / str(src).lstrip("/") / "a.txt").read_text() == "in the cloud"
        session = await rpc.request(nc, subjects.BROWSE_OPEN, BrowseOpen(plan=plan.id, password=PASSWORD),
                                    BrowseSession, timeout=60)
        listing = await rpc.request(nc, subjects.browse_op(subjects.browse_instance(session.session), "ls"),
                                    BrowseList(session=session.session, snapshot="latest", path=str(src)),
                                    BrowseListing)
        assert [e.name for e in listing.entries] == ["a.txt"]
        # The key is kept, never shown: not in the plan, its list, nor its log.
        detail = await rpc.request(nc, subjects.PLAN_GET, PlanRef(plan=plan.id), PlanDetail)
        listed = await rpc.request(nc, subjects.PLAN_LIST, PlanListRequest(), PlanList)
        for reply in (plan, detail, listed):
            assert SECRET not in repr(reply) and KEY_ID not in repr(reply)
        deleted = await rpc.request(nc, subjects.PLAN_DELETE, PlanRef(plan=plan.id), PlanDeleted, timeout=120)
        assert deleted.deleted_objects > 0
    finally:
        await nc.close()


class KeylessSystem(System):
    """`timevault up` and the CLI with no AWS credential in their environment."""

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in super().env.items() if not k.startswith("AWS_")}
        env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull,
                   AWS_SHARED_CREDENTIALS_FILE=os.devnull, TIMEVAULT_ALLOW_PRIVATE_ENDPOINTS="1")
        return env


def test_cli_gives_a_plan_its_access_key(moto_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    secret_file = tmp_path / "s3-secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    system = KeylessSystem(tmp_path / "sys", password_file)
    system.start()
    try:
        src = tmp_path / "src"
        src.mkdir()
        (src / "a.txt").write_text("in the cloud, by the CLI")
        location = s3_location(moto_endpoint, s3_bucket, "cli-key")
        base = ("plan", "create", "keyed", "--source", src, "--daily", "--at", "03:00", "--timezone", "UTC")

        half = system.cli(*base, "--location", location, "--s3-access-key-id", KEY_ID)
        assert half.returncode == 2 and "--s3-secret-access-key-file" in half.stderr, half
        local = system.cli(*base, "--location", tmp_path / "vault", "--s3-access-key-id", KEY_ID,
                           "--s3-secret-access-key-file", secret_file)
        assert local.returncode == 2 and "s3:// location" in local.stderr, local
        unreadable = system.cli(*base, "--location", location, "--s3-access-key-id", KEY_ID,
                                "--s3-secret-access-key-file", tmp_path / "no-such-file")
        assert unreadable.returncode == 2 and "no-such-file" in unreadable.stderr, unreadable
        assert "Traceback" not in half.stderr + local.stderr + unreadable.stderr

        created = system.cli(*base, "--location", location, "--s3-access-key-id", KEY_ID,
                             "--s3-secret-access-key-file", secret_file)
        assert created.returncode == 0, created
        backup = system.cli("backup", "keyed", "--wait")
        assert backup.returncode == 0, backup
        restored = system.cli("restore", "keyed", "latest", "--target", tmp_path / "out", "--wait")
        assert restored.returncode == 0, restored
        assert (tmp_path / "out" / str(src).lstrip("/") / "a.txt").read_text() == "in the cloud, by the CLI"
        shown = system.cli("plan", "show", "keyed", "--json")
        assert shown.returncode == 0 and SECRET not in shown.stdout, shown
        assert SECRET not in system.logs()
    finally:
        system.stop()
