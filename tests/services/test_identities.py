"""Per-service NATS identities: the table matches the code, nats-server enforces it, and a whole
system under `timevault up` runs with it without a permission violation or a leaked credential."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from tests.services.conftest import ROOT
from tests.services.helpers import discover
from timevault.proto import subjects
from timevault.proto.jobs import RestoreRequest
from timevault.proto.plans import PlanRef
from timevault.proto.wire import encode
from timevault.services.common import identities
from timevault.services.common.natsd import NatsServer

pytestmark = pytest.mark.timeout(120)
SERVICES_DIR = ROOT / "services" / "timevault" / "services"
STREAM_DEFINITIONS = {"WORK_SUBJECTS"}  # a stream's subjects, not traffic of the service naming them
# Sample arguments for subject functions whose arguments the code computes.
SAMPLES = {"browse_instance": "instance.secret"}
# Modules that only define streams (their subjects are the streams' configuration).
NOT_TRAFFIC = {"work.py"}
# Subjects a service reads through a JetStream consumer: allowed by its consumer's API permission.
VIA_CONSUMER = {"snapshotter": {
    subjects.WORK_BACKUP: f"$JS.API.CONSUMER.MSG.NEXT.{subjects.WORK_STREAM}.snapshotter",
    subjects.WORK_PRUNE: f"$JS.API.CONSUMER.MSG.NEXT.{subjects.WORK_STREAM}.pruner",
}}


def covers(allow: str, used: str) -> bool:
    """Whether NATS permission `allow` admits every subject that `used` (maybe a wildcard) names."""
    a, u = allow.split("."), used.split(".")
    for i, token in enumerate(a):
        if token == ">":
            return len(u) > i
        if i >= len(u) or (token != "*" and token != u[i]) or (token == "*" and u[i] == ">"):
            return False
    return len(a) == len(u)


def _subjects_used(paths: list[Path]) -> set[str]:
    """Every subject a module names through `timevault.proto.subjects` (functions called with a sample token)."""
    used: set[str] = set()
    for path in paths:
        if path.name in NOT_TRAFFIC and path.parent.name == "common":
            continue
        tree = ast.parse(path.read_text())
        called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        for node in ast.walk(tree):
            call = node if isinstance(node, ast.Call) else None
            attr = call.func if call is not None else node
            if not (isinstance(attr, ast.Attribute) and isinstance(attr.value, ast.Name)
                    and attr.value.id == "subjects") or attr.attr in STREAM_DEFINITIONS:
                continue
            value = getattr(subjects, attr.attr)
            if callable(value):
                if call is None:
                    continue  # seen as the call
                # Literal arguments as written, a sample token for the rest ("frames" for an op).
                args = [a.value if isinstance(a, ast.Constant) else SAMPLES.get(attr.attr, "x") for a in call.args]
                if attr.attr == "upload_session":
                    args[1:] = [a if a in ("frames", "flush", "close", "ping") else "frames" for a in args[1:]]
                if attr.attr == "browse_op":
                    args[1:] = [a if a in subjects.BROWSE_OPS else "ls" for a in args[1:]]
                value = value(*args)
            elif id(attr) in called:
                continue
            if isinstance(value, str) and value.startswith("tv."):
                used.add(value)
    return used


def _modules_of(service: str) -> list[Path]:
    """The service's own modules and the shared helpers (services/common) they import."""
    own = sorted((SERVICES_DIR / service).glob("*.py"))
    common: set[Path] = set()
    todo = list(own)
    while todo:
        for node in ast.walk(ast.parse(todo.pop().read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if name.startswith("timevault.services.common."):
                    path = SERVICES_DIR / "common" / (name.split(".")[3] + ".py")
                    if path.exists() and path not in common:
                        common.add(path)
                        todo.append(path)
    return own + sorted(common)


@pytest.mark.parametrize("service", [s for s in identities.SERVICES])
def test_every_subject_a_service_uses_is_allowed_to_it(service: str) -> None:
    identity = identities.identities()[service]
    allowed = (*identity.publish, *identity.subscribe)
    used = _subjects_used(_modules_of(service))
    assert used, f"no subjects found for {service}"
    for subject, api in VIA_CONSUMER.get(service, {}).items():
        assert api in identity.publish
        used.discard(subject)
    missing = sorted(s for s in used if not any(covers(a, s) for a in allowed))
    assert not missing, f"{service} uses {missing} but its identity does not allow them"


def test_sensitive_subjects_are_confined() -> None:
    table = identities.identities()
    secrets_askers = {u for u, i in table.items() if any(covers(a, subjects.PLAN_SECRETS) for a in i.publish)}
    assert secrets_askers == {"snapshotter", "uploader", "restorer"}
    for carrying_passwords in (subjects.RESTORE_START, subjects.BROWSE_OPEN, subjects.browse_op("x", "ls")):
        readers = {u for u, i in table.items() if any(covers(a, carrying_passwords) for a in i.subscribe)}
        assert readers == {"restorer"}, carrying_passwords
    operator = table[identities.OPERATOR]
    assert operator.publish == ("$SRV.>",) and operator.subscribe == (subjects.EVENTS_ALL,)
    assert not operator.responses
    for user, identity in table.items():  # nobody may read another identity's replies
        assert not any(covers(a, "_INBOX.x.y") for a in identity.subscribe), user


def test_deploy_users_conf_is_generated_from_the_table() -> None:
    path = ROOT / "deploy" / "nats" / "users.conf"
    assert path.read_text() == identities.users_conf(), (
        "deploy/nats/users.conf is stale: python -m timevault.services.common.identities > deploy/nats/users.conf")


# --- the real nats-server enforces it -----------------------------------------------------------


async def _connect(server: NatsServer, user: str, errors: list[str]) -> NATS:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    return await nats.connect(server.user_url(user), inbox_prefix=identities.inbox_prefix(user),
                              error_cb=on_error, allow_reconnect=False)


async def _violation(errors: list[str], what: str, seconds: float = 3) -> None:
    deadline = time.monotonic() + seconds
    while not any("permissions violation" in e.lower() and what.lower() in e.lower() for e in errors):
        assert time.monotonic() < deadline, f"no permission violation for {what}: {errors}"
        await asyncio.sleep(0.05)


async def test_only_the_restorer_receives_restore_requests(tmp_path: Path) -> None:
    users = {user: f"tv{user}password" for user in (*identities.SERVICES, identities.OPERATOR)}
    server = NatsServer(tmp_path / "nats", users=users)
    server.start()
    clients: list[NATS] = []
    try:
        received: dict[str, list[bytes]] = {}
        errors: dict[str, list[str]] = {}
        for user in users:
            errors[user] = []
            nc = await _connect(server, user, errors[user])
            clients.append(nc)
            received[user] = []

            async def got(msg: object, user: str = user) -> None:
                received[user].append(msg.data)  # type: ignore[attr-defined]  # a nats Msg

            await nc.subscribe(subjects.RESTORE_START, queue=subjects.RESTORER_QUEUE, cb=got)
            await nc.flush()
        for user in users:
            if user != "restorer":
                await _violation(errors[user], subjects.RESTORE_START)
        assert not errors["restorer"]

        gateway = clients[list(users).index("gateway")]
        request = RestoreRequest(plan="p", snapshot="latest", target="/tmp/x", password="the secret")
        await gateway.publish(subjects.RESTORE_START, encode(request))
        await gateway.flush()
        deadline = time.monotonic() + 3
        while not received["restorer"]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        assert {u: len(m) for u, m in received.items() if m} == {"restorer": 1}

        # The gateway cannot ask for a plan's write keys, nor read another identity's replies.
        errors["gateway"].clear()
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await gateway.request(subjects.PLAN_SECRETS, encode(PlanRef(plan="p")), timeout=0.5)
        await _violation(errors["gateway"], subjects.PLAN_SECRETS)
        await gateway.subscribe("_INBOX.snapshotter.>")
        await _violation(errors["gateway"], "_INBOX.snapshotter.>")
        # The operator: discovery yes, requests to services no.
        operator = clients[list(users).index(identities.OPERATOR)]
        await operator.publish(subjects.PLAN_LIST, b"{}")
        await _violation(errors[identities.OPERATOR], subjects.PLAN_LIST)
    finally:
        for nc in clients:
            await nc.close()
        server.stop()


# --- a whole system under `up` --------------------------------------------------------------


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        child, parent = map(int, line.split())
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


async def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", "import sys; from timevault.cli.main import main; sys.exit(main(sys.argv[1:]))", *argv],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=90)


@pytest.mark.slow
async def test_up_backup_and_restore_leak_no_credential(tmp_path: Path) -> None:
    """Backup and restore through `up --log-format json`: no password, token or plan password in
    any log or process argument, logs 0600, data folder forced to 0700, every service log line
    JSON, no permission violation anywhere, and discovery reports per-endpoint figures."""
    data = tmp_path / "data"
    (data / "logs").mkdir(parents=True)
    data.chmod(0o755)
    (data / "logs" / "catalog.log").write_text("")
    (data / "logs" / "catalog.log").chmod(0o644)
    proc = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child we signal
        [sys.executable, "-c", "import sys; from timevault.cli.main import main; sys.exit(main(sys.argv[1:]))",
         "up", "--data-dir", str(data), "--listen", "127.0.0.1:0", "--log-format", "json"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    info_path = data / "gateway.json"
    d = ("--data-dir", str(data))
    try:
        deadline = time.monotonic() + 40
        while not info_path.exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        info = json.loads(info_path.read_text())
        src = tmp_path / "src"
        src.mkdir()
        (src / "doc.txt").write_text("identities\n" * 100)
        pw = tmp_path / "pw"
        plan_password = "plan-password-4f9a1c"
        pw.write_text(plan_password + "\n")
        pw.chmod(0o600)
        r = await _cli("plan", "create", "ids", "--source", str(src), "--daily", "--at", "04:00",
                       "--location", str(tmp_path / "repo"), "--password-file", str(pw), *d)
        assert r.returncode == 0, r.stderr
        r = await _cli("backup", "ids", "--wait", *d)
        assert r.returncode == 0, r.stderr
        r = await _cli("plan", "show", "ids", "--json", *d)
        snapshot = json.loads(r.stdout)["snapshots"][0]["id"]
        out = tmp_path / "out"
        r = await _cli("restore", "ids", snapshot, "--target", str(out), "--password-file", str(pw), "--wait", *d)
        assert r.returncode == 0, r.stderr
        assert next(out.rglob("doc.txt")).read_text() == "identities\n" * 100

        nc = await nats.connect(info["nats"], inbox_prefix=info["nats_inbox_prefix"])
        try:
            stats = {s["name"]: s for s in await discover(nc, "STATS")}
        finally:
            await nc.close()
        catalog = {e["name"]: e for e in stats["catalog"]["endpoints"]}
        assert catalog[subjects.JOB_FINISH]["num_requests"] >= 2
        assert catalog[subjects.JOB_FINISH]["average_processing_time"] > 0
        assert stats["gateway"]["endpoints"] and stats["uploader"]["endpoints"]

        secrets = {plan_password, info["token"], info["nats"].split("//")[1].split("@")[0].split(":")[1]}
        for pid in _descendants(proc.pid):
            env = _environ(pid)
            secrets |= {v for k, v in env.items() if k.endswith("_PASSWORD") or k == "TIMEVAULT_TOKEN"}
        assert len(secrets) >= 9  # plan password, token, operator and six service passwords
        ps = subprocess.run(["ps", "-e", "-ww", "-o", "args="], capture_output=True, text=True).stdout  # noqa: ASYNC221
        for secret in secrets:
            assert secret not in ps
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=40)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    logs = sorted((data / "logs").iterdir())
    assert {p.name for p in logs} >= {f"{s}.log" for s in identities.SERVICES} | {"nats-server.log"}
    for path in logs:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        text = path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"a credential in {path.name}"
        assert "violation" not in text.lower(), f"{path.name}: {text[-2000:]}"
        if path.name != "nats-server.log":
            for line in text.splitlines():
                entry = json.loads(line)  # one JSON object per line, the same keys for every service
                assert {"ts", "level", "service", "logger", "msg"} <= set(entry), line
    for secret in secrets:
        assert secret.encode() not in err
    for line in err.decode().splitlines():
        assert json.loads(line)["service"] == "up"
