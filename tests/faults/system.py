"""`timevault up` as a real process tree, driven from tests: kill any part, hold services at
named points (`timevault.services.common.holds`), run the real CLI against it.

`up` runs in its own session (so the whole group can be killed at once) with test-sized options:
a 10 s job timeout, a cheap KDF, 1 MiB packs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.core.conftest import TIMEVAULT
from tests.support.holds import Holds
from timevault.services.common.natsd import free_port

MiB = 1024 * 1024
JOB_TIMEOUT = 10.0
# --wait must end within the job timeout plus 30 s of a fault (plus room for restarts here).
WAIT_LIMIT = JOB_TIMEOUT + 30 + 20
EXTRA_ARGS = {
    "catalog": ["--job-timeout", str(JOB_TIMEOUT), "--reap-every", "0.5", "--kdf-n", "1024",
                "--delete-wait", "20"],
    "snapshotter": ["--ack-wait", "4", "--max-in-flight", str(2 * MiB)],
    "uploader": ["--pack-size", str(MiB)],
}
_UP = (
    "import asyncio, json, sys\n"
    "from pathlib import Path\n"
    "from timevault.cli.up import up\n"
    "sys.exit(asyncio.run(up(Path(sys.argv[1]), sys.argv[2], extra_args=json.loads(sys.argv[3]))))\n"
)
SERVICES = ("catalog", "scheduler", "uploader", "snapshotter", "restorer", "gateway")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state != b"Z"


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split() if alive(int(x))]


@dataclass
class System:
    root: Path
    password_file: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.data = self.root / "data"
        self.holds = Holds(self.root / "holds")
        self.holds.folder.mkdir(parents=True, exist_ok=True)
        self.log = self.root / "up.log"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEVAULT_")}
        env["TIMEVAULT_TEST_HOLDS"] = str(self.holds.folder)
        env["TIMEVAULT_PASSWORD_FILE"] = str(self.password_file)
        env["XDG_CACHE_HOME"] = str(self.root / "cache")
        return env

    # --- the process tree ------------------------------------------------------------------

    def start(self, seconds: float = 60) -> None:
        info = self.data / "gateway.json"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _UP, str(self.data), f"127.0.0.1:{self.port}", json.dumps(EXTRA_ARGS)],
                env=self.env, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + seconds
        while True:
            try:
                if json.loads(info.read_text()).get("pid") == self.proc.pid:
                    break
            except (OSError, ValueError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"up did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def pid(self, name: str) -> int | None:
        """The pid of a running child: a service name, or "nats" for nats-server."""
        assert self.proc is not None
        needle = "nats-server" if name == "nats" else f"timevault.services.{name} "
        for pid in children_of(self.proc.pid):
            if needle in _cmdline(pid) + " ":
                return pid
        return None

    def kill(self, name: str) -> int:
        pid = self.pid(name)
        assert pid is not None, f"no {name} running"
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait_back(self, name: str, old_pid: int, seconds: float = 30) -> int:
        """Wait until `up` has restarted `name` (a new pid)."""
        deadline = time.monotonic() + seconds
        while True:
            pid = self.pid(name)
            if pid is not None and pid != old_pid:
                return pid
            if time.monotonic() > deadline:
                raise AssertionError(f"up did not restart {name}:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def kill_group(self) -> list[int]:
        """kill -9 of `up` and everything in its process group; returns the children it had."""
        assert self.proc is not None
        children = children_of(self.proc.pid)
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        return children

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()

    # --- the command line ----------------------------------------------------------------------

    def _argv(self, args: tuple[str | os.PathLike[str], ...]) -> list[str]:
        argv = [str(TIMEVAULT), *map(str, args)]
        if args and args[0] in ("plan", "backup", "restore"):
            argv += ["--data-dir", str(self.data)]
        return argv

    def cli(self, *args: str | os.PathLike[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._argv(args), capture_output=True, text=True, env=self.env, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def cli_start(self, *args: str | os.PathLike[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(self._argv(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env, stdin=subprocess.DEVNULL)

    def gateway_log(self) -> str:
        path = self.data / "logs" / "gateway.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted((self.data / "logs").glob("*.log")))

    def api(self, method: str, path: str) -> object:
        info = json.loads((self.data / "gateway.json").read_text())
        req = urllib.request.Request(info["url"] + "/api/v1" + path, method=method,
                                     headers={"Authorization": f"Bearer {info['token']}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())


def job_of(stdout: str) -> dict[str, object] | None:
    """The job `--wait --json` printed: the job itself, or the one inside the error object of a
    job that failed (``{"error": {"code": "job_failed", "message", "job"}}``)."""
    import json as _json

    try:
        value = _json.loads(stdout) if stdout.strip() else None
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("error"), dict):
        job = value["error"].get("job")
        return job if isinstance(job, dict) else None
    return value if isinstance(value, dict) else None
