"""The exclude options shared by `timevault repo backup` and `timevault plan create|update`."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from timevault.core.archiver.excludes import ExcludeOptions


def add_exclude_arguments(parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    """``--exclude``, ``--exclude-file``, ``--one-file-system`` and ``--no-exclude-caches``.

    With `defaults` False (plan update) the booleans stay None unless given, so an update
    changes only what it names.
    """
    parser.add_argument("--exclude", action="append", metavar="PATTERN",
                        help="leave out paths matching PATTERN (gitignore syntax: *.tmp, build/, /cache; repeatable)")
    parser.add_argument("--exclude-file", action="append", metavar="F",
                        help="read exclude patterns from F, one per line (repeatable)")
    fs = parser.add_mutually_exclusive_group()
    fs.add_argument("--one-file-system", action="store_true", default=None if not defaults else False,
                    help="stay on each source's file system (leave out mount points)")
    if not defaults:
        fs.add_argument("--any-file-system", dest="one_file_system", action="store_false",
                        help="cross into other file systems again")
    caches = parser.add_mutually_exclusive_group()
    caches.add_argument("--no-exclude-caches", dest="exclude_caches", action="store_false",
                        default=None if not defaults else True,
                        help="also back up folders marked with a CACHEDIR.TAG (skipped by default)")
    if not defaults:
        caches.add_argument("--exclude-caches", dest="exclude_caches", action="store_true",
                            help="skip folders marked with a CACHEDIR.TAG again")


def exclude_files(args: argparse.Namespace) -> list[str]:
    return [os.path.abspath(os.path.expanduser(path)) for path in args.exclude_file or []]


def exclude_options(args: argparse.Namespace) -> ExcludeOptions:
    """The core's options for an in-process backup (`timevault repo backup`)."""
    from timevault.core.archiver.excludes import ExcludeOptions, compile_patterns, read_pattern_file

    files = exclude_files(args)
    for path in files:
        read_pattern_file(path)  # a missing or unreadable file is an error now, not mid-backup
    compile_patterns(args.exclude or [])
    return ExcludeOptions(patterns=list(args.exclude or []), files=files,
                          caches=bool(args.exclude_caches), one_file_system=bool(args.one_file_system))
