"""The nats-py adjustments for large messages: same bytes on the wire, same messages delivered."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os

import nats
import nats.aio.client
import nats.protocol.command
import nats.protocol.parser
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.services.conftest import NatsServer
from timevault.services.common import natsio


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


async def test_parts_bodies_arrive_as_one_message(nats_server: NatsServer) -> None:
    natsio.tune_nats_client()
    sender = await nats.connect(nats_server.url)
    receiver = await nats.connect(nats_server.url)
    try:
        async def echo(msg: nats.aio.msg.Msg) -> None:
            await msg.respond(hashlib.sha256(msg.data).digest() + len(msg.data).to_bytes(8, "big"))

        await receiver.subscribe("tv.test.parts", cb=echo)
        await receiver.flush()
        big = os.urandom(2 * 1024 * 1024 + 3)
        bodies: list[list[natsio.Buffer]] = [
            [b"head", memoryview(big)[5:], bytearray(b"tail")],  # large parts mixed with small
            [os.urandom(natsio.DIRECT_WRITE)] * 3,  # the same buffer several times
            [b"", b"", b"x"],
            [],
        ]
        # nats-py annotates payloads as bytes; with the adjustments it sends a Parts body as is.
        replies = await asyncio.gather(*(sender.request("tv.test.parts", natsio.Parts(b),  # type: ignore[arg-type]
                                                        timeout=10)
                                         for b in bodies))
        for body, reply in zip(bodies, replies, strict=True):
            joined = b"".join(bytes(part) for part in body)
            assert reply.data == hashlib.sha256(joined).digest() + len(joined).to_bytes(8, "big")
    finally:
        await sender.close()
        await receiver.close()


class _Recorder:
    """Stands in for the client behind a parser: records what it dispatches."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, hdr: bytes | None) -> None:
        self.events.append(("msg", (sid, bytes(subject), bytes(reply), bytes(data), hdr)))

    async def _process_ping(self) -> None:
        self.events.append(("ping", None))

    async def _process_pong(self) -> None:
        self.events.append(("pong", None))


def _wire(messages: list[bytes]) -> tuple[bytes, list[int]]:
    """The bytes a server would send, and where each MSG's payload ends."""
    out, ends, size = [b"PING\r\n"], [], 6
    for i, payload in enumerate(messages):
        reply = f" _INBOX.{i}" if i % 2 else ""
        out.append(f"MSG tv.s.{i} {i + 1}{reply} {len(payload)}\r\n".encode() + payload + b"\r\n")
        size += len(out[-1])
        ends.append(size - 2)
        if i % 3 == 0:
            out.append(b"HMSG tv.h 9 12 15\r\nNATS/1.0\r\n\r\nabc\r\n")
        out.append(b"PONG\r\n")
        size += len(out[-1]) + (len(out[-2]) if i % 3 == 0 else 0)
    return b"".join(out), ends


async def _parse_in_reads(parse: object, stream: bytes, cuts: list[int]) -> list[tuple[str, object]]:
    recorder = _Recorder()
    parser = nats.protocol.parser.Parser(recorder)
    bounds = [0, *sorted(set(cuts)), len(stream)]
    for start, end in itertools.pairwise(bounds):
        await parse(parser, stream[start:end])  # type: ignore[operator]
    return recorder.events


@given(st.lists(st.sampled_from([0, 1, 100, natsio.LARGE - 1, natsio.LARGE, natsio.LARGE + 70_001]), max_size=5),
       st.data())
@settings(max_examples=80, deadline=None)
def test_large_payload_parser_matches_nats_py(sizes: list[int], data: st.DataObject) -> None:
    natsio.tune_nats_client()
    stream, ends = _wire([os.urandom(n) for n in sizes])
    # Reads end anywhere: inside control lines and payloads, and around a payload's end (its
    # CRLF may come with the next read, or be split).
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    if ends:
        cuts += data.draw(st.lists(st.builds(int.__add__, st.sampled_from(ends), st.integers(-1, 3)), max_size=6))
    expected = asyncio.run(_parse_in_reads(natsio._original_parse, stream, cuts))
    got = asyncio.run(_parse_in_reads(nats.protocol.parser.Parser.parse, stream, cuts))
    assert got == expected
    assert sum(1 for kind, _ in got if kind == "msg") == len(sizes) + len(range(0, len(sizes), 3))
