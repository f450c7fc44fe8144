"""The `timevault` command: one entry point, one clear line on any error, never a traceback."""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Sequence

from timevault.cli import exits, repo_parser, space
from timevault.cli.parser import Parser, Version
from timevault.core.memory import tune_allocator


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="timevault",
        description="TimeVault: encrypted, deduplicated backups you can restore anywhere.",
        epilog="Exit codes: 0 success, 1 failure, 2 usage error, 3 finished but incomplete, "
        "10 no repository at the location, 11 repository locked, 12 wrong password, 130 interrupted.",
    )
    parser.add_argument("--version", action=Version, help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    repo_parser.register(subparsers)
    from timevault.cli import system

    system.register(subparsers)
    space.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (see `timevault.cli.exits`). Never raises but
    SystemExit (from ``--help`` and ``--version``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv  # until the arguments are parsed: a usage error answers in JSON too
    try:
        args = build_parser().parse_args(argv)
        as_json = bool(getattr(args, "json", False))
        tune_allocator()
        _setup_logging()
        func = args.func
        if isinstance(func, str):  # "module:function", imported only now (see timevault.cli.repo_parser)
            module, name = func.split(":")
            func = getattr(importlib.import_module(module), name)
        if inspect.iscoroutinefunction(func):
            import asyncio  # ~50 ms of imports that the HTTP-only system commands do without

            result = asyncio.run(func(args))
        else:
            result = func(args)
    except (Exception, KeyboardInterrupt) as exc:
        if os.environ.get("TIMEVAULT_DEBUG") and exits.failure_of(exc).code == "internal":
            raise
        return exits.report(exc, as_json=as_json)
    return result if isinstance(result, int) else 0


def _setup_logging() -> None:
    # Warnings (e.g. a storage retry) show as one short line each; TIMEVAULT_LOG_LEVEL=INFO for more.
    level = logging.getLevelName(os.environ.get("TIMEVAULT_LOG_LEVEL", "WARNING").upper())
    level = level if isinstance(level, int) else logging.WARNING
    logging.basicConfig(
        level=level,
        format="timevault: warning: %(message)s"
        if level >= logging.WARNING
        else "timevault: %(levelname)s: %(message)s",
    )


def run() -> None:
    """The console script: `main`, then exit without tearing the interpreter down.

    Everything is written and closed by then; freeing every module and object one by one
    (the index, caches, imported libraries) added ~50 ms to every command, a few percent of an
    incremental backup.
    """
    try:
        code = main()
    except SystemExit as exc:  # --help and --version; their output still has to be flushed below
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    logging.shutdown()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = exits.quiet_exit()  # e.g. `| head -1`: the reader has all it wanted
    except (OSError, ValueError):
        code = code or exits.Exit.FAILURE  # the output was not delivered
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(code)


if __name__ == "__main__":
    run()
