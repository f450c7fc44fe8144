"""The arguments of `timevault repo ...` (the commands themselves are in `timevault.cli.repo`).

Kept apart so that building the parser imports nothing of the engine: the system commands
(`backup`, `plan ...`) only talk HTTP, and importing the archiver, restorer and crypto took
~0.2 s of every such command. Each subcommand names its function as ``module:function``;
`timevault.cli.main` imports it only when that subcommand runs.
"""

from __future__ import annotations

import argparse

from timevault.cli.exclude_args import add_exclude_arguments
from timevault.cli.parser import Subcommands, add_retention_flags


def register(subparsers: Subcommands) -> None:
    repo = subparsers.add_parser("repo", help="work on a repository location directly (no services)")
    commands = repo.add_subparsers(dest="repo_command", required=True, metavar="COMMAND")

    def add(name: str, func: str, help_text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text, description=help_text)
        parser.add_argument(
            "location",
            metavar="LOCATION",
            help="folder path, file:///abs/path or s3://bucket/prefix?endpoint=...",
        )
        parser.add_argument(
            "--password-file",
            metavar="F",
            help="read the password from F (else $TIMEVAULT_PASSWORD_FILE, else prompt)",
        )
        parser.set_defaults(func=func if ":" in func else f"timevault.cli.repo:{func}")
        return parser

    add("init", "cmd_init", "create a new encrypted repository")
    p = add("backup", "cmd_backup", "back up PATHs into a new snapshot")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="keep the files cache here (default $XDG_CACHE_HOME/timevault); it is encrypted and "
        "only saves re-reading the previous snapshot's folders",
    )
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the files cache")
    add_exclude_arguments(p)
    p = add("snapshots", "cmd_snapshots", "list snapshots, oldest first")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p = add("restore", "cmd_restore", "restore a snapshot into a folder")
    p.add_argument("snapshot", metavar="SNAPSHOT", help="id, unique id prefix, or 'latest'")
    p.add_argument("--target", required=True, metavar="DIR")
    p.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATH",
        help="restore only this path of the snapshot (repeatable)",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--allow-unverified",
        action="store_true",
        help="restore a snapshot even if it contradicts the history endorsed with the password",
    )
    p.add_argument(
        "--keep-setid",
        action="store_true",
        help="keep set-user-ID and set-group-ID bits (dropped by default)",
    )
    p = add("ls", "timevault.cli.repo_browse:cmd_ls", "list a folder of a snapshot")
    p.add_argument("snapshot", metavar="SNAPSHOT", help="id, unique id prefix, or 'latest'")
    p.add_argument("path", nargs="?", default="/", metavar="PATH", help="absolute path in the snapshot (default /)")
    p.add_argument("--json", action="store_true", help="print JSON (the API's BrowseListing)")
    p = add("diff", "timevault.cli.repo_browse:cmd_diff", "list paths added, removed and changed between two snapshots")
    p.add_argument("snapshot_a", metavar="SNAPSHOT_A", help="the earlier snapshot")
    p.add_argument("snapshot_b", metavar="SNAPSHOT_B", help="the later snapshot")
    p.add_argument("--json", action="store_true", help="print JSON (the API's SnapshotDiff)")
    p = add("find", "timevault.cli.repo_browse:cmd_find", "find a name in every snapshot")
    p.add_argument("pattern", metavar="PATTERN",
                   help="part of a name (notes), or a glob (*.pdf); with a '/', matched on the path too")
    p.add_argument("--json", action="store_true", help="print JSON (the API's FindResult)")
    p = add("check", "cmd_check", "verify the repository's structure (and all data with --read-data)")
    p.add_argument("--read-data", action="store_true", help="download, decrypt and verify every blob")
    p = add("forget", "cmd_forget", "remove snapshots, named or by retention rules (their data stays until prune)")
    p.add_argument("snapshots", nargs="*", metavar="SNAPSHOT", help="id, unique id prefix, or 'latest'")
    add_retention_flags(p)
    p.add_argument("--timezone", metavar="TZ", help="zone of the rules' days, weeks, … (default: this machine's)")
    p.add_argument("--dry-run", action="store_true", help="say what would be forgotten, forget nothing")
    p.add_argument("--prune", action="store_true", help="then remove the data no snapshot needs, as `repo prune` does (not with --dry-run)")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p = add("prune", "cmd_prune", "remove data that no snapshot needs (in two phases: data a running backup may "
            "still rely on is marked now and deleted by a later prune)")
    p.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    add(
        "rebuild-index",
        "cmd_rebuild_index",
        "index packs that no index file lists (damaged or lost index files), from the packs' own headers",
    )
    p = add("passwd", "cmd_passwd", "change the password (rewraps keys, never rewrites data)")
    p.add_argument(
        "--new-password-file",
        metavar="F",
        help="read the new password from F (else $TIMEVAULT_NEW_PASSWORD_FILE, else prompt)",
    )
