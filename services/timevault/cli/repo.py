"""`timevault repo ...`: work on a location directly, with no services running.

This is how a person restores on a new machine: only the location and the password are needed.
Every command that opens the repository with the password ends by endorsing its history (the
password holder's signature over the snapshots that exist now; see
`timevault.core.repository.history`), after it reported each snapshot's standing as it was.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any

from timevault.cli.errors import CommandError, Incomplete, UsageError
from timevault.cli.exclude_args import exclude_options
from timevault.cli.passwords import get_password
from timevault.cli.progress import ProgressBar, human_bytes
from timevault.cli.space import SpaceCommandError, read_token_file
from timevault.cli.units import plural
from timevault.core.archiver import backup, left_out
from timevault.core.checker import check
from timevault.core.prune import PruneOptions, PruneResult, forget, forget_by_rules, prune
from timevault.core.repository import Repository, Snapshot
from timevault.core.repository.history import CONTRADICTS, ENDORSED, History
from timevault.core.restorer import restore
from timevault.core.retention import Rules
from timevault.core.retention import describe as describe_rules
from timevault.core.storage import Storage, open_location


def snapshot_json(
    snapshot_id: str, snapshot: Snapshot, *, warnings: list[str] | None = None, standing: str = ENDORSED
) -> dict[str, Any]:
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
        "warnings": warnings or [],
        # endorsed: vouched for by the password holder; unendorsed: written since the password
        # was last used; contradicts: at odds with the endorsed history (see `repo check`).
        "endorsed": standing == ENDORSED,
        "history": standing,
    }


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/timevault``: per repository, what the last backup knew of each file."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "timevault")


def _location(args: argparse.Namespace) -> Storage:
    """The storage of LOCATION; a Space location signs in with $TIMEVAULT_SPACE_TOKEN_FILE's token."""
    token = None
    if args.location.startswith(("space://", "space+http://")):
        path = os.environ.get("TIMEVAULT_SPACE_TOKEN_FILE")
        if not path:
            raise SpaceCommandError("a Space location needs a device token: run `timevault space login URL "
                                    "--token-file F` and set TIMEVAULT_SPACE_TOKEN_FILE=F")
        token = read_token_file(path)
    return open_location(args.location, space_token=token)


async def _open(args: argparse.Namespace) -> Repository:
    password = get_password(args.password_file)
    return await Repository.open(_location(args), password)


async def _endorse(repo: Repository) -> None:
    """The password is here: sign the history as it now is (snapshots that contradict it stay
    out). Done after a command's work, so that its output showed the standing before."""
    await repo.endorse()


def _warn_config(repo: Repository) -> None:
    for problem in repo.config_problems:
        print(f"warning: {problem}", file=sys.stderr)


async def cmd_init(args: argparse.Namespace) -> None:
    password = get_password(args.password_file, confirm=True)
    repo = await Repository.init(_location(args), password)
    try:
        print(f"created repository {repo.config.id[:8]} at {repo.storage.location}")
        print("Keep the password safe: without it the backups cannot be restored.")
    finally:
        await repo.close()


async def cmd_backup(args: argparse.Namespace) -> None:
    excludes = exclude_options(args)  # a bad pattern or missing file is reported before the password
    repo = await _open(args)
    bar = ProgressBar("backup")
    try:
        snapshot_id, snapshot = await backup(
            repo,
            args.paths,
            progress=bar if bar.enabled else None,
            cache_dir=None if args.no_cache else args.cache_dir or default_cache_dir(),
            excludes=excludes,
        )
    finally:
        bar.done()
        await repo.close()
    warnings = repo.snapshot_warnings(snapshot)  # sealed to the password holder (they name paths)
    if args.json:
        print(json.dumps(snapshot_json(snapshot_id, snapshot, warnings=warnings)))
    else:
        stats = snapshot.stats
        print(
            f"snapshot {snapshot_id[:8]} saved: {stats.files} files, {human_bytes(stats.size)}, "
            f"{human_bytes(stats.added_size)} added ({stats.unchanged_files} unchanged files not read)"
        )
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
    missing = left_out(warnings)
    if missing:
        raise Incomplete(f"snapshot {snapshot_id[:8]} saved without {len(missing)} item(s) that could not "
                         "be read" + ("" if args.json else " (see the warnings above)"))


async def cmd_snapshots(args: argparse.Namespace) -> None:
    repo = await _open(args)
    damaged: list[str] = []
    try:
        _warn_config(repo)
        history, by_id = await repo.load_history(damaged)
        snapshots = sorted(by_id.items(), key=lambda item: (item[1].time, item[0]))
        if args.json:
            print(json.dumps([
                snapshot_json(i, s, warnings=repo.snapshot_warnings(s), standing=history.status[i])
                for i, s in snapshots
            ]))
        else:
            _print_snapshot_table(snapshots, history)
        await _endorse(repo)
    finally:
        await repo.close()
    if damaged:
        raise Incomplete("; ".join(damaged) + " (left out of the list; run `timevault repo check`)")
    problems = history.problems + [history.describe(i) for i in history.contradicting()]
    if problems:
        raise CommandError("; ".join(problems) + " (run `timevault repo check`)")


_MARKS = {ENDORSED: "", CONTRADICTS: "  [CONTRADICTS ENDORSED HISTORY]"}


def _print_snapshot_table(snapshots: list[tuple[str, Snapshot]], history: History) -> None:
    print(f"{'ID':<10}{'TIME':<27}{'FILES':>8}{'SIZE':>12}{'ADDED':>12}  {'ENDORSED':<9} PATHS")
    for snapshot_id, s in snapshots:
        standing = history.status.get(snapshot_id, CONTRADICTS)
        endorsed = "yes" if standing == ENDORSED else "no"
        print(
            f"{snapshot_id[:8]:<10}{s.time[:19].replace('T', ' ') + ' UTC':<27}{s.stats.files:>8}"
            f"{human_bytes(s.stats.size):>12}{human_bytes(s.stats.added_size):>12}  {endorsed:<9} "
            f"{', '.join(s.paths)}{_MARKS.get(standing, '')}"
        )
    unendorsed = sum(1 for _, status in history.status.items() if status not in (ENDORSED, CONTRADICTS))
    print(plural(len(snapshots), "snapshot"))
    if unendorsed:
        print(f"{unendorsed} written since the password was last used (endorsed now)")


async def cmd_restore(args: argparse.Namespace) -> None:
    repo = await _open(args)
    bar = ProgressBar("restore")
    try:
        _warn_config(repo)
        async with repo.read_lock():  # a prune's sweep (the services') waits for this restore
            result = await restore(
                repo, args.snapshot, os.path.abspath(args.target), includes=args.include,
                progress=bar if bar.enabled else None, allow_unverified=args.allow_unverified,
                keep_setid=args.keep_setid,
            )
        bar.done()
        await _endorse(repo)
    finally:
        bar.done()
        await repo.close()
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(
            json.dumps(
                {"files": result.files, "dirs": result.dirs, "size": result.bytes, "errors": result.errors,
                 "snapshot": result.snapshot_id, "endorsed": result.history == ENDORSED,
                 "history": result.history}
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
        await _endorse(repo)
    finally:
        await repo.close()
    for note in result.notes:
        print(f"note: {note}")
    for error in result.errors:
        print(f"error: {error}", file=sys.stderr)
    read = f", {result.packs_read} packs read and verified" if args.read_data else ""
    print(f"{result.snapshots} snapshots, {result.packs} packs, {result.blobs} blobs{read}")
    if result.snapshots:
        print(f"{result.endorsed} of {result.snapshots} snapshots endorsed with the password")
    if result.errors:
        raise CommandError(f"the repository has {len(result.errors)} error(s)")
    print("no errors found")


def _rules_of(args: argparse.Namespace) -> Rules | None:
    """The retention rules the flags give, or None when none is given."""
    from timevault.proto.plans import Retention, retention_rules, validate_retention

    keep = {name: getattr(args, name) for name in _KEEP_FLAGS if getattr(args, name, None) is not None}
    if not keep and not args.retention:
        return None
    return retention_rules(validate_retention(Retention(**keep) if keep else Retention(policy=args.retention)))


_KEEP_FLAGS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly",
               "keep_within")


async def cmd_forget(args: argparse.Namespace) -> None:
    rules = _rules_of(args)
    if args.snapshots and rules is not None:
        raise UsageError("give either SNAPSHOTs to forget or retention rules (--keep-…, --retention), not both")
    if not args.snapshots and rules is None:
        raise UsageError("nothing to forget: give SNAPSHOT ids, or retention rules such as --keep-last 10")
    repo = await _open(args)
    try:
        if args.snapshots:
            ids = list(dict.fromkeys([await repo.resolve_snapshot(ref) for ref in args.snapshots]))
            if not args.dry_run:
                ids = await forget(repo, ids)  # endorses the history without them
            outcome: dict[str, Any] = {"dry_run": args.dry_run, "forgotten": ids, "kept": [], "left_alone": []}
        else:
            from timevault.cli.system import _local_timezone

            timezone = args.timezone or _local_timezone()
            result = await forget_by_rules(repo, rules or Rules(), timezone, dry_run=args.dry_run)
            outcome = {
                "dry_run": args.dry_run,
                "rules": describe_rules(rules or Rules()),
                "timezone": timezone,
                "forgotten": result.forgotten,
                "kept": [{"id": d.snapshot.id, "time": d.snapshot.time.isoformat(), "reasons": d.reasons}
                         for d in result.decisions if d.keep],
                "left_alone": result.left_alone,
            }
        pruned = None
        if args.prune and not args.dry_run:  # in the same process: the password is derived once
            pruned = await prune(repo)
            outcome["prune"] = {"dry_run": False, **dataclasses.asdict(pruned)}
    finally:
        await repo.close()
    if args.json:
        print(json.dumps(outcome))
        return
    verb = "would forget" if args.dry_run else "forgot"
    for kept in outcome["kept"]:
        print(f"keep   {kept['id'][:8]}  {kept['time'][:19].replace('T', ' ')}  ({', '.join(kept['reasons'])})")
    for snapshot_id in outcome["forgotten"]:
        print(f"{'forget' if args.dry_run else 'forgot'} {snapshot_id[:8]}")
    for snapshot_id in outcome["left_alone"]:
        print(f"left alone {snapshot_id[:8]} (contradicts the endorsed history: see `timevault repo check`)")
    if pruned is None:
        print(f"{verb} {len(outcome['forgotten'])} snapshot(s)"
              + ("" if args.dry_run else "; run `timevault repo prune` to free the space their data used"))
        return
    print(f"{verb} {len(outcome['forgotten'])} snapshot(s)")
    _print_prune(pruned, args.dry_run)


async def cmd_prune(args: argparse.Namespace) -> None:
    repo = await _open(args)
    try:
        result = await prune(repo, PruneOptions(dry_run=args.dry_run))  # endorses the history it leaves
    finally:
        await repo.close()
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, **dataclasses.asdict(result)}))
        return
    _print_prune(result, args.dry_run)


def _print_prune(result: PruneResult, dry_run: bool) -> None:
    if dry_run:
        print(f"would delete {result.packs_deleted} pack(s) and repack {result.packs_repacked}, freeing about "
              f"{human_bytes(result.bytes_freed)}")
    else:
        leftovers = ""
        if result.temp_files_removed or result.locks_removed:
            leftovers = (f", removed {result.temp_files_removed} stale temporary file(s) and "
                         f"{result.locks_removed} stale lock(s)")
        print(f"deleted {result.packs_deleted} pack(s), repacked {result.packs_repacked}, "
              f"freed {human_bytes(result.bytes_freed)}{leftovers}")
    if result.packs_rescued:
        print(f"indexed {result.packs_rescued} pack(s) again: snapshots need data in them")
    for note in result.notes:
        print(f"note: {note}")
    if result.orphans_pending:
        print(f"note: {result.orphans_pending} pack(s) no index lists (left by interrupted backups) are deleted by a "
              "prune an hour or more after they were first seen")


async def cmd_passwd(args: argparse.Namespace) -> None:
    repo = await _open(args)
    try:
        new_password = get_password(
            args.new_password_file, confirm=True, prompt="New password", env="TIMEVAULT_NEW_PASSWORD_FILE"
        )
        await repo.change_password(new_password)
        await _endorse(repo)
    finally:
        await repo.close()
    print("password changed (keys rewrapped with argon2id; no data was rewritten)")


async def cmd_rebuild_index(args: argparse.Namespace) -> None:
    repo = await _open(args)
    try:
        recovered, replaced, problems = await repo.rebuild_index()
        await _endorse(repo)
    finally:
        await repo.close()
    print(f"indexed {recovered} pack(s) from their own headers, replaced {replaced} damaged index file(s)")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        raise Incomplete(f"{len(problems)} pack(s) could not be indexed")
