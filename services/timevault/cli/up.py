"""`timevault up`: everything on one machine, supervised, stopped cleanly by Ctrl-C or SIGTERM.

Starts a private nats-server (JetStream under ``<data-dir>/nats``) unless ``--nats`` is given,
then each service as its own process (catalog, scheduler, snapshotter, uploader, restorer, and
the HTTP gateway when ``timevault.services.gateway`` exists). A child that exits unexpectedly,
nats-server included, is restarted with backoff; nats-server comes back on the same port, store
and token, and the services reconnect by themselves. Every child dies with `up`, even when `up`
is killed -9 (a parent-death signal, `timevault.services.common.children`), and a nats-server
that an earlier run left on the store is stopped before a new one starts.
``<data-dir>/gateway.json`` (mode 0600) tells the CLI where the gateway listens and which
bearer token it accepts.

The private nats-server requires one identity per service (`timevault.services.common.identities`:
its own password, only the subjects it uses) plus the operator's (discovery and events only),
whose URL with credentials goes into gateway.json as ``nats``. Passwords are fresh on every
start of `up` (kept across nats-server restarts) and reach each process by its environment:
never an argument, a file or a log line. The data folder is forced to mode 0700 and every log to 0600.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import secrets
import signal
import sys
import time
from pathlib import Path

from timevault.cli.errors import CommandError
from timevault.services.common import identities, logs
from timevault.services.common.children import die_with_parent
from timevault.services.common.natsd import NatsServer, free_port, open_private_log

log = logging.getLogger("timevault.up")
DEFAULT_LISTEN = "127.0.0.1:7480"
SERVICES = ("catalog", "scheduler", "uploader", "snapshotter", "restorer")


class UpError(CommandError):
    """`up` cannot start; the message says why."""


def write_private_json(path: Path, data: dict[str, object]) -> None:
    """Write JSON readable only by the owner (it holds the access token)."""
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.chmod(temp, 0o600)
    os.replace(temp, path)


class NatsChild:
    """The private nats-server, supervised like a service: same port, store and passwords on restart."""

    name = "nats-server"

    def __init__(self, server: NatsServer, log_path: Path) -> None:
        self.server = server
        self.log_path = log_path
        self.restarts = 0

    async def start(self) -> None:
        self.server.spawn(die_with_parent())  # here, in the event loop's thread (see Child.start)
        await asyncio.to_thread(self.server.wait_ready, 15.0)
        log.info("nats-server listening on %s (pid %d)", self.server.url,
                 self.server.proc.pid if self.server.proc else -1)

    def exited(self) -> bool:
        return not self.server.running()

    @property
    def returncode(self) -> int | None:
        return self.server.proc.returncode if self.server.proc is not None else None

    async def stop(self, grace: float = 10.0) -> None:
        await asyncio.to_thread(self.server.stop, grace)


def persistent_token(data_dir: Path) -> str:
    """The gateway's access token, kept in ``<data-dir>/token`` (mode 0600) so that a restart of
    `up` keeps browsers and scripts signed in. A file that is unreadable, too short or not private
    is replaced by a new token."""
    path = data_dir / "token"
    try:
        if path.stat().st_mode & 0o077 == 0:
            text = path.read_text().strip()
            if len(text) >= 32:
                return text
    except OSError:
        pass
    token = secrets.token_urlsafe(32)
    temp = path.with_name("token.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(temp, 0o600)
    os.replace(temp, path)
    return token


class Child:
    """One supervised service process."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0

    async def start(self) -> None:
        # Started from the event loop's thread: the parent-death signal follows the forking thread.
        out = open_private_log(self.log_path)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", f"timevault.services.{self.name}", *self.args, stdout=out, stderr=out,
                stdin=asyncio.subprocess.DEVNULL, env=self.env, preexec_fn=die_with_parent())
        finally:
            os.close(out)
        log.info("started %s (pid %d)", self.name, self.proc.pid)

    def exited(self) -> bool:
        return self.proc is not None and self.proc.returncode is not None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    async def stop(self, grace: float = 10.0) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


def gateway_available() -> bool:
    try:
        return importlib.util.find_spec("timevault.services.gateway") is not None
    except (ImportError, ValueError):
        return False


def _say(text: str) -> None:
    """A line for the person who ran `up` (a log record, too, when logs are JSON)."""
    if logs.default_format() == "json":
        log.warning("%s", text)
    else:
        print(text, file=sys.stderr, flush=True)


async def up(data_dir: Path, listen: str = DEFAULT_LISTEN, nats_url: str | None = None,
             stop: asyncio.Event | None = None, extra_args: dict[str, list[str]] | None = None) -> int:
    data_dir = data_dir.expanduser().absolute()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data_dir.chmod(0o700)  # an existing folder keeps a laxer mode otherwise; it holds the catalog's keys
    log_dir = data_dir / "logs"
    log_dir.mkdir(exist_ok=True, mode=0o700)
    log_dir.chmod(0o700)
    lock_file = open(data_dir / "up.lock", "w")  # noqa: ASYNC230 - local lock file held while up runs
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        raise UpError(f"timevault is already running with data dir {data_dir}") from exc
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise UpError(f"--listen must be HOST:PORT, got {listen!r}")
    if port == "0":  # "any free port": choose it here so gateway.json can name it
        listen = f"{host}:{free_port(host.strip('[]'))}"

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    nats_server: NatsChild | None = None
    passwords: dict[str, str] = {}
    operator_url = nats_url
    if nats_url is None:
        # "tv" first: nats-server reads a password from its environment as a config value, and a
        # value that starts with digits could be taken for a number.
        passwords = {user: "tv" + secrets.token_hex(24) for user in (*identities.SERVICES, identities.OPERATOR)}
        nats_server = NatsChild(NatsServer(data_dir / "nats", log_file=log_dir / "nats-server.log",
                                           users=passwords), log_dir / "nats-server.log")
        try:
            await nats_server.start()
        except (OSError, RuntimeError, TimeoutError) as exc:
            await nats_server.stop()
            raise UpError(f"cannot start nats-server: {exc}") from exc
        nats_url = nats_server.server.url  # without credentials: each service gets its own by environment
        operator_url = nats_server.server.user_url(identities.OPERATOR)
        log.info("JetStream in %s", data_dir / "nats")

    token = persistent_token(data_dir)
    env = {**os.environ, "TIMEVAULT_DATA_DIR": str(data_dir), "TIMEVAULT_NATS": nats_url}

    def service_env(name: str) -> dict[str, str]:
        if not passwords:
            return env
        return {**env, "TIMEVAULT_NATS_USER": name, "TIMEVAULT_NATS_PASSWORD": passwords[name]}

    extra_args = extra_args or {}
    children: list[Child] = []
    for name in SERVICES:
        args: list[str] = []  # NATS URL and credentials go by environment, not argv (ps)
        if name == "catalog":
            args += ["--db", str(data_dir / "catalog.db")]
        if name == "snapshotter":
            args += ["--data-dir", str(data_dir)]
        children.append(Child(name, args + extra_args.get(name, []), service_env(name), log_dir / f"{name}.log"))
    if gateway_available():
        children.append(Child("gateway", ["--listen", listen, "--data-dir", str(data_dir),
                                          *extra_args.get("gateway", [])],
                              {**service_env("gateway"), "TIMEVAULT_TOKEN": token}, log_dir / "gateway.log"))
    else:
        log.warning("timevault.services.gateway is not installed; the HTTP API and CLI plan commands are unavailable")

    info_path = data_dir / "gateway.json"
    try:
        for child in children:
            await child.start()
        if gateway_available():
            # gateway.json is the CLI's (and scripts') sign that the system is ready to use.
            await _wait_until_serving(f"http://{listen}", token, stop)
        # `nats`: the operator's identity (service discovery and events, nothing more).
        write_private_json(info_path, {"url": f"http://{listen}", "token": token, "nats": operator_url,
                                       "nats_inbox_prefix": identities.inbox_prefix(identities.OPERATOR)
                                       if passwords else "_INBOX", "pid": os.getpid()})
        _say(f"timevault: up (data dir {data_dir}, gateway http://{listen}, NATS {_without_credentials(nats_url)}); "
             "Ctrl-C to stop")
        if sys.stderr.isatty() and logs.default_format() != "json":
            # A person at a terminal gets the link that signs in; the fragment never reaches a server.
            print(f"timevault: web UI at http://{listen}/#token={token} (this link signs you in; the token is "
                  f"also in {info_path})", file=sys.stderr, flush=True)
        else:
            # Not a terminal (or JSON logs): the output may end up in logs (journald, CI), so no token there.
            _say(f"timevault: web UI at http://{listen}/ — sign in with the token in {info_path} "
                 "(mode 0600); the CLI finds it there by itself")
        await _supervise([*([nats_server] if nats_server else []), *children], stop)
    finally:
        for child in reversed(children):
            await child.stop()
        if nats_server is not None:
            await nats_server.stop()
        with contextlib.suppress(FileNotFoundError):
            info_path.unlink()
        fcntl.flock(lock_file, fcntl.LOCK_UN)
        lock_file.close()
        _say("timevault: stopped")
    return 0


async def _wait_until_serving(url: str, token: str, stop: asyncio.Event, patience: float = 30.0) -> None:
    """Wait until the gateway answers a plan list: gateway, NATS and catalog are all up.

    Without this, a command run right after `up` wrote gateway.json could find nobody
    listening yet. After `patience` seconds (or Ctrl-C) it stops waiting; the services keep starting.
    """
    import urllib.request

    request = urllib.request.Request(url + "/api/v1/plans", headers={"Authorization": f"Bearer {token}"})

    def answers() -> bool:
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    deadline = time.monotonic() + patience
    while not stop.is_set():
        if await asyncio.to_thread(answers):
            return
        if time.monotonic() > deadline:
            log.warning("the gateway did not answer within %.0f s; starting anyway", patience)
            return
        await asyncio.sleep(0.1)


def _without_credentials(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url


async def _supervise(children: list[NatsChild | Child], stop: asyncio.Event) -> None:
    """Restart children that die, with backoff, until `stop` is set (nats-server first in the list)."""
    last_start = {child.name: time.monotonic() for child in children}
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
        if stop.is_set():
            return
        for child in children:
            if not child.exited():
                continue
            # Back off when it keeps crashing; reset once it ran for a minute.
            if time.monotonic() - last_start[child.name] > 60:
                child.restarts = 0
            delay = min(2 ** child.restarts * 0.5, 30)
            if time.monotonic() - last_start[child.name] < delay:
                continue
            log.warning("%s exited with %s; restarting (see %s)", child.name, child.returncode, child.log_path)
            child.restarts += 1
            last_start[child.name] = time.monotonic()
            try:
                await child.start()
            except (OSError, RuntimeError, TimeoutError) as exc:
                log.error("cannot restart %s: %s; trying again", child.name, exc)
