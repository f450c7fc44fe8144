"""The `timevault` command: one entry point, one clear line on any error, never a traceback."""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Sequence

from timevault.cli import repo_parser
from timevault.cli.errors import CommandFailed
from timevault.core.memory import tune_allocator


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors reported as one line (not as an internal error).

    Imported when needed, not at start: a system command never loads the engine, so none of
    these can come from it.
    """
    from timevault.cli.passwords import PasswordError
    from timevault.core.archiver import BackupCanceled
    from timevault.core.repository import RepositoryError, WeakPassword, WrongPassword
    from timevault.core.repository.blobs import CorruptBlob
    from timevault.core.repository.index import CorruptIndex
    from timevault.core.storage import LocationError, StorageError

    return (RepositoryError, WrongPassword, WeakPassword, PasswordError, StorageError, LocationError,
            CorruptBlob, CorruptIndex, BackupCanceled, CommandFailed, OSError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="timevault",
        description="TimeVault: encrypted, deduplicated backups you can restore anywhere.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    repo_parser.register(subparsers)
    try:
        from timevault.cli import system
    except ImportError:
        system = None  # type: ignore[assignment]
    if system is not None:
        system.register(subparsers)
    return parser


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tune_allocator()
    # Warnings (e.g. a storage retry) show as one short line each; TIMEVAULT_LOG_LEVEL=INFO for more.
    level = logging.getLevelName(os.environ.get("TIMEVAULT_LOG_LEVEL", "WARNING").upper())
    level = level if isinstance(level, int) else logging.WARNING
    logging.basicConfig(
        level=level,
        format="timevault: warning: %(message)s"
        if level >= logging.WARNING
        else "timevault: %(levelname)s: %(message)s",
    )
    func = args.func
    if isinstance(func, str):  # "module:function", imported only now (see timevault.cli.repo_parser)
        module, name = func.split(":")
        func = getattr(importlib.import_module(module), name)
    try:
        if inspect.iscoroutinefunction(func):
            import asyncio  # ~50 ms of imports that the HTTP-only system commands do without

            result = asyncio.run(func(args))
        else:
            result = func(args)
    except KeyboardInterrupt:
        print("timevault: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if isinstance(exc, expected_errors()):
            print(f"timevault: error: {_message(exc)}", file=sys.stderr)
            return 1
        # The last guard: a clear line, the traceback only on request.
        if os.environ.get("TIMEVAULT_DEBUG"):
            raise
        print(
            f"timevault: internal error: {type(exc).__name__}: {_message(exc)} "
            "(set TIMEVAULT_DEBUG=1 for details)",
            file=sys.stderr,
        )
        return 1
    return result if isinstance(result, int) else 0


def run() -> None:
    """The console script: `main`, then exit without tearing the interpreter down.

    Everything is written and closed by then; freeing every module and object one by one
    (the index, caches, imported libraries) added ~50 ms to every command, a few percent of an
    incremental backup.
    """
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 1  # e.g. stdout closed by the reader: the output was not delivered
    os._exit(code)


if __name__ == "__main__":
    run()
