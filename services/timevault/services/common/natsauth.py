"""How a process finds its NATS servers and credentials: never from its command line.

``--nats`` / ``$TIMEVAULT_NATS`` names the servers (comma-separated for a cluster) and should
carry no credentials; they come from the environment or from files readable only by the owner:

| variable | meaning |
|---|---|
| ``TIMEVAULT_NATS_USER`` | the NATS user (one per service, see `timevault.services.common.identities`) |
| ``TIMEVAULT_NATS_PASSWORD`` / ``TIMEVAULT_NATS_PASSWORD_FILE`` | its password, or a file holding it |
| ``TIMEVAULT_NATS_TOKEN`` / ``TIMEVAULT_NATS_TOKEN_FILE`` | a token instead of user and password |
| ``TIMEVAULT_NATS_CA`` | CA certificate file that signs the servers' TLS certificates |

The CA goes to the NATS connection only: ``SSL_CERT_FILE`` would also replace the trust store
of every other TLS connection of the process (S3 endpoints among them).
A URL that still carries credentials (``nats://token@host``, as older setups wrote) works, but
is shown everywhere as `display`, without them.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from timevault.services.common import identities, logs


class CredentialError(ValueError):
    """A credential file cannot be used; the message says why (never the secret)."""


def read_secret_file(path: str) -> str:
    """A secret from a file that only its owner (or its group, as Kubernetes mounts them) can read."""
    try:
        mode = os.stat(path).st_mode
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise CredentialError(f"cannot read {path}: {exc.strerror}") from exc
    if mode & 0o007:
        raise CredentialError(f"{path} must not be readable by others (chmod 600)")
    if not text:
        raise CredentialError(f"{path} is empty")
    return text


def _secret(name: str, env: dict[str, str]) -> str | None:
    file = env.get(f"{name}_FILE")
    value = read_secret_file(file) if file else env.get(name) or None
    logs.redact(value)
    return value


def display(url: str) -> str:
    """`url` (or a comma-separated list of them) without credentials: safe to print."""
    return ",".join(logs.scrub(part.strip()) for part in url.split(",") if part.strip())


@dataclass
class NatsAccess:
    """Everything `nats.connect` needs besides callbacks."""

    servers: list[str]
    user: str | None = None
    password: str | None = None
    token: str | None = None
    ca_file: str | None = None
    options: dict[str, object] = field(default_factory=dict)

    @property
    def inbox_prefix(self) -> str:
        # Each identity may only subscribe below its own prefix (see identities).
        return identities.inbox_prefix(self.user) if self.user else "_INBOX"

    def connect_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"servers": self.servers, "inbox_prefix": self.inbox_prefix}
        if self.user:
            options["user"] = self.user
            options["password"] = self.password or ""
        if self.token:
            options["token"] = self.token
        if self.ca_file:
            options["tls"] = ssl.create_default_context(cafile=self.ca_file)
        return options


def access(url: str, env: dict[str, str] | None = None) -> NatsAccess:
    """Servers from `url`, credentials from `env` (default: this process's environment)."""
    env = dict(os.environ if env is None else env)
    servers = [part.strip() for part in url.split(",") if part.strip()]
    for server in servers:
        parts = urlsplit(server if "://" in server else f"nats://{server}")
        logs.redact(parts.password)
        if parts.password is None and parts.username and not env.get("TIMEVAULT_NATS_USER"):
            logs.redact(parts.username)  # nats://TOKEN@host: the user part is the token
    user = env.get("TIMEVAULT_NATS_USER") or None
    return NatsAccess(servers=servers, user=user, password=_secret("TIMEVAULT_NATS_PASSWORD", env) if user else None,
                      token=_secret("TIMEVAULT_NATS_TOKEN", env), ca_file=env.get("TIMEVAULT_NATS_CA") or None)
