"""Exit codes: the one place where an error becomes an exit code, a line on stderr and, with
``--json``, an error object on stdout.

| exit | code(s) in ``{"error": {"code", ...}}`` | meaning |
|---|---|---|
| 0 | | success |
| 1 | ``failed``, ``not_found`` (plan, snapshot, job), ``conflict``, ``busy``, ``unavailable``, ``unauthorized`` (the gateway's token), ``damaged``, ``unverified``, ``storage``, ``password``, ``canceled``, ``job_failed``, ``internal`` | failure |
| 2 | ``usage``, ``invalid`` | the command line is wrong, or a value given is not acceptable |
| 3 | ``incomplete`` | finished, but some files could not be read or restored |
| 10 | ``no_repository`` | the repository or its location does not exist |
| 11 | ``locked`` | the repository is locked by another process |
| 12 | ``wrong_password`` | wrong password |
| 130 | ``interrupted`` | interrupted (Ctrl-C) |
| 141 | | the reader of the output went away (``| head -1``): stopped quietly, like a tool killed by SIGPIPE |

Only the engine's error classes are imported here (`timevault.core.errors` imports nothing),
so mapping an error never loads the engine for a system command.
"""

from __future__ import annotations

import json
import os
import select
import sys
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from timevault.cli.errors import (
    CommandError,
    GatewayUnreachable,
    Incomplete,
    JobFailed,
    PasswordError,
    UsageError,
)
from timevault.core.errors import (
    Canceled,
    ConfigError,
    DamagedData,
    ExcludeError,
    HistoryError,
    LocationError,
    LocationNotFound,
    NotEmpty,
    RepositoryLocked,
    RepositoryNotFound,
    RetentionError,
    StorageError,
    TimeVaultError,
    WeakPassword,
    WrongPassword,
)
from timevault.proto.errors import ServiceError


class Exit(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    INCOMPLETE = 3
    NO_REPOSITORY = 10
    LOCKED = 11
    WRONG_PASSWORD = 12
    INTERRUPTED = 130
    OUTPUT_CLOSED = 141


# Checked in order: a subclass comes before its base. (Usage errors, partial results, failed
# jobs, service errors and Ctrl-C carry more than a class: `failure_of` treats them first.)
_BY_CLASS: tuple[tuple[type[BaseException], Exit, str], ...] = (
    (GatewayUnreachable, Exit.FAILURE, "unavailable"),
    (PasswordError, Exit.FAILURE, "password"),
    (CommandError, Exit.FAILURE, "failed"),
    (RepositoryNotFound, Exit.NO_REPOSITORY, "no_repository"),
    (LocationNotFound, Exit.NO_REPOSITORY, "no_repository"),
    (RepositoryLocked, Exit.LOCKED, "locked"),
    (WrongPassword, Exit.WRONG_PASSWORD, "wrong_password"),
    (WeakPassword, Exit.USAGE, "invalid"),
    (LocationError, Exit.USAGE, "invalid"),
    (RetentionError, Exit.USAGE, "invalid"),
    (ExcludeError, Exit.USAGE, "invalid"),
    (NotEmpty, Exit.USAGE, "invalid"),  # `repo init` in a folder that holds something else
    (DamagedData, Exit.FAILURE, "damaged"),
    (ConfigError, Exit.FAILURE, "damaged"),  # a config changed behind the password holder's back
    (HistoryError, Exit.FAILURE, "unverified"),  # contradicts the endorsed history
    (StorageError, Exit.FAILURE, "storage"),
    (Canceled, Exit.FAILURE, "canceled"),
    (TimeVaultError, Exit.FAILURE, "failed"),
    (OSError, Exit.FAILURE, "failed"),
)

# The services' codes (`timevault.proto.errors.ErrorCode`) kept as they are, with exit 1.
_SERVICE_CODES = frozenset({"not_found", "conflict", "busy", "unauthorized", "unavailable", "internal"})


@dataclass(frozen=True)
class Failure:
    """How one error is reported."""

    exit: Exit
    code: str
    message: str
    prefix: str = "timevault: error"
    usage: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def error_object(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


def failure_of(exc: BaseException) -> Failure:
    """The exit code, code and message for `exc` (any exception a command let through)."""
    if isinstance(exc, KeyboardInterrupt):
        return Failure(Exit.INTERRUPTED, "interrupted", "interrupted", prefix="timevault")
    if isinstance(exc, ServiceError):
        return _service_failure(exc)
    if isinstance(exc, UsageError):
        return Failure(Exit.USAGE, "usage", str(exc), prefix=f"{exc.prog}: error", usage=exc.usage)
    if isinstance(exc, Incomplete):
        return Failure(Exit.INCOMPLETE, "incomplete", str(exc), prefix="timevault: incomplete")
    if isinstance(exc, JobFailed):
        return Failure(Exit.FAILURE, "job_failed", str(exc), extra={"job": exc.job})
    for cls, exit_code, code in _BY_CLASS:
        if isinstance(exc, cls):
            return Failure(exit_code, code, _message(exc))
    # The last guard: a bug. One clear line; the traceback only on request (see timevault.cli.main).
    return Failure(Exit.FAILURE, "internal", f"{type(exc).__name__}: {_message(exc)} "
                   "(set TIMEVAULT_DEBUG=1 for details)", prefix="timevault: internal error")


def _service_failure(exc: ServiceError) -> Failure:
    """A service's answer (through the gateway) or a check the CLI shares with the services."""
    message = f"{exc.message} ({exc.field})" if exc.field else exc.message
    if exc.code == "invalid":
        return Failure(Exit.USAGE, "invalid", message)
    if exc.code == "unauthorized" and exc.field == "password":
        return Failure(Exit.WRONG_PASSWORD, "wrong_password", message)
    if exc.code == "not_found" and exc.field == "location":
        return Failure(Exit.NO_REPOSITORY, "no_repository", message)
    return Failure(Exit.FAILURE, exc.code if exc.code in _SERVICE_CODES else "failed", message)


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__


def report(exc: BaseException, *, as_json: bool) -> int:
    """Tell the user about `exc`; return the exit code.

    stderr always gets one line (argparse's usage before it for a usage error). With
    ``--json`` stdout also gets the error object, unless the command finished with a partial
    result: that result, printed already, is then the output.
    """
    if isinstance(exc, BrokenPipeError) and output_closed():
        return quiet_exit()
    failure = failure_of(exc)
    if as_json and failure.exit != Exit.INCOMPLETE:
        try:
            print(json.dumps(failure.error_object()), flush=True)
        except BrokenPipeError:
            return quiet_exit()
    if failure.usage:
        sys.stderr.write(failure.usage)
    print(f"{failure.prefix}: {failure.message}", file=sys.stderr)
    return int(failure.exit)


def output_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (poll reports an error on its write end)."""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


def quiet_exit() -> int:
    """Stop writing to a stdout nobody reads: what is still buffered goes to /dev/null."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return int(Exit.OUTPUT_CLOSED)
