"""The command line's argument parser: argparse, with usage errors raised like any other error."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import NoReturn, TypeAlias

from timevault.cli.errors import UsageError


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is raised, so that it is reported like any other error."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, usage=self.format_usage(), prog=self.prog)


class Version(argparse.Action):
    """``--version``: the installed package's version (looked up only when asked for)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"timevault {version('timevault')}")
        except PackageNotFoundError:
            print("timevault (not installed: version unknown)")
        parser.exit()


def add_retention_flags(parser: argparse.ArgumentParser, *, policy: bool = True) -> None:
    """``--retention`` and the ``--keep-*`` rules (shared with ``repo forget``)."""
    if policy:
        parser.add_argument("--retention", choices=("timemachine", "none"),
                            help="named policy: timemachine (every snapshot of the last 24 hours, one a day for a "
                            "month, one a week before that; the default for new plans) or none (keep everything)")
    periods = {"last": "", "hourly": "hours", "daily": "days", "weekly": "weeks", "monthly": "months",
               "yearly": "years"}
    for rule, period in periods.items():
        what = f"the newest snapshot of each of the last N {period} that have one" if period else "the newest N snapshots"
        parser.add_argument(f"--keep-{rule}", type=int, metavar="N",
                            help=f"keep {what} (-1: no limit); explicit rules replace the named policy")
    parser.add_argument("--keep-within", metavar="DURATION",
                        help="keep every snapshot within DURATION of the newest, e.g. 36h, 10d, 2w, 6m, 1y2m")

Subcommands: TypeAlias = "argparse._SubParsersAction[Parser]"
"""What `add_subparsers` returns on a `Parser`: each command module registers its commands there."""
