"""Adjustments to nats-py for the megabyte-sized messages that carry blobs.

nats-py copies each message several times on its way, all while holding the GIL, on a machine
where compression and encryption need the same cores. Profiles of a backup showed the uploader's
event loop spending more time in nats-py's parser than anywhere else, and the snapshotter's in
building and joining message bodies. This module removes most of those copies:

- **Sending** (`Parts`, `_pub_cmd`, `_writelines`): a body may be given as a list of buffers
  (say, a small head and the blobs' own bytes). Neither the body nor the ``PUB`` command is
  joined into one bytes object: large buffers go to the socket as they are, and only what the
  kernel does not take at once is copied, once, into the transport's buffer. For a plain bytes
  body, the ``PUB`` line is built with one copy instead of two.
- **Receiving** (`_parse`): a message of `LARGE` bytes or more is copied from the socket reads
  straight into a buffer of its own, instead of being appended to the parser's buffer, sliced
  out (two more copies) and cut from its front. Such a message's ``data`` is a ``bytearray``.
  The socket is also read 1 MiB at a time instead of 32 KiB.

All of these replace module-level names that nats-py looks up at call time (the TCP transport's
``writelines`` is a class attribute); `tune_nats_client` applies them once per process, and with
a nats-py that no longer has them, nothing changes. Only the plain TCP transport is adjusted
(TimeVault connects to ``nats://`` URLs); `Parts` bodies need it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import nats.aio.client
import nats.aio.transport
import nats.protocol.command
import nats.protocol.parser as nats_parser

READ_SIZE = 1024 * 1024
# Messages at least this large are collected into their own buffer when received.
LARGE = 256 * 1024
# Buffers at least this large are handed to the socket on their own instead of being joined.
DIRECT_WRITE = 64 * 1024

Buffer = bytes | bytearray | memoryview


class Parts:
    """A message body given as several buffers, sent without joining them.

    Pass it as the payload of ``nc.publish`` or ``nc.request``; the receiver sees one message,
    the buffers' concatenation. The buffers must not change until the message is flushed.
    """

    __slots__ = ("buffers", "size")

    def __init__(self, buffers: Iterable[Buffer]) -> None:
        self.buffers = [memoryview(b).cast("B") if isinstance(b, memoryview) else b for b in buffers]
        self.size = sum(len(b) for b in self.buffers)

    def __len__(self) -> int:
        return self.size


class _Command:
    """A ``PUB`` command whose body stays in parts, for `_writelines`."""

    __slots__ = ("buffers", "size")

    def __init__(self, buffers: list[Buffer]) -> None:
        self.buffers = buffers
        self.size = sum(len(b) for b in buffers)

    def __len__(self) -> int:
        return self.size


def _pub_cmd(subject: str, reply: str, payload: Any) -> Any:
    line = f"PUB {subject} {reply} {len(payload)}\r\n".encode()
    if isinstance(payload, Parts):
        return _Command([line, *payload.buffers, b"\r\n"])
    return b"".join((line, payload, b"\r\n"))


def _writelines(self: Any, commands: list[Any]) -> None:
    """`TcpTransport.writelines` without joining large buffers into one bytes object.

    Python 3.11's transport joins every list it is given, then copies whatever the socket did
    not take. Small commands are still joined (one system call for many of them); a large buffer
    is written as a memoryview, so the unsent rest is copied once, not sliced and copied.
    """
    writer = self._io_writer
    small: list[Buffer] = []
    for command in commands:
        for buffer in command.buffers if isinstance(command, _Command) else (command,):
            if len(buffer) < DIRECT_WRITE:
                small.append(buffer)
                continue
            if small:
                writer.write(b"".join(small))
                small = []
            writer.write(memoryview(buffer))
    if small:
        writer.write(b"".join(small))


_original_parse = nats_parser.Parser.parse
_original_reset = nats_parser.Parser.reset


def _reset(self: Any) -> None:
    _original_reset(self)
    self._tv_large = None  # the payload being collected, if it is large
    self._tv_filled = 0  # bytes of it received so far
    self._tv_skip = 0  # bytes of the CRLF after it still to come


async def _parse(self: Any, data: Buffer = b"") -> None:
    """`Parser.parse`, except that a large message's payload is collected in its own buffer.

    The original parser handles everything else: control lines, small messages, and a large
    one that arrives whole in one read.
    """
    if self._tv_skip:
        skipped = min(self._tv_skip, len(data))
        self._tv_skip -= skipped
        data = memoryview(data)[skipped:]
        if not data:
            return
    large: bytearray | None = self._tv_large
    if large is None:
        if self.state != nats_parser.AWAITING_MSG_PAYLOAD or self.header_needed or self.needed < LARGE \
                or len(self.buf) + len(data) >= self.needed + nats_parser.CRLF_SIZE:
            # nats-py annotates `data` as bytes but only slices, measures and extends with it.
            await _original_parse(self, data)  # type: ignore[arg-type]
            return
        # A large payload has begun and this read does not complete it: what the parser holds
        # of it so far (less than one read) moves to the message's own buffer.
        large = self._tv_large = bytearray(self.needed)
        self._tv_filled = len(self.buf)
        large[: self._tv_filled] = self.buf
        self.buf.clear()
    view = memoryview(data)
    take = min(len(view), len(large) - self._tv_filled)
    large[self._tv_filled : self._tv_filled + take] = view[:take]
    self._tv_filled += take
    if self._tv_filled < len(large):
        return
    self._tv_large = None
    self.state = nats_parser.AWAITING_CONTROL_LINE
    rest = view[take:]
    crlf = min(nats_parser.CRLF_SIZE, len(rest))
    self._tv_skip = nats_parser.CRLF_SIZE - crlf  # the rest of the CRLF comes with the next read
    args = self.msg_arg
    await self.nc._process_msg(args["sid"], args["subject"], args["reply"], large, None)
    if len(rest) > crlf:
        await _parse(self, rest[crlf:])


def tune_nats_client() -> None:
    """Apply the adjustments; call once per process, before connecting."""
    if hasattr(nats.aio.client, "DEFAULT_BUFFER_SIZE"):
        nats.aio.client.DEFAULT_BUFFER_SIZE = max(nats.aio.client.DEFAULT_BUFFER_SIZE, READ_SIZE)
    if hasattr(nats.protocol.command, "pub_cmd"):
        nats.protocol.command.pub_cmd = _pub_cmd
    transport = getattr(nats.aio.transport, "TcpTransport", None)
    if transport is not None and hasattr(transport, "writelines"):
        transport.writelines = _writelines
    # Typed Any: the assignments below replace methods on nats-py's class (mypy rightly objects
    # to that in general; here it is the point, see the module docstring).
    parser: Any = nats_parser.Parser
    if all(hasattr(parser, name) for name in ("parse", "reset")) and hasattr(nats_parser, "AWAITING_MSG_PAYLOAD"):
        # Class-level defaults: parsers made before this call never ran `_reset`.
        parser._tv_large, parser._tv_filled, parser._tv_skip = None, 0, 0
        parser.reset = _reset
        parser.parse = _parse
