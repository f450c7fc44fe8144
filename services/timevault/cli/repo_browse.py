"""`timevault repo ls|diff|find LOCATION …`: browse a repository directly, with no services.

The JSON they print is the HTTP API's (`timevault.proto.browse`), so `timevault ls PLAN …`
(through the services) and these print the same.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from timevault.cli.browse_output import print_diff, print_find, print_json, print_listing
from timevault.cli.passwords import get_password
from timevault.core import browse
from timevault.core.repository import Repository
from timevault.core.storage import open_location


async def _open(args: argparse.Namespace) -> Repository:
    password = get_password(args.password_file)
    return await Repository.open(open_location(args.location), password)


async def listing(repo: Repository, snapshot_ref: str, path: str) -> dict[str, Any]:
    snapshot_id = await repo.resolve_snapshot(snapshot_ref)
    snapshot = await repo.load_snapshot(snapshot_id)
    entries = await browse.list_folder(repo, snapshot, path)
    shown = browse.join_path(browse.split_path(path))
    return {"snapshot": snapshot_id, "path": shown, "entries": [dataclasses.asdict(e) for e in entries],
            "total": len(entries), "offset": 0}


async def difference(repo: Repository, a_ref: str, b_ref: str) -> dict[str, Any]:
    a_id, b_id = await repo.resolve_snapshot(a_ref), await repo.resolve_snapshot(b_ref)
    result = await browse.diff(repo, await repo.load_snapshot(a_id), await repo.load_snapshot(b_id))
    return {"from_snapshot": a_id, "to_snapshot": b_id,
            "added": [dataclasses.asdict(c) for c in result.added],
            "removed": [dataclasses.asdict(c) for c in result.removed],
            "changed": [dataclasses.asdict(c) for c in result.changed],
            "added_size": result.added_size, "removed_size": result.removed_size}


async def finding(repo: Repository, pattern: str, limit: int = browse.FIND_LIMIT) -> dict[str, Any]:
    snapshots = await repo.list_snapshots()
    matches, truncated = await browse.find(repo, snapshots, pattern, limit=limit)
    return {"pattern": pattern, "matches": [dataclasses.asdict(m) for m in matches], "truncated": truncated}


async def cmd_ls(args: argparse.Namespace) -> None:
    repo = await _open(args)
    try:
        result = await listing(repo, args.snapshot, args.path)
    finally:
        await repo.close()
    print_json(result) if args.json else print_listing(result)


async def cmd_diff(args: argparse.Namespace) -> None:
    repo = await _open(args)
    try:
        result = await difference(repo, args.snapshot_a, args.snapshot_b)
    finally:
        await repo.close()
    print_json(result) if args.json else print_diff(result)


async def cmd_find(args: argparse.Namespace) -> None:
    repo = await _open(args)
    try:
        result = await finding(repo, args.pattern)
    finally:
        await repo.close()
    print_json(result) if args.json else print_find(result)
