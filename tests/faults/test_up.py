"""`timevault up` as a supervisor: nats-server restarted like any service, no orphans, no second
nats-server on one store, and `--wait` that gives up (with a clear line) rather than hang."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.core.conftest import PASSWORD
from tests.faults.system import System, alive, children_of
from timevault.cli.system import Gateway, GatewayUnreachable
from timevault.services.common import identities
from timevault.services.common.natsd import find_nats_server, free_port

pytestmark = [pytest.mark.timeout(180)]


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    password = tmp_path / "pw"
    password.write_text(PASSWORD + "\n")
    password.chmod(0o600)
    s = System(tmp_path / "sys", password)
    yield s
    s.stop()


def _nats_servers_on(store: Path) -> list[int]:
    conf = str(store / "nats-server.conf")
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and alive(int(entry)):
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"nats-server") and conf.encode() in argv:
                found.append(int(entry))
    return found


def test_nats_server_is_restarted_each_time_it_dies(system: System, tmp_path: Path) -> None:
    system.start()
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("hello\n")
    created = system.cli("plan", "create", "p", "--source", src, "--daily", "--at", "03:00", "--location",
                         tmp_path / "repo", "--timezone", "UTC", "--password-file", system.password_file)
    assert created.returncode == 0, created.stderr
    port_line = (system.data / "nats" / "nats-server.conf").read_text()
    for _ in range(3):
        old = system.kill("nats")
        system.wait_back("nats", old)
    assert (system.data / "nats" / "nats-server.conf").read_text() == port_line, "same port, store and token"
    deadline = time.monotonic() + 15  # the services reconnect and subscribe again within moments
    while (shown := system.cli("plan", "show", "p")).returncode != 0:
        assert "no service answers" in shown.stderr and time.monotonic() < deadline, shown.stderr
        time.sleep(0.2)
    backup = system.cli("backup", "p", "--wait")
    assert backup.returncode == 0, backup.stderr + system.logs()
    assert len(_nats_servers_on(system.data / "nats")) == 1
    assert "<defunct>" not in subprocess.run(["ps", "-o", "cmd=", "--ppid", str(system.proc.pid)],  # type: ignore[union-attr]
                                             capture_output=True, text=True).stdout


def test_kill_9_of_up_alone_takes_every_child_with_it(system: System) -> None:
    system.start()
    assert system.proc is not None
    children = children_of(system.proc.pid)
    assert len(children) >= 7, children  # nats-server, five services and the gateway
    os.kill(system.proc.pid, signal.SIGKILL)  # only up: its children are in other groups or unaware
    system.proc.wait()
    deadline = time.monotonic() + 5
    while survivors := [pid for pid in children if alive(pid)]:
        assert time.monotonic() < deadline, f"orphans: {survivors}"
        time.sleep(0.05)
    system.start()  # and the next up starts cleanly on the same data dir
    assert len(_nats_servers_on(system.data / "nats")) == 1


def test_a_stale_nats_server_on_the_store_is_stopped_first(system: System) -> None:
    system.start()
    assert system.stop() == 0
    store = system.data / "nats"
    # A nats-server left behind on the store (started by hand, or by an up on a system without
    # parent-death signals): same config, so same store and pid file.
    # Its config names the services' passwords as environment variables (up's run gave it them).
    env = {**os.environ, **{identities.password_env(u): "stale" for u in (*identities.SERVICES, identities.OPERATOR)}}
    stale = subprocess.Popen([find_nats_server(), "-c", str(store / "nats-server.conf")], start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 10
        while not (store / "nats-server.pid").exists() or \
                (store / "nats-server.pid").read_text().strip() != str(stale.pid):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        system.start()
        stale.wait(15)  # stopped by the new up before it started its own
        assert _nats_servers_on(store) == [system.pid("nats")]
        assert "stale nats-server" in system.log.read_text()
    finally:
        if stale.poll() is None:
            stale.kill()
            stale.wait()


def test_wait_gives_up_with_one_line_when_nobody_answers() -> None:
    gateway = Gateway(f"http://127.0.0.1:{free_port()}", "t" * 32)
    started = time.monotonic()
    with pytest.raises(GatewayUnreachable, match=r"did not answer for 2 s"):
        gateway.call_patiently("GET", "/jobs/j_0", patience=1.5)
    assert 1.5 <= time.monotonic() - started < 5
