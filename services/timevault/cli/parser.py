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


Subcommands: TypeAlias = "argparse._SubParsersAction[Parser]"
"""What `add_subparsers` returns on a `Parser`: each command module registers its commands there."""
