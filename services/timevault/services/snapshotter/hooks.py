"""A plan's commands around a backup: the pre-command (e.g. a database dump into a source folder)
and the post-command, run by the snapshotter in a shell.

Each runs in its own process group with ``TIMEVAULT_PLAN`` (the plan's name), ``TIMEVAULT_JOB``
and, after the backup, ``TIMEVAULT_STATUS`` (``completed``, ``failed`` or ``canceled``) set, stdin
closed and the service's own ``TIMEVAULT_*`` variables removed (one of them holds the NATS
token). Its output (stdout and stderr together) becomes lines of the job's log; a command still
running after the plan's timeout is stopped (TERM, then KILL) and counts as failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field

from timevault.core.errors import BackupCanceled
from timevault.proto.plans import PlanDetail
from timevault.services.common.jobs import JobContext

MAX_LINES = 200
MAX_LINE = 2000
KILL_AFTER = 5.0


@dataclass
class HookResult:
    """How one command went."""

    name: str  # "pre-command" | "post-command"
    returncode: int | None = None
    timed_out: bool = False
    seconds: float = 0.0
    lines: list[str] = field(default_factory=list)
    dropped: int = 0

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def summary(self) -> str:
        if self.timed_out:
            return f"{self.name} timed out after {self.seconds:.0f} s and was stopped"
        if self.returncode is not None and self.returncode < 0:
            return f"{self.name} was killed by signal {-self.returncode}"
        return f"{self.name} exited with status {self.returncode} after {self.seconds:.1f} s"

    def log_lines(self) -> list[str]:
        """The output as the job's log shows it, then the summary."""
        lines = [f"{self.name}: {line}" for line in self.lines]
        if self.dropped:
            lines.insert(0, f"{self.name}: ({self.dropped} earlier lines left out)")
        return [*lines, self.summary()]


def hook_environment(plan_name: str, job_id: str, status: str | None = None) -> dict[str, str]:
    """The service's environment without its own TIMEVAULT_* settings, plus the hook's variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEVAULT_")}
    env.update(TIMEVAULT_PLAN=plan_name, TIMEVAULT_JOB=job_id)
    if status is not None:
        env["TIMEVAULT_STATUS"] = status
    return env


async def run_hook(name: str, command: str, env: dict[str, str], limit: float) -> HookResult:
    """Run `command` with ``/bin/sh -c``, stopped after `limit` seconds; never raises for the command's own failure."""
    result = HookResult(name)
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_shell(
            command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env, cwd=os.path.expanduser("~") if os.path.isdir(
                os.path.expanduser("~")) else "/", start_new_session=True)
    except OSError as exc:
        result.returncode = 127
        result.lines = [f"cannot start it: {exc.strerror or exc}"]
        return result
    kept: deque[str] = deque(maxlen=MAX_LINES)
    total = 0

    async def read() -> None:
        nonlocal total
        assert proc.stdout is not None
        async for raw in proc.stdout:
            total += 1
            kept.append(raw.decode("utf-8", "replace").rstrip("\r\n")[:MAX_LINE])

    reader = asyncio.create_task(read())
    try:
        await asyncio.wait_for(proc.wait(), limit)
    except TimeoutError:
        result.timed_out = True
        await _stop(proc)
    except asyncio.CancelledError:
        await _stop(proc)  # the job was canceled while its command ran: the command goes too
        raise
    finally:
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(reader, KILL_AFTER)  # a grandchild holding the pipe cannot hold us
        reader.cancel()
        result.seconds = time.monotonic() - started
        result.returncode = proc.returncode
        result.lines = list(kept)
        result.dropped = total - len(kept)
    return result


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """TERM the command's whole process group, KILL it when it does not go."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(proc.wait(), KILL_AFTER)
            return
        except TimeoutError:
            continue


class HookFailed(Exception):
    """The pre-command failed and the plan does not let the backup go on without it."""


class JobHooks:
    """The commands of one backup job: `before` runs the pre-command, `after` the post-command.

    `after` runs once, whatever the outcome, when the job got as far as reading its plan;
    both write their output into the job's log (`JobContext.log`).
    """

    def __init__(self, ctx: JobContext, plan: PlanDetail) -> None:
        self.ctx = ctx
        self.plan = plan
        self._after_done = False

    async def before(self) -> None:
        plan = self.plan
        if not plan.pre_command:
            return
        env = hook_environment(plan.name, self.ctx.job.id)
        run = asyncio.create_task(run_hook("pre-command", plan.pre_command, env, plan.hook_timeout))
        canceled = asyncio.create_task(self.ctx.cancel.wait())
        try:
            await asyncio.wait({run, canceled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            canceled.cancel()
        if not run.done():
            run.cancel()  # stops the command's process group
            with contextlib.suppress(asyncio.CancelledError):
                await run
            raise BackupCanceled("canceled while the pre-command ran")
        result = run.result()
        lines = result.log_lines()
        if not result.ok and plan.pre_command_optional:
            lines.append("the plan lets the backup go on without it")
        await self.ctx.log(lines, "hook")
        if not result.ok and not plan.pre_command_optional:
            raise HookFailed(f"the backup did not start: {result.summary()} (see the job's log)")

    async def after(self, status: str) -> None:
        plan = self.plan
        if self._after_done or not plan.post_command:
            return
        self._after_done = True
        env = hook_environment(plan.name, self.ctx.job.id, status)
        result = await run_hook("post-command", plan.post_command, env, plan.hook_timeout)
        await self.ctx.log(result.log_lines(), "hook")
