"""The private nats-server (`services.common.natsd`): a port taken between picking it and the
server's bind costs a retry on other ports, never a failed start."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from timevault.services.common.natsd import PORT_ATTEMPTS, NatsServer


def _occupy(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


@pytest.mark.parametrize("taken", ["client", "monitor"])
def test_a_port_taken_before_the_bind_is_picked_again(tmp_path: Path, taken: str) -> None:
    server = NatsServer(tmp_path / "nats")
    lost = server.port if taken == "client" else server.monitor_port
    with _occupy(lost):  # what another process could do between free_port and the bind
        server.start()
        try:
            assert lost not in (server.port, server.monitor_port)
            assert server.running()
            assert b"address already in use" in (tmp_path / "nats" / "nats-server.log").read_bytes()
        finally:
            server.stop()


def test_a_given_port_in_use_fails_after_the_attempts(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = NatsServer(tmp_path / "nats", port=port)
    with _occupy(port), pytest.raises(RuntimeError, match="nats-server exited"):
        server.start(timeout=10)
    log = (tmp_path / "nats" / "nats-server.log").read_bytes()
    assert log.count(b"address already in use") == PORT_ATTEMPTS
    assert server.port == port  # a port the caller chose is never swapped for another
