"""`timevault ls|diff|find NAME …`: browse a plan's snapshots through the running services.

Each command unlocks the plan with its password (``POST …/unlock``: a session in a restorer's
memory), asks, and locks it again, so the password is sent once per command and kept nowhere.
The output is `timevault repo ls|diff|find`'s (`timevault.cli.browse_output`).
"""

from __future__ import annotations

import argparse
import contextlib
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

from timevault.cli.browse_output import print_diff, print_find, print_json, print_listing
from timevault.cli.parser import Subcommands

SESSION_HEADER = "X-Timevault-Session"


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


@contextlib.contextmanager
def unlocked(args: argparse.Namespace) -> Iterator[tuple[Any, str, dict[str, str]]]:
    """(gateway, plan id, session header) while the plan is unlocked; locked again afterwards."""
    from timevault.cli.passwords import get_password
    from timevault.cli.system import Gateway

    gateway = Gateway.find(args.data_dir)
    plan_id = gateway.plan_id(args.name)
    password = get_password(args.password_file, prompt="Backup password")
    session = gateway.call("POST", f"/plans/{_q(plan_id)}/unlock", {"password": password, "idle_timeout": 60})
    headers = {SESSION_HEADER: session["session"]}
    try:
        yield gateway, plan_id, headers
    finally:
        with contextlib.suppress(Exception):
            gateway.call("POST", f"/plans/{_q(plan_id)}/lock", headers=headers)


def cmd_ls(args: argparse.Namespace) -> int:
    with unlocked(args) as (gateway, plan_id, headers):
        path = _q(args.path if args.path.startswith("/") else "/" + args.path)
        result = gateway.call("GET", f"/plans/{_q(plan_id)}/snapshots/{_q(args.snapshot)}/ls?path={path}",
                              headers=headers)
    print_json(result) if args.json else print_listing(result)
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    with unlocked(args) as (gateway, plan_id, headers):
        query = f"from={_q(args.snapshot_a)}&to={_q(args.snapshot_b)}"
        result = gateway.call("GET", f"/plans/{_q(plan_id)}/diff?{query}", headers=headers)
    print_json(result) if args.json else print_diff(result)
    return 0


def cmd_find(args: argparse.Namespace) -> int:
    with unlocked(args) as (gateway, plan_id, headers):
        result = gateway.call("GET", f"/plans/{_q(plan_id)}/find?pattern={_q(args.pattern)}", headers=headers)
    print_json(result) if args.json else print_find(result)
    return 0


def register(subparsers: Subcommands, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = subparsers.add_parser("ls", help="list a folder of a plan's snapshot")
    p.add_argument("name", metavar="NAME", help="the plan")
    p.add_argument("snapshot", metavar="SNAPSHOT", help="snapshot id, unique prefix, or 'latest'")
    p.add_argument("path", nargs="?", default="/", metavar="PATH", help="absolute path as backed up (default /)")
    p.add_argument("--password-file", metavar="F")
    common(p)
    p.set_defaults(func=cmd_ls)

    p = subparsers.add_parser("diff", help="paths added, removed and changed between two snapshots of a plan")
    p.add_argument("name", metavar="NAME", help="the plan")
    p.add_argument("snapshot_a", metavar="SNAPSHOT_A", help="the earlier snapshot")
    p.add_argument("snapshot_b", metavar="SNAPSHOT_B", help="the later snapshot")
    p.add_argument("--password-file", metavar="F")
    common(p)
    p.set_defaults(func=cmd_diff)

    p = subparsers.add_parser("find", help="find a name in every snapshot of a plan")
    p.add_argument("name", metavar="NAME", help="the plan")
    p.add_argument("pattern", metavar="PATTERN",
                   help="part of a name (notes), or a glob (*.pdf); with a '/', matched on the path too")
    p.add_argument("--password-file", metavar="F")
    common(p)
    p.set_defaults(func=cmd_find)
