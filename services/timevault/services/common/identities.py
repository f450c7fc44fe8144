"""Who may publish and subscribe to what on NATS: one identity per service, and the operator's.

Each service connects as its own NATS user, whose permissions are the subjects it actually uses
(`tests/services/test_identities.py` checks the code against this table, and that a full backup
and restore through `timevault up` meets no permission violation). The point is containment:
the internet-facing gateway cannot ask for a plan's write keys (``tv.catalog.plan.secrets``),
and nothing but the restorer can receive restore requests, which carry passwords.

Replies: every identity gets its own inbox prefix (``_INBOX.<user>``, nats-py's ``inbox_prefix``)
and may subscribe only below it, so no identity can read the replies meant for another (the
catalog's answers to ``tv.catalog.plan.secrets`` hold write keys). A service answers requests
through ``allow_responses`` (one reply to each request it received), not through a publish
permission on other identities' inboxes.

The same table renders the ``authorization`` block of every nats-server configuration: the one
`timevault up` writes (`timevault.services.common.natsd`) and ``deploy/nats/users.conf`` (used by
compose and Kubernetes): ``python -m timevault.services.common.identities > deploy/nats/users.conf``
and ``python -m timevault.services.common.identities --k8s deploy/k8s/timevault.yaml``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from timevault.proto import subjects

OPERATOR = "operator"
SERVICES = ("catalog", "scheduler", "snapshotter", "uploader", "restorer", "gateway")
JS_API = "$JS.API"
SRV = "$SRV"


def inbox_prefix(user: str) -> str:
    """The inbox prefix an identity must use (its replies arrive below it)."""
    return f"_INBOX.{user}"


def password_env(user: str) -> str:
    """The environment variable nats-server reads this user's password from, e.g. ``NATS_CATALOG_PASSWORD``."""
    return f"NATS_{user.upper()}_PASSWORD"


@dataclass(frozen=True)
class Identity:
    """One NATS user: what it may publish and subscribe to."""

    user: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    responses: bool = True
    """May answer the requests it receives (nats-server ``allow_responses``)."""


def _discovery(name: str) -> tuple[str, ...]:
    # $SRV.PING, $SRV.PING.<name>, $SRV.PING.<name>.<id> (and INFO, STATS): only its own name.
    return (f"{SRV}.*", f"{SRV}.*.{name}", f"{SRV}.*.{name}.*")


def _stream_admin(stream: str) -> tuple[str, ...]:
    return tuple(f"{JS_API}.STREAM.{op}.{stream}" for op in ("CREATE", "INFO", "UPDATE"))


def _consumer(stream: str, durable: str | None) -> tuple[str, ...]:
    if durable is None:  # ephemeral (ordered) consumers: names chosen by the client library
        return (f"{JS_API}.CONSUMER.CREATE.{stream}", f"{JS_API}.CONSUMER.CREATE.{stream}.>",
                f"{JS_API}.CONSUMER.DELETE.{stream}.*", f"{JS_API}.CONSUMER.INFO.{stream}.*",
                f"{JS_API}.STREAM.INFO.{stream}")
    return (f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}", f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}.>",
            f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}", f"{JS_API}.CONSUMER.INFO.{stream}.{durable}",
            f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}", f"$JS.ACK.{stream}.{durable}.>")


def _catalog_requests(*names: str) -> tuple[str, ...]:
    return tuple(getattr(subjects, name) for name in names)


def identities() -> dict[str, Identity]:
    """Every identity by user name: the six services and the operator."""
    s = subjects
    job_worker_pub = (s.JOB_PROGRESS_ALL, s.JOB_FINISH, s.JOB_LOG)
    browse_ops = s.subject("browse.*.*")  # tv.browse.<restorer instance>.<op>
    table = [
        Identity("catalog",
                 publish=(s.JOB_EVENTS_ALL, s.PLAN_EVENTS_ALL, s.JOB_CANCEL_ALL, s.WORK_BACKUP, s.WORK_PRUNE,
                          *_stream_admin(s.WORK_STREAM), *_stream_admin(s.EVENTS_STREAM)),
                 subscribe=(s.subject("catalog.>"), s.JOB_PROGRESS_ALL, *_discovery("catalog"))),
        Identity("scheduler",
                 publish=_catalog_requests("SCHEDULE_LIST", "SCHEDULE_FIRE"),
                 subscribe=(s.PLAN_EVENTS_ALL, *_discovery("scheduler"))),
        Identity("snapshotter",
                 publish=(*_catalog_requests("JOB_CLAIM", "PLAN_GET", "PLAN_SECRETS", "CHUNKS_LOOKUP", "CHUNKS_SYNC",
                                             "CHUNKS_UPDATE"),
                          *job_worker_pub, s.UPLOAD_OPEN, s.subject("upload.session.>"),
                          *_stream_admin(s.WORK_STREAM), *_consumer(s.WORK_STREAM, s.SNAPSHOTTER_DURABLE),
                          *_consumer(s.WORK_STREAM, s.PRUNER_DURABLE)),
                 subscribe=(s.JOB_CANCEL_ALL, s.FOLDERS_LIST, *_discovery("snapshotter"))),
        Identity("uploader",
                 publish=_catalog_requests("PLAN_SECRETS", "CHUNKS_ADD"),
                 subscribe=(s.UPLOAD_OPEN, s.subject("upload.session.*.*"), *_discovery("uploader"))),
        Identity("restorer",
                 publish=(*_catalog_requests("SNAPSHOT_GET", "SNAPSHOT_LIST", "PLAN_GET", "PLAN_SECRETS", "JOB_CREATE"),
                          *job_worker_pub),
                 subscribe=(s.RESTORE_START, s.BROWSE_OPEN, browse_ops, s.JOB_CANCEL_ALL, *_discovery("restorer"))),
        Identity("gateway",
                 publish=(*_catalog_requests(*GATEWAY_CATALOG_REQUESTS), s.RESTORE_START, s.BROWSE_OPEN,
                          browse_ops, s.FOLDERS_LIST, f"{SRV}.>", *_consumer(s.EVENTS_STREAM, None)),
                 subscribe=(s.EVENTS_ALL, *_discovery("gateway"))),
        # Discovery and events for people and tools outside: no request to any service.
        Identity(OPERATOR, publish=(f"{SRV}.>",), subscribe=(s.EVENTS_ALL,), responses=False),
    ]
    return {identity.user: identity for identity in table}


# What the HTTP API asks the catalog for (never secrets, claims, finishes, chunks or schedule slots).
GATEWAY_CATALOG_REQUESTS = (
    "PLAN_CREATE", "PLAN_LIST", "PLAN_GET", "PLAN_UPDATE", "PLAN_DELETE", "PLAN_PAUSE", "PLAN_RESUME",
    "PLAN_ATTACH", "PLAN_EVENTS", "SNAPSHOT_LIST", "JOB_CREATE", "JOB_GET", "JOB_LIST", "JOB_CANCEL",
    "CATALOG_STATS", "JOB_EVENTS", "PLAN_PRUNE", "SPACE_LOGIN", "SPACE_STATUS", "SPACE_LIST", "SPACE_LOGOUT",
)


def _list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def authorization(password: Callable[[str], str], users: tuple[str, ...] | None = None,
                  indent: str = "") -> str:
    """The nats-server ``authorization { users = [...] }`` block.

    `password(user)` gives the value as it is to appear in the file: ``$NATS_CATALOG_PASSWORD``
    (read from nats-server's environment) is what `timevault up` and the deploy files use, so
    no password is ever written to disk.
    """
    table = identities()
    lines = ["authorization {", "  users = ["]
    for user in users or (*SERVICES, OPERATOR):
        identity = table[user]
        inbox = f"{inbox_prefix(user)}.>"
        lines += [
            f"    {{ user: {user}, password: {password(user)}",
            "      permissions: {",
            f"        publish: {{ allow: {_list(identity.publish)} }}",
            f"        subscribe: {{ allow: {_list((*identity.subscribe, inbox))} }}",
        ]
        if identity.responses:
            lines.append("        allow_responses: true")
        lines += ["      }", "    }"]
    lines += ["  ]", "}"]
    return "".join(f"{indent}{line}\n" if line else "\n" for line in lines)


def env_password(user: str) -> str:
    return "$" + password_env(user)


def users_conf() -> str:
    """``deploy/nats/users.conf``: the users of a deployed NATS (passwords from its environment)."""
    return ("# Generated by `python -m timevault.services.common.identities` from\n"
            "# timevault/services/common/identities.py; tests fail when this file differs.\n"
            "# Passwords come from nats-server's environment (NATS_<USER>_PASSWORD), never from a file.\n"
            + authorization(env_password))


def sync_k8s(path: Path) -> None:
    """Rewrite the ``users.conf`` of the NATS ConfigMap in a Kubernetes manifest (indented block)."""
    text = path.read_text()
    head, sep, rest = text.partition("  users.conf: |\n")
    if not sep:
        raise SystemExit(f"{path}: no 'users.conf: |' block")
    _, end, tail = rest.partition("---\n")
    block = "".join(f"    {line}\n" if line else "\n" for line in users_conf().splitlines())
    path.write_text(head + sep + block + end + tail)


if __name__ == "__main__":
    # No argument: print deploy/nats/users.conf. `--k8s FILE`: update that manifest's ConfigMap.
    if sys.argv[1:2] == ["--k8s"]:
        sync_k8s(Path(sys.argv[2]))
    else:
        sys.stdout.write(users_conf())
