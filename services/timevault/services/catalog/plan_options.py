"""A plan's options beside its row: excludes, hooks, notification URLs, and the last delivery.

Kept as one JSON document per plan in a table of their own (``plan_options``), so adding an
option needs no migration and the plans table and its code stay as they were. A plan without
a row has the defaults. Nothing here is secret: these fields are shown in `Plan` as they are.
"""

from __future__ import annotations

from typing import Any

import msgspec

from timevault.proto.plans import (
    HOOK_TIMEOUT,
    NotifyDelivery,
    PlanCreate,
    PlanUpdate,
    validate_command,
    validate_exclude_files,
    validate_excludes,
    validate_hook_timeout,
    validate_notify,
)
from timevault.services.catalog.db import CatalogDB

SCHEMA = """
CREATE TABLE IF NOT EXISTS plan_options (
    plan_id TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
"""


class PlanOptions(msgspec.Struct, kw_only=True):
    """The stored options; every field is also a field of `timevault.proto.plans.Plan`."""

    excludes: list[str] = msgspec.field(default_factory=list)
    exclude_files: list[str] = msgspec.field(default_factory=list)
    exclude_caches: bool = True
    one_file_system: bool = False
    pre_command: str | None = None
    post_command: str | None = None
    pre_command_optional: bool = False
    hook_timeout: int = HOOK_TIMEOUT
    notify: list[str] = msgspec.field(default_factory=list)
    notify_success: bool = False
    notify_last: NotifyDelivery | None = None


SETTINGS = tuple(f for f in PlanOptions.__struct_fields__ if f != "notify_last")
"""The options a user sets (the same names in `PlanCreate`, `PlanUpdate` and `Plan`)."""


def from_create(req: PlanCreate) -> PlanOptions:
    """The options of a new plan (`req` is validated already)."""
    return PlanOptions(**{name: getattr(req, name) for name in SETTINGS})


def apply_update(current: PlanOptions, update: PlanUpdate) -> PlanOptions:
    """`current` with the fields `update` sets, validated (raises ServiceError naming the field)."""
    changes: dict[str, object] = {}
    if update.excludes is not None:
        changes["excludes"] = validate_excludes(update.excludes)
    if update.exclude_files is not None:
        changes["exclude_files"] = validate_exclude_files(update.exclude_files)
    for flag in ("exclude_caches", "one_file_system", "pre_command_optional", "notify_success"):
        if getattr(update, flag) is not None:
            changes[flag] = bool(getattr(update, flag))
    for hook in ("pre_command", "post_command"):
        value = getattr(update, hook)
        if value is not None:
            changes[hook] = validate_command(value, hook)
    if update.hook_timeout is not None:
        changes["hook_timeout"] = validate_hook_timeout(update.hook_timeout)
    if update.notify is not None:
        changes["notify"] = validate_notify(update.notify)
    return msgspec.structs.replace(current, **changes)


def view(options: PlanOptions) -> dict[str, Any]:
    """The `Plan` fields these options fill."""
    return {name: getattr(options, name) for name in PlanOptions.__struct_fields__}


class OptionsStore:
    """The ``plan_options`` table. Writes happen inside the catalog's transactions."""

    def __init__(self, db: CatalogDB) -> None:
        self.db = db

    async def init(self) -> None:
        await self.db.add_schema(SCHEMA)

    async def get(self, plan_id: str) -> PlanOptions:
        rows = await self.db.fetch_all("SELECT data FROM plan_options WHERE plan_id=?", (plan_id,))
        return msgspec.json.decode(rows[0][0], type=PlanOptions) if rows else PlanOptions()

    async def all(self) -> dict[str, PlanOptions]:
        rows = await self.db.fetch_all("SELECT plan_id, data FROM plan_options")
        return {row[0]: msgspec.json.decode(row[1], type=PlanOptions) for row in rows}

    async def save(self, plan_id: str, options: PlanOptions) -> None:
        await self.db.write("INSERT OR REPLACE INTO plan_options (plan_id, data) VALUES (?, ?)",
                            (plan_id, msgspec.json.encode(options)))

    async def delete(self, plan_id: str) -> None:
        await self.db.write("DELETE FROM plan_options WHERE plan_id=?", (plan_id,))
