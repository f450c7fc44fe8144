"""docs/asyncapi.json: generated from proto, current, and every reference in it resolves."""

from __future__ import annotations

import json
from typing import Any

from tests.services.conftest import ROOT
from timevault.proto import asyncapi, subjects


def test_checked_in_asyncapi_is_current() -> None:
    path = ROOT / "docs" / "asyncapi.json"
    assert path.read_text() == asyncapi.render(), "stale: run python -m timevault.proto.asyncapi"


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_every_reference_resolves_and_every_subject_is_documented() -> None:
    doc = json.loads(asyncapi.render())
    assert doc["asyncapi"].startswith("3.")
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            refs.extend(v for k, v in node.items() if k == "$ref")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    assert refs
    for ref in refs:
        _resolve(doc, ref)  # KeyError when dangling
    addresses = {c["address"] for c in doc["channels"].values()}
    constants = {v for k, v in vars(subjects).items() if k.isupper() and isinstance(v, str) and v.startswith("tv.")
                 and "*" not in v and ">" not in v}
    assert constants <= addresses, sorted(constants - addresses)
    assert "tv.events.job.{job_id}" in addresses
    public = {c["address"] for c in doc["channels"].values() if not c.get("tags")}
    assert subjects.PLAN_SECRETS not in public and subjects.RESTORE_START in public
