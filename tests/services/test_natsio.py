"""The nats-py adjustments for large messages: same bytes on the wire, same messages delivered."""

from __future__ import annotations

import asyncio
import os

import nats
import nats.aio.client
import nats.protocol.command

from services.common import natsio
from tests.services.conftest import NatsServer


def test_pub_cmd_writes_what_nats_py_writes() -> None:
    for payload in (b"", b"x", os.urandom(70_000)):
        expected = f"PUB tv.a _INBOX.r {len(payload)}\r\n".encode() + payload + b"\r\n"
        assert natsio._pub_cmd("tv.a", "_INBOX.r", payload) == expected


async def test_large_and_small_messages_arrive_intact(nats_server: NatsServer) -> None:
    natsio.tune_nats_client()
    assert nats.protocol.command.pub_cmd is natsio._pub_cmd
    assert nats.aio.client.DEFAULT_BUFFER_SIZE >= natsio.READ_SIZE
    sender = await nats.connect(nats_server.url)
    receiver = await nats.connect(nats_server.url)
    try:
        got: list[tuple[bytes, dict[str, str] | None]] = []

        async def echo(msg: nats.aio.msg.Msg) -> None:
            got.append((msg.data, msg.headers))
            await msg.respond(msg.data[:16])

        await receiver.subscribe("tv.test.natsio", cb=echo)
        await receiver.flush()
        payloads = [os.urandom(3 * 1024 * 1024 + 7), b"small", b"", os.urandom(1024 * 1024 + 1)]
        replies = await asyncio.gather(
            *(sender.request("tv.test.natsio", p, timeout=10) for p in payloads),
            sender.request("tv.test.natsio", b"with headers", headers={"X-Tv": "1"}, timeout=10),
        )
        assert [r.data for r in replies] == [p[:16] for p in payloads] + [b"with headers"]
        assert sorted(data for data, _ in got) == sorted([*payloads, b"with headers"])
        assert any(headers == {"X-Tv": "1"} for _, headers in got)
    finally:
        await sender.close()
        await receiver.close()
