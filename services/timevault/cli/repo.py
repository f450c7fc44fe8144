"""`timevault repo ...`: work on a location directly, with no services running.

This is how a person restores on a new machine: only the location and the password are needed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from timevault.cli.errors import CommandError, Incomplete
from timevault.cli.passwords import get_password
from timevault.cli.progress import ProgressBar, human_bytes
from timevault.core.archiver import backup, left_out
from timevault.core.checker import check
from timevault.core.prune import forget, prune
from timevault.core.repository import Repository, Snapshot
from timevault.core.restorer import restore
from timevault.core.storage import open_location


def snapshot_json(snapshot_id: str, snapshot: Snapshot) -> dict[str, Any]:
    stats = snapshot.stats
    return {
        "id": snapshot_id,
        "short_id": snapshot_id[:8],
        "time": snapshot.time,
        "finished": snapshot.finished,
        "hostname": snapshot.hostname,
        "paths": snapshot.paths,
        "files": stats.files,
        "dirs": stats.dirs,
        "size": stats.size,
        "added_size": stats.added_size,
        "unchanged_files": stats.unchanged_files,
        "parent": snapshot.parent,
        "plan": snapshot.plan,
        "warnings": snapshot.warnings,
    }


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/timevault``: per repository, what the last backup knew of each file."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "timevault")


async def _open(args: argparse.Namespace) -> Repository:
    password = get_password(args.password_file)
    return await Repository.open(open_location(args.location), password)


async def cmd_init(args: argparse.Namespace) -> None:
    password = get_password(args.password_file, confirm=True)
    repo = await Repository.init(open_location(args.location), password)
    try:
        print(f"created repository {repo.config.id[:8]} at {repo.storage.location}")
        print("Keep the password safe: without it the backups cannot be restored.")
    finally:
        await repo.close()


async def cmd_backup(args: argparse.Namespace) -> None:
    repo = await _open(args)
    bar = ProgressBar("backup")
    try:
        snapshot_id, snapshot = await backup(
            repo,
            args.paths,
            progress=bar if bar.enabled else None,
            cache_dir=None if args.no_cache else args.cache_dir or default_cache_dir(),
        )
    finally:
        bar.done()
        await repo.close()
    if args.json:
        print(json.dumps(snapshot_json(snapshot_id, snapshot)))
    else:
        stats = snapshot.stats
        print(
            f"snapshot {snapshot_id[:8]} saved: {stats.files} files, {human_bytes(stats.size)}, "
            f"{human_bytes(stats.added_size)} added ({stats.unchanged_files} unchanged files not read)"
        )
        for warning in snapshot.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    missing = left_out(snapshot.warnings)
    if missing:
        raise Incomplete(f"snapshot {snapshot_id[:8]} saved without {len(missing)} item(s) that could not "
                         "be read" + ("" if args.json else " (see the warnings above)"))


async def cmd_snapshots(args: argparse.Namespace) -> None:
    repo = await _open(args)
    damaged: list[str] = []
    try:
        snapshots = await repo.list_snapshots(damaged=damaged)
    finally:
        await repo.close()
    if args.json:
        print(json.dumps([snapshot_json(i, s) for i, s in snapshots]))
    else:
        _print_snapshot_table(snapshots)
    if damaged:
        raise Incomplete("; ".join(damaged) + " (left out of the list; run `timevault repo check`)")


def _print_snapshot_table(snapshots: list[tuple[str, Snapshot]]) -> None:
    print(f"{'ID':<10}{'TIME':<27}{'FILES':>8}{'SIZE':>12}{'ADDED':>12}  PATHS")
    for snapshot_id, s in snapshots:
        print(
            f"{snapshot_id[:8]:<10}{s.time[:19].replace('T', ' ') + ' UTC':<27}{s.stats.files:>8}"
            f"{human_bytes(s.stats.size):>12}{human_bytes(s.stats.added_size):>12}  {', '.join(s.paths)}"
        )
    print(f"{len(snapshots)} snapshot(s)")


async def cmd_restore(args: argparse.Namespace) -> None:
    repo = await _open(args)
    bar = ProgressBar("restore")
    try:
        result = await restore(
            repo, args.snapshot, os.path.abspath(args.target), includes=args.include,
            progress=bar if bar.enabled else None
        )
    finally:
        bar.done()
        await repo.close()
    if args.json:
        print(
            json.dumps(
                {"files": result.files, "dirs": result.dirs, "size": result.bytes, "errors": result.errors}
            )
        )
    else:
        print(
            f"restored {result.files} files, {result.dirs} folders, {human_bytes(result.bytes)} "
            f"into {os.path.abspath(args.target)}"
        )
    for error in result.errors:
        print(f"error: {error}", file=sys.stderr)
    if result.errors:
        raise Incomplete(f"{len(result.errors)} item(s) could not be restored")


async def cmd_check(args: argparse.Namespace) -> None:
    repo = await _open(args)
    try:
        result = await check(repo, read_data=args.read_data)
    finally:
        await repo.close()
    for note in result.notes:
        print(f"note: {note}")
    for error in result.errors:
        print(f"error: {error}", file=sys.stderr)
    read = f", {result.packs_read} packs read and verified" if args.read_data else ""
    print(f"{result.snapshots} snapshots, {result.packs} packs, {result.blobs} blobs{read}")
    if result.errors:
        raise CommandError(f"the repository has {len(result.errors)} error(s)")
    print("no errors found")


async def cmd_forget(args: argparse.Namespace) -> None:
    repo = await _open(args)
    try:
        removed = await forget(repo, args.snapshots)
    finally:
        await repo.close()
    for snapshot_id in removed:
        print(f"removed snapshot {snapshot_id[:8]}")
    print("run `timevault repo prune` to free the space their data used")


async def cmd_prune(args: argparse.Namespace) -> None:
    repo = await _open(args)
    try:
        result = await prune(repo)
    finally:
        await repo.close()
    print(
        f"deleted {result.packs_deleted} packs, repacked {result.packs_repacked}, "
        f"freed {human_bytes(result.bytes_freed)}"
    )


async def cmd_passwd(args: argparse.Namespace) -> None:
    repo = await _open(args)
    try:
        new_password = get_password(
            args.new_password_file, confirm=True, prompt="New password", env="TIMEVAULT_NEW_PASSWORD_FILE"
        )
        await repo.change_password(new_password)
    finally:
        await repo.close()
    print("password changed (keys rewrapped; no data was rewritten)")
