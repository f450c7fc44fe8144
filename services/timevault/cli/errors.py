"""The command line's own errors, under one root: `CommandError`.

Commands raise these for failures that only the command line knows about (a bad combination
of flags, a partial result, a gateway that is not running). Errors of the layers below pass
through unchanged: `timevault.core.errors.TimeVaultError` from the engine,
`timevault.proto.errors.ServiceError` from the services. `timevault.cli.exits` turns any of
them into an exit code, in one place.
"""

from __future__ import annotations

from typing import Any


class CommandError(Exception):
    """A command failed; the message is one line for the user."""


class UsageError(CommandError):
    """The command line is wrong: a flag missing, a value out of place, nothing to do."""

    def __init__(self, message: str, *, usage: str = "", prog: str = "timevault") -> None:
        super().__init__(message)
        self.usage = usage
        """The command's usage text, shown before the message (argparse's errors carry it)."""
        self.prog = prog
        """The (sub)command at fault, e.g. ``timevault plan create``."""


class Incomplete(CommandError):
    """The command finished, but not everything was done (files not read, not restored...).

    Its result was printed already, with the details; the message sums them up.
    """


class PasswordError(CommandError):
    """No password could be had: no file, an empty file, no terminal to ask on."""


class GatewayUnreachable(CommandError):
    """The running system cannot be found or does not answer."""


class JobFailed(CommandError):
    """A job that `--wait` followed ended failed or canceled."""

    def __init__(self, message: str, job: dict[str, Any]) -> None:
        super().__init__(message)
        self.job = job
        """The job as the gateway last reported it."""
