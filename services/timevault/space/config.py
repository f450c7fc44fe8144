"""The Space server's settings (``timevault space serve`` flags), checked when built."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024
DEFAULT_PORT = 7490


class ConfigError(ValueError):
    """A setting the server cannot run with."""


@dataclass(frozen=True)
class SpaceConfig:
    data_dir: Path
    """Holds ``space.db`` (accounts, tokens, which objects exist) and, by default, ``objects/``."""
    storage: str | None = None
    """Where object bytes go: a folder or ``s3://…`` (default ``<data-dir>/objects``)."""
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    tls_cert: Path | None = None
    tls_key: Path | None = None
    public_url: str | None = None
    """The address devices and phones use (``https://space.example.org``); default: the request's."""
    trash_days: float = 7.0
    device_expires_in: float = 600.0
    device_interval: float = 5.0
    segment_size: int = 24 * MiB
    """Objects are stored in segments of at most this size: a write never holds more of one object
    in memory (a 16 MiB pack is one segment)."""
    upload_buffer: int = 96 * MiB
    """Bytes of request bodies held in memory at once, over all writes together."""
    read_piece: int = 4 * MiB
    """Reads are streamed in pieces of this size."""
    max_object: int = 64 * 1024 * MiB
    janitor_every: float = 600.0
    """Seconds between purges of expired trash and removed accounts."""

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("give both --tls-cert and --tls-key, or neither")
        if not self.tls and not is_loopback(self.host):
            raise ConfigError(
                f"refusing to serve plain HTTP on {self.host}: without --tls-cert and --tls-key the Space "
                "listens on loopback addresses only (127.0.0.1, ::1, localhost)"
            )
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"invalid port {self.port}")
        if self.trash_days < 0:
            raise ConfigError("--trash-days must not be negative")
        if self.segment_size < MiB or self.upload_buffer < self.segment_size:
            raise ConfigError("segments must be at least 1 MiB and fit in the upload buffer")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def db_path(self) -> Path:
        return self.data_dir / "space.db"

    @property
    def storage_location(self) -> str:
        return self.storage or str(self.data_dir / "objects")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[::1]:PORT`` or ``:PORT`` (loopback)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--listen must be HOST:PORT, got {text!r}")
    return (host.strip("[]") or "127.0.0.1"), int(port)
