"""Two adjustments to nats-py for the megabyte-sized messages that carry blobs.

Each blob message is copied several times on its way through nats-py, all while holding the
GIL, on a machine where compression and encryption need the same cores:

- Receiving, the client reads the socket 32 KiB at a time (a module constant, not an option):
  ~130 reads, parser rounds and buffer appends per 4 MiB message. 1 MiB reads instead.
- Sending, `pub_cmd` concatenates the protocol line, the payload and CRLF with two `+`, copying
  the payload twice; one `join` copies it once.

Measured with 200 requests of 4 MiB through a local nats-server (3 in flight): publisher CPU
0.63 -> 0.47 s, subscriber CPU 1.34 -> 1.05 s, wall 1.70 -> 1.40 s.

Both are plain replacements of module-level names that nats-py looks up at call time; with a
nats-py that no longer has them, nothing changes.
"""

from __future__ import annotations

import nats.aio.client
import nats.protocol.command

READ_SIZE = 1024 * 1024


def _pub_cmd(subject: str, reply: str, payload: bytes) -> bytes:
    return b"".join((f"PUB {subject} {reply} {len(payload)}\r\n".encode(), payload, b"\r\n"))


def tune_nats_client() -> None:
    """Apply both adjustments; call once per process, before connecting."""
    if hasattr(nats.aio.client, "DEFAULT_BUFFER_SIZE"):
        nats.aio.client.DEFAULT_BUFFER_SIZE = max(nats.aio.client.DEFAULT_BUFFER_SIZE, READ_SIZE)
    if hasattr(nats.protocol.command, "pub_cmd"):
        nats.protocol.command.pub_cmd = _pub_cmd
