"""Gateway configuration: where to listen, which NATS to use, and the bearer token it accepts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from timevault.proto.errors import ServiceError

TOKEN_ENV = "TIMEVAULT_TOKEN"
MIN_TOKEN_LENGTH = 16


class ConfigError(ServiceError):
    """The configuration cannot work; the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__("invalid", message)


@dataclass(frozen=True, kw_only=True)
class GatewayConfig:
    """Everything the gateway knows besides its NATS connection (it holds no other state)."""

    nats_url: str
    token: str
    host: str = "127.0.0.1"
    port: int = 7480
    max_body: int = 64 * 1024
    """Largest accepted request body in bytes; plans and restore requests are far smaller."""
    request_timeout: float = 15.0
    """Seconds to wait for a service reply (plan create and delete get longer, see `routes`)."""
    sse_heartbeat: float = 15.0
    """Seconds between SSE keep-alive comments, so proxies and browsers keep the stream open."""

    def __post_init__(self) -> None:
        if len(self.token) < MIN_TOKEN_LENGTH:
            raise ConfigError(f"the access token must be at least {MIN_TOKEN_LENGTH} characters")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        if self.max_body < 1024:
            raise ConfigError("max_body must be at least 1024 bytes")


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``) to a (host, port) pair."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--listen must be HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def load_token(token_file: str | None) -> str:
    """The token from `token_file` (a file readable only by its owner), else from ``$TIMEVAULT_TOKEN``."""
    if token_file:
        path = Path(token_file)
        try:
            mode = path.stat().st_mode
            text = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {path}: {exc.strerror}") from exc
        if mode & 0o077:
            raise ConfigError(f"the token file {path} must be readable only by its owner (chmod 600)")
        if text.startswith("{"):  # <data-dir>/gateway.json as written by `timevault up`
            import json

            try:
                text = str(json.loads(text)["token"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"{path} has no token") from exc
        return text
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ConfigError(f"no access token: pass --token-file FILE or set {TOKEN_ENV}")
    return token
