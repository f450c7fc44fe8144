"""Export JSON Schemas for every wire message into ``proto/timevault/proto/schemas/`` (``python -m timevault.proto.schemas``).

`tests/services/test_proto.py` fails when the checked-in files differ from `render()`,
so a change to a Struct must come with regenerated schemas.
"""

from __future__ import annotations

import ast
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from timevault.proto import browse, chunks, errors, folders, jobs, plans, schedule, spaces, stats, upload

SCHEMA_DIR = Path(__file__).with_name("schemas")

MESSAGES: tuple[type[msgspec.Struct], ...] = (
    errors.ErrorReply,
    plans.PlanCreate,
    plans.PlanUpdate,
    plans.PlanUpdateRequest,
    plans.PlanRef,
    plans.PlanListRequest,
    plans.Plan,
    plans.PlanDetail,
    plans.PlanList,
    plans.PlanDeleted,
    plans.PlanAttach,
    plans.PlanEvent,
    plans.PlanEventsRequest,
    plans.PlanEventList,
    plans.PlanSecrets,
    plans.SnapshotListRequest,
    plans.SnapshotList,
    plans.SnapshotRef,
    plans.SnapshotInfo,
    jobs.Job,
    jobs.JobCreate,
    jobs.JobRef,
    jobs.JobListRequest,
    jobs.JobList,
    jobs.JobClaim,
    jobs.JobFinish,
    jobs.JobProgress,
    jobs.JobEvent,
    jobs.JobCancel,
    jobs.BackupWork,
    jobs.RestoreRequest,
    jobs.JobLog,
    jobs.JobLogged,
    browse.BrowseOpen,
    browse.BrowseSession,
    browse.BrowseRef,
    browse.BrowseLocked,
    browse.BrowseList,
    browse.BrowseListing,
    browse.BrowseDiff,
    browse.SnapshotDiff,
    browse.BrowseFind,
    browse.FindResult,
    browse.BrowseRestore,
    folders.FolderListRequest,
    folders.FolderListing,
    schedule.ScheduleListRequest,
    schedule.ScheduleList,
    schedule.ScheduleFire,
    schedule.ScheduleFireReply,
    chunks.ChunkLookup,
    chunks.ChunkLookupReply,
    chunks.ChunkAdd,
    chunks.ChunkAddReply,
    chunks.ChunkSync,
    chunks.ChunkSyncReply,
    chunks.ChunkUpdate,
    chunks.ChunkUpdateReply,
    spaces.SpaceRef,
    spaces.SpaceListRequest,
    spaces.SpaceLogin,
    spaces.SpaceStatus,
    spaces.SpaceList,
    upload.UploadOpen,
    upload.UploadOpened,
    upload.BlobFrame,
    upload.BlobFrames,
    upload.UploadFlush,
    upload.UploadClose,
    upload.UploadAck,
    stats.CatalogStatsRequest,
    stats.JobFigures,
    stats.CatalogStats,
)


def _field_docs() -> dict[str, dict[str, str]]:
    """Struct name → field → the docstring written under the field (msgspec does not export them)."""
    docs: dict[str, dict[str, str]] = {}
    for module in (browse, chunks, errors, folders, jobs, plans, schedule, stats, upload):
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if not isinstance(node, ast.ClassDef):
                continue
            fields = docs.setdefault(node.name, {})
            for stmt, after in zip(node.body, node.body[1:], strict=False):
                if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                        and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)):
                    fields[stmt.target.id] = inspect.cleandoc(str(after.value.value))
    return docs


def _describe(schema: dict, name: str, docs: dict[str, dict[str, str]]) -> None:
    # Subclasses (PlanDetail) inherit their parents' field docs.
    merged: dict[str, str] = {}
    for base in reversed(_bases(name)):
        merged.update(docs.get(base, {}))
    for field, prop in schema.get("properties", {}).items():
        if field in merged:
            prop["description"] = merged[field]


def _bases(name: str) -> list[str]:
    for module in (browse, chunks, errors, folders, jobs, plans, schedule, stats, upload):
        cls = getattr(module, name, None)
        if isinstance(cls, type):
            return [c.__name__ for c in cls.__mro__ if issubclass(c, msgspec.Struct)]
    return [name]


def clean_descriptions(node: Any) -> None:
    """Dedent every ``description`` in place: msgspec 0.19+ dedents class docstrings and older
    releases do not, so the checked-in files would depend on the installed version otherwise."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                node[key] = inspect.cleandoc(value)
            else:
                clean_descriptions(value)
    elif isinstance(node, list):
        for item in node:
            clean_descriptions(item)


def render() -> dict[str, str]:
    """File name → JSON text for every message (each file self-contained with its ``$defs``)."""
    docs = _field_docs()
    out: dict[str, str] = {}
    for message in MESSAGES:
        schema = msgspec.json.schema(message)
        for def_name, definition in schema.get("$defs", {}).items():
            _describe(definition, def_name, docs)
        clean_descriptions(schema)
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://timevault.invalid/proto/{message.__name__}.json"
        out[f"{message.__name__}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write(directory: Path = SCHEMA_DIR) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    files = render()
    for stale in directory.glob("*.json"):
        if stale.name not in files:
            stale.unlink()
    for name, text in files.items():
        (directory / name).write_text(text)
    return sorted(files)


if __name__ == "__main__":
    names = write()
    print(f"wrote {len(names)} schemas to {SCHEMA_DIR}", file=sys.stderr)
