"""The OpenAPI 3.1 document, generated from the route table and the services' own msgspec types.

Component schemas come from `msgspec.json.schema_components` over the `proto` Structs the
services use, so the HTTP contract and the NATS contract cannot drift apart. Request bodies
are closed (``additionalProperties: false``, as the gateway refuses unknown fields) and carry
the validation limits from `timevault.proto.plans` so generated clients and fuzzers know them.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from timevault.proto.errors import ErrorReply
from timevault.proto.plans import NAME_MAX, PASSWORD_MIN
from timevault.services.gateway.routes import Endpoint

REF = "#/components/schemas/{name}"
ERROR_TEXT = {400: "Invalid input (the body names the field)",
              401: "Missing or wrong bearer token; a wrong backup password (field `password`); or no open "
                   "browsing session (field `session`)",
              403: "Cross-origin request refused", 404: "No such plan, snapshot or job",
              409: "Duplicate name, or the plan is busy",
              500: "Internal error", 503: "A needed service or the location is unreachable"}
REQUEST_TYPES = ("PlanCreate", "PlanAttach", "PlanUpdate", "Schedule", "ScheduleUpdate", "Location", "RestoreBody",
                 "UnlockBody", "RestoreItemsBody", "S3Credentials", "SpaceRef")


def build(table: list[Endpoint], version: str = "1") -> dict[str, Any]:
    types = [t for e in table for t in (e.reply, e.body) if t is not None] + [ErrorReply]
    refs, components = msgspec.json.schema_components(types, ref_template=REF)
    schema_of = dict(zip(map(id, types), refs, strict=True))
    _constrain(components)
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in table:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint, schema_of)
    return {
        "openapi": "3.1.0",
        "info": {"title": "TimeVault API", "version": version,
                 "description": "Backup plans, snapshots, jobs and restores. Every operation except "
                                "health and this document needs `Authorization: Bearer <token>`; the "
                                "token is in `<data-dir>/gateway.json`. Errors are "
                                '`{"error": {"code", "message", "field"}}`.'},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def render(table: list[Endpoint]) -> bytes:
    return json.dumps(build(table), indent=1, sort_keys=True).encode()


def _operation(endpoint: Endpoint, schema_of: dict[int, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": endpoint.summary, "operationId": _operation_id(endpoint)}
    if not endpoint.auth:
        op["security"] = []
    params = [{"name": name, "in": "path", "required": True,
               "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[^/]+$"}}
              for name in re.findall(r"{(\w+)}", endpoint.path)]
    params += [{"name": name, "in": "query", "required": False, "description": text,
                "schema": _query_schema(name)} for name, text in endpoint.query.items()]
    params += [{"name": name, "in": "header", "required": False, "description": text,
                "schema": {"type": "string", "maxLength": 200}} for name, text in endpoint.headers.items()]
    if params:
        op["parameters"] = params
    if endpoint.body is not None:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": schema_of[id(endpoint.body)]}}}
    responses: dict[str, Any] = {}
    if endpoint.sse:
        responses["200"] = {"description": "An endless `text/event-stream`: `event: job|progress|plan`, "
                                           "`data: <JSON message>`",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}}}
    elif endpoint.reply is not None:
        responses[str(endpoint.status)] = {"description": endpoint.summary, "content": {
            "application/json": {"schema": schema_of[id(endpoint.reply)]}}}
    elif endpoint.media != "application/json":
        responses["200"] = {"description": endpoint.summary,
                            "content": {endpoint.media: {"schema": {"type": "string"}}}}
    else:
        responses["200"] = {"description": endpoint.summary, "content": {"application/json": {}}}
    error_ref = {"application/json": {"schema": {"$ref": REF.format(name="ErrorReply")}}}
    codes = set(endpoint.errors) | ({401, 403} if endpoint.auth else set())
    codes |= {400} if endpoint.body is not None or endpoint.query else set()
    codes |= {404, 503} if "{" in endpoint.path else ({503} if endpoint.auth else set())
    for code in sorted(codes):
        responses[str(code)] = {"description": ERROR_TEXT[code], "content": error_ref}
    op["responses"] = responses
    return op


_QUERY_SCHEMAS: dict[str, dict[str, Any]] = {
    "path": {"type": "string", "minLength": 1, "maxLength": 4096},
    "pattern": {"type": "string", "minLength": 1, "maxLength": 1000},
}


def _query_schema(name: str) -> dict[str, Any]:
    if name in _QUERY_SCHEMAS:
        return _QUERY_SCHEMAS[name]
    if name == "limit":
        return {"type": "integer", "minimum": 1, "maximum": 1000}
    if name == "active":
        return {"type": "string", "enum": ["true", "false"]}
    if name == "space":
        # No maxLength: a query over the server's request-line limit (8 KiB) is refused by aiohttp
        # itself, as text/plain; the gateway refuses URLs over 2048 characters with its own 400.
        from timevault.services.gateway.spaces import SPACE_URL

        return {"type": "string", "pattern": SPACE_URL.pattern}
    return {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}


def _operation_id(endpoint: Endpoint) -> str:
    first, *rest = endpoint.handler.__name__.split("_")
    return first + "".join(part.title() for part in rest)


def _constrain(components: dict[str, Any]) -> None:
    for name in REQUEST_TYPES:
        if name in components:
            components[name]["additionalProperties"] = False
    props = lambda name: components.get(name, {}).get("properties", {})  # noqa: E731
    if "PlanCreate" in components:
        props("PlanCreate")["name"].update(minLength=1, maxLength=NAME_MAX)
        props("PlanCreate")["password"].update(minLength=PASSWORD_MIN)
        props("PlanCreate")["sources"].update(minItems=1)
    if "PlanAttach" in components:
        props("PlanAttach")["name"].update(minLength=1, maxLength=NAME_MAX)
        props("PlanAttach")["password"].update(minLength=PASSWORD_MIN)
    for name in ("Schedule",):
        if name in components:
            props(name)["time"].update(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
