"""Run a private nats-server child with JetStream (used by `timevault up` and the tests).

The server writes its pid to ``<store>/nats-server.pid``. Starting a server on a store that a
server from an earlier run still holds (its `up` was killed on a system without parent-death
signals, or it was started by hand) first stops that stale server: two servers must never
share one JetStream store.

With `users` (user name → password), the server requires the per-service identities of
`timevault.services.common.identities`, each with its subject permissions. The passwords reach
nats-server through its environment (the configuration file names ``$NATS_<USER>_PASSWORD``),
so they are in no file and no process argument.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from timevault.services.common import identities

log = logging.getLogger(__name__)

MAX_PAYLOAD = 8 * 1024 * 1024  # chunks are ≤ 4 MiB plus a little overhead
PORT_ATTEMPTS = 3


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def find_nats_server() -> str:
    found = os.environ.get("TIMEVAULT_NATS_SERVER") or shutil.which("nats-server")
    for candidate in (found, "/usr/sbin/nats-server", "/usr/local/bin/nats-server", "/usr/bin/nats-server"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError("nats-server not found; install it or pass --nats URL")


def open_private_log(path: str | os.PathLike[str]) -> int:
    """A log file opened for appending, readable only by its owner (logs may name paths and plans)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)  # an older log may have been created with a laxer mode
    return fd


def _server_env() -> dict[str, str]:
    """nats-server's environment: Go's collector tuned for a stream of megabyte messages.

    Each blob message is a fresh multi-MiB buffer in the server, so with Go's default (GOGC=100)
    it collected garbage, and faulted fresh pages in, all through a backup. GOGC=400 cut the
    server's CPU for a 1 GiB backup by ~25 % (1.76 -> 1.33 s) for ~50 MiB more RSS; the soft
    limit makes it collect harder before growing past 256 MiB. Set values are kept.
    """
    env = dict(os.environ)
    env.setdefault("GOGC", "400")
    env.setdefault("GOMEMLIMIT", "256MiB")
    return env


class NatsServer:
    """A nats-server child bound to loopback, with JetStream storing under `store_dir`."""

    def __init__(self, store_dir: str | os.PathLike[str], *, port: int | None = None,
                 max_payload: int = MAX_PAYLOAD, host: str = "127.0.0.1",
                 log_file: str | os.PathLike[str] | None = None, token: str | None = None,
                 users: dict[str, str] | None = None) -> None:
        self.store_dir = Path(store_dir)
        self.token = token
        self.users = dict(users or {})
        self.host = host
        self._picked_port = not port
        self.port = port or free_port(host)
        self.monitor_port = free_port(host)
        self.max_payload = max_payload
        self.log_file = Path(log_file) if log_file else self.store_dir / "nats-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The address without credentials (safe to print)."""
        return f"nats://{self.host}:{self.port}"

    def user_url(self, user: str) -> str:
        """The address with `user`'s credentials (for tests; services get theirs by environment)."""
        return f"nats://{user}:{self.users[user]}@{self.host}:{self.port}"

    @property
    def client_url(self) -> str:
        """The address clients connect to: with the token when the server requires one."""
        return f"nats://{self.token}@{self.host}:{self.port}" if self.token else self.url

    def _config(self) -> Path:
        self.store_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        conf = self.store_dir / "nats-server.conf"
        text = (
            f"host: {self.host}\nport: {self.port}\nhttp_port: {self.monitor_port}\n"
            f"max_payload: {self.max_payload}\n"
            f'pid_file: "{self.pid_file}"\n'
            f'jetstream {{\n  store_dir: "{self.store_dir / "jetstream"}"\n}}\n'
        )
        if self.token:
            # Loopback is shared by every local user: without this, any of them could ask the
            # services to back up or restore anything the services can reach.
            text += f'authorization {{\n  token: "{self.token}"\n}}\n'
        elif self.users:
            text += identities.authorization(identities.env_password, tuple(self.users))
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return conf

    @property
    def pid_file(self) -> Path:
        return self.store_dir / "nats-server.pid"

    def start(self, timeout: float = 15.0, preexec_fn: Callable[[], None] | None = None) -> None:
        """Spawn the server and wait until it serves. A port picked by `free_port` can be taken
        by another process before the server binds it; then the ports that were picked here
        (not one given to the constructor) are picked again, up to PORT_ATTEMPTS times."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            logged = self.log_file.stat().st_size if self.log_file.exists() else 0
            self.spawn(preexec_fn)
            try:
                self.wait_ready(timeout)
                return
            except RuntimeError:
                if attempt == PORT_ATTEMPTS or not self._lost_a_port(logged):
                    raise
            log.warning("nats-server: a port was taken before it could bind it; trying others")
            if self._picked_port:
                self.port = free_port(self.host)
            self.monitor_port = free_port(self.host)

    def _lost_a_port(self, logged: int) -> bool:
        """Whether the server's log, past `logged` bytes, says a port was in use."""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(logged)
                return b"address already in use" in f.read(64 * 1024)
        except OSError:
            return False

    def spawn(self, preexec_fn: Callable[[], None] | None = None) -> None:
        """Start the process (same port, store and credentials every time); `wait_ready` waits for it.

        `preexec_fn` (e.g. `timevault.services.common.children.die_with_parent`) runs in the child.
        """
        conf = self._config()
        self.stop_stale()
        env = _server_env()
        env.update({identities.password_env(user): password for user, password in self.users.items()})
        out = open_private_log(self.log_file)
        try:
            self.proc = subprocess.Popen([find_nats_server(), "-c", str(conf)], stdout=out, stderr=out,
                                         stdin=subprocess.DEVNULL, start_new_session=True, env=env,
                                         preexec_fn=preexec_fn)
        finally:
            os.close(out)

    def stop_stale(self, grace: float = 10.0) -> int | None:
        """Stop a nats-server that an earlier run left on this store; returns its pid if there was one."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if (self.proc is not None and pid == self.proc.pid) or not _is_nats_server_of(pid, self.store_dir):
            return None
        log.warning("stopping a stale nats-server (pid %d) that still holds %s", pid, self.store_dir)
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return pid
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not _alive(pid):
                    return pid
                time.sleep(0.05)
        raise RuntimeError(f"a stale nats-server (pid {pid}) holds {self.store_dir} and does not stop")

    def running(self) -> bool:
        """True while the process runs (and reaps it once it has exited: no <defunct> entry)."""
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://{self.host}:{self.monitor_port}/healthz?js-enabled-only=true"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}; see {self.log_file}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"nats-server not ready after {timeout}s; see {self.log_file}")

    def kill(self) -> None:
        """SIGKILL (crash simulation)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"  # a zombie has exited
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _is_nats_server_of(pid: int, store_dir: Path) -> bool:
    """Is `pid` a nats-server running with this store's config (not a recycled pid)?"""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    conf = os.fsencode(store_dir / "nats-server.conf")
    return bool(argv) and os.path.basename(argv[0]).startswith(b"nats-server") and conf in argv
