"""Ids and time helpers."""

from __future__ import annotations

import secrets
import socket
from datetime import UTC, datetime


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def instance_id(service: str) -> str:
    """Unique id of one running service copy (host, service, random), safe as a subject token."""
    host = "".join(c if c.isalnum() else "-" for c in socket.gethostname())[:24]
    return f"{service}-{host}-{secrets.token_hex(3)}"


def utcnow() -> datetime:
    return datetime.now(UTC)
