"""Space locations and Space URLs, parsed and checked (no network code: the NATS contracts and the
command line use this without loading aiohttp).

    space://HOST[:PORT]/REPO[?ca=FILE&concurrency=N]   HTTPS (ca: a private CA's certificate)
    space+http://HOST:PORT/REPO[?concurrency=N]         plain HTTP, loopback hosts only
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from urllib.parse import SplitResult, parse_qs, urlsplit

from timevault.core.storage.base import LocationError, check_name

SCHEMES = ("space", "space+http")
DEFAULT_CONCURRENCY = 4
MAX_CONCURRENCY = 64
_PARAMS = frozenset({"ca", "concurrency"})


@dataclass(frozen=True, slots=True)
class SpaceOptions:
    """A parsed Space location; holds no secrets."""

    scheme: str
    """``space`` (HTTPS) or ``space+http``."""
    host: str
    port: int | None
    repo: str
    ca: str | None = None
    concurrency: int = DEFAULT_CONCURRENCY

    @property
    def base_url(self) -> str:
        """``https://host[:port]`` or ``http://host:port``: the Space's own address."""
        return space_origin(self.scheme, self.host, self.port)

    @property
    def location(self) -> str:
        return f"{self.scheme}://{_netloc(self.host, self.port)}/{self.repo}"


def _netloc(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}" if port is not None else shown


def space_origin(scheme: str, host: str, port: int | None) -> str:
    web = "http" if scheme in ("space+http", "http") else "https"
    if (web, port) in (("https", 443), ("http", 80)):
        port = None
    return f"{web}://{_netloc(host.lower(), port)}"


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_space_location(location: str) -> bool:
    return location.startswith(tuple(f"{scheme}://" for scheme in SCHEMES))


def _split(url: str) -> SplitResult:
    try:
        return urlsplit(url)
    except ValueError as exc:  # e.g. "Invalid IPv6 URL"
        raise LocationError(f"cannot read the Space URL: {exc}") from None


def parse_space_location(url: str) -> SpaceOptions:
    """Parse and check a ``space://`` or ``space+http://`` location. Errors never echo secrets."""
    parts = _split(url)
    if parts.scheme not in SCHEMES:
        raise LocationError("a Space location starts with space:// or space+http://")
    if "@" in parts.netloc:
        raise LocationError("a Space location must not contain credentials; sign in with `timevault space login`")
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        raise LocationError("invalid port in the Space location") from None
    if not host:
        raise LocationError("a Space location needs a host: space://HOST[:PORT]/REPO")
    if parts.scheme == "space+http" and not is_loopback_host(host):
        raise LocationError("space+http:// (plain HTTP) is for loopback hosts only; use space:// (HTTPS)")
    repo = parts.path.strip("/")
    if not repo or "/" in repo:
        raise LocationError("a Space location names one repository: space://HOST[:PORT]/REPO")
    try:
        check_name(repo)
    except ValueError:
        raise LocationError(f"invalid Space repository name {repo!r}") from None
    if len(repo) > 64:
        raise LocationError("a Space repository name is at most 64 characters")
    try:
        params = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise LocationError("malformed query string in the Space location") from None
    unknown = sorted(set(params) - _PARAMS)
    if unknown:
        raise LocationError(f"unknown Space location parameter(s) {', '.join(unknown)}; known: ca, concurrency")
    value = {key: values[-1] for key, values in params.items()}
    ca = value.get("ca") or None
    if ca is not None:
        if parts.scheme != "space":
            raise LocationError("ca= is for space:// (HTTPS) locations")
        ca = os.path.abspath(os.path.expanduser(ca))
    concurrency = DEFAULT_CONCURRENCY
    if "concurrency" in value:
        text = value["concurrency"]
        if not text.isdigit() or not 1 <= int(text) <= MAX_CONCURRENCY:
            raise LocationError(f"Space parameter concurrency must be 1..{MAX_CONCURRENCY}")
        concurrency = int(text)
    return SpaceOptions(parts.scheme, host, port, repo, ca, concurrency)


@dataclass(frozen=True, slots=True)
class SpaceEndpoint:
    """A Space as a person names it for signing in: its base URL (and a private CA, if any)."""

    base_url: str
    ca: str | None = None


def parse_space_url(text: str) -> SpaceEndpoint:
    """``https://host[:port]``, ``http://LOOPBACK:port``, or a ``space://``/``space+http://`` URL."""
    parts = _split(text.strip())
    scheme = {"https": "space", "http": "space+http"}.get(parts.scheme, parts.scheme)
    if scheme not in SCHEMES:
        raise LocationError(f"a Space URL starts with https://, http:// (loopback only) or space://, got {text!r}")
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        raise LocationError("invalid port in the Space URL") from None
    if not host or "@" in parts.netloc:
        raise LocationError(f"a Space URL needs a host (and no credentials): {text!r}")
    if scheme == "space+http" and not is_loopback_host(host):
        raise LocationError("plain HTTP is for Spaces on a loopback address only; use https://")
    ca = parse_qs(parts.query).get("ca", [None])[-1]
    return SpaceEndpoint(space_origin(scheme, host, port), os.path.abspath(ca) if ca else None)
