"""The plan options of `timevault plan create|update|show`: excludes, hooks and notifications.

Each flag becomes the `PlanCreate`/`PlanUpdate` field of the same name (docs/gateway.md);
validation is `timevault.proto.plans`', so mistakes are reported before a password is asked.
"""

from __future__ import annotations

import argparse
from typing import Any

from timevault.cli.exclude_args import add_exclude_arguments, exclude_files
from timevault.proto.plans import (
    validate_command,
    validate_exclude_files,
    validate_excludes,
    validate_hook_timeout,
    validate_notify,
)

_FLAGS = {"exclude_caches": True, "one_file_system": False, "pre_command_optional": False, "notify_success": False}


def add_arguments(parser: argparse.ArgumentParser, *, update: bool = False) -> None:
    add_exclude_arguments(parser, defaults=not update)
    hooks = parser.add_argument_group("hooks (run by the snapshotter, with TIMEVAULT_PLAN and TIMEVAULT_JOB set)")
    hooks.add_argument("--pre-command", metavar="CMD",
                       help="shell command run before each backup, e.g. a database dump into a source folder"
                            + ("; '' removes it" if update else ""))
    hooks.add_argument("--post-command", metavar="CMD",
                       help="shell command run after each backup, whatever its outcome (TIMEVAULT_STATUS)"
                            + ("; '' removes it" if update else ""))
    optional = hooks.add_mutually_exclusive_group()
    optional.add_argument("--pre-command-optional", action="store_true", default=None,
                          help="a failing pre-command is logged and the backup goes on (default: it fails)")
    if update:
        optional.add_argument("--pre-command-required", dest="pre_command_optional", action="store_false",
                              help="a failing pre-command fails the backup again")
    hooks.add_argument("--hook-timeout", type=int, metavar="SECONDS",
                       help="stop a hook after this many seconds (default 600)")
    notify = parser.add_argument_group("notifications")
    notify.add_argument("--notify", action="append", metavar="URL",
                        help="POST a JSON report here when a backup or restore fails or a slot is missed "
                             "(repeatable" + ("; replaces the URLs" if update else "") + ")")
    success = notify.add_mutually_exclusive_group()
    success.add_argument("--notify-success", action="store_true", default=None,
                         help="also report backups and restores that complete")
    if update:
        success.add_argument("--no-notify-success", dest="notify_success", action="store_false")
        notify.add_argument("--no-notify", action="store_true", help="remove every notification URL")
        parser.add_argument("--no-exclude", action="store_true", help="remove every exclude pattern and file")


def body(args: argparse.Namespace, *, update: bool = False) -> dict[str, Any]:
    """The request fields the flags give (for an update, only those given)."""
    fields: dict[str, Any] = {}
    if args.exclude is not None:
        fields["excludes"] = validate_excludes(args.exclude)
    if args.exclude_file is not None:
        fields["exclude_files"] = validate_exclude_files(exclude_files(args))
    if update and args.no_exclude:
        fields["excludes"], fields["exclude_files"] = [], []
    for flag, default in _FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None and (update or bool(value) != default):
            fields[flag] = bool(value)
    for hook in ("pre_command", "post_command"):
        value = getattr(args, hook)
        if value is not None:
            fields[hook] = validate_command(value, hook) or ("" if update else None)
    if args.hook_timeout is not None:
        fields["hook_timeout"] = validate_hook_timeout(args.hook_timeout)
    if args.notify is not None:
        fields["notify"] = validate_notify(args.notify)
    if update and args.no_notify:
        fields["notify"] = []
    return {k: v for k, v in fields.items() if v is not None}


def show(plan: dict[str, Any]) -> None:
    """The options' lines of `timevault plan show`."""
    excludes = [*plan.get("excludes", []), *(f"(from {f})" for f in plan.get("exclude_files", []))]
    flags = [name for name, on in (("CACHEDIR.TAG folders skipped", plan.get("exclude_caches", True)),
                                   ("one file system", plan.get("one_file_system"))) if on]
    print(f"excludes:   {', '.join(excludes) or '-'}{'  [' + '; '.join(flags) + ']' if flags else ''}")
    if plan.get("pre_command") or plan.get("post_command"):
        optional = " (optional)" if plan.get("pre_command_optional") else ""
        print(f"pre-cmd:    {plan.get('pre_command') or '-'}{optional}")
        print(f"post-cmd:   {plan.get('post_command') or '-'}")
        print(f"hook limit: {plan.get('hook_timeout', 600)} s")
    urls = plan.get("notify", [])
    success = " (also on success)" if plan.get("notify_success") else ""
    print(f"notify:     {', '.join(urls) or '-'}{success if urls else ''}")
    last = plan.get("notify_last")
    if last:
        from timevault.cli.units import local_time, plural

        outcome = "delivered" if last.get("ok") else f"FAILED ({last.get('error') or last.get('http_status')})"
        print(f"last sent:  {local_time(last.get('at'))}: {last.get('status')} {outcome}, "
              f"{plural(int(last.get('attempts', 1)), 'attempt')}")
