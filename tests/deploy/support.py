"""Helpers for running deploy/ files without containers: a test CA, and NATS configs made local."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import trustme

from timevault.services.common import identities
from timevault.services.common.natsd import find_nats_server


def write_tls(directory: Path, *names: str) -> Path:
    """tls.crt, tls.key (for `names`: host names and IP addresses) and ca.crt from a fresh test CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert(*names)
    cert.private_key_pem.write_to_path(str(directory / "tls.key"))
    cert.cert_chain_pems[0].write_to_path(str(directory / "tls.crt"))
    ca.cert_pem.write_to_path(str(directory / "ca.crt"))
    for path in directory.iterdir():
        path.chmod(0o600)
    return directory


def localize(conf_text: str, tls_dir: Path, store: Path) -> str:
    """A deploy NATS config with the container's paths replaced by local ones."""
    return conf_text.replace("/etc/nats/tls/", f"{tls_dir}/").replace("/data/jetstream", str(store / "jetstream"))


def nats_passwords() -> dict[str, str]:
    """NATS_<USER>_PASSWORD for every identity (test values, different per user)."""
    users = (*identities.SERVICES, identities.OPERATOR)
    return {identities.password_env(u): f"tv{u}-{os.urandom(6).hex()}" for u in users}


def nats_check(conf: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``nats-server -t``: parse and check the configuration, then exit."""
    return subprocess.run([find_nats_server(), "-t", "-c", str(conf), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=30)
