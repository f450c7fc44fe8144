"""The web UI's JavaScript type-checks: `tsc --noEmit` over the ES modules with strict JSDoc types.

The UI has no build step; TypeScript (pinned, installed into ``.venv/node`` by scripts/setup.sh)
only checks it. The test fails, never skips, when the compiler is missing. Further checks: every
module opts in with ``// @ts-check``, the checker really reports errors with this configuration,
and the JSDoc types of the API's JSON name the same fields as the Structs the gateway serves.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import msgspec
import pytest

from timevault.proto import browse, errors, folders, jobs, plans, spaces
from timevault.services.gateway import bodies, browse_routes
from timevault.services.gateway import spaces as gateway_spaces

REPO_ROOT = Path(__file__).resolve().parents[2]
GATEWAY = REPO_ROOT / "services" / "timevault" / "services" / "gateway"
STATIC = GATEWAY / "static"
JSCONFIG = GATEWAY / "jsconfig.json"
TSC = Path(os.environ.get("TIMEVAULT_TSC", REPO_ROOT / ".venv" / "node" / "node_modules" / ".bin" / "tsc"))

# JSDoc typedef in static/types.js → the Struct whose JSON it describes.
API_TYPES: dict[str, type[msgspec.Struct]] = {
    "Schedule": plans.Schedule,
    "Retention": plans.Retention,
    "PruneSummary": jobs.PruneSummary,
    "Location": plans.Location,
    "Plan": plans.Plan,
    "PlanDetail": plans.PlanDetail,
    "SnapshotInfo": plans.SnapshotInfo,
    "PlanCreate": plans.PlanCreate,
    "PlanUpdate": plans.PlanUpdate,
    "PlanDeleted": plans.PlanDeleted,
    "PlanEvent": plans.PlanEvent,
    "Job": jobs.Job,
    "JobProgress": jobs.JobProgress,
    "JobEvent": jobs.JobEvent,
    "RestoreBody": bodies.RestoreBody,
    "SpaceStatus": spaces.SpaceStatus,
    "SpaceLoginReply": gateway_spaces.SpaceLoginReply,
    "ErrorInfo": errors.ErrorInfo,
    "NotifyDelivery": plans.NotifyDelivery,
    "S3Credentials": plans.S3Credentials,
    "UnlockBody": browse_routes.UnlockBody,
    "RestoreItemsBody": browse_routes.RestoreItemsBody,
    "BrowseSession": browse.BrowseSession,
    "BrowseEntry": browse.BrowseEntry,
    "BrowseListing": browse.BrowseListing,
    "DiffChange": browse.DiffChange,
    "SnapshotDiff": browse.SnapshotDiff,
    "FindVersion": browse.FindVersion,
    "FindMatch": browse.FindMatch,
    "FindResult": browse.FindResult,
    "FolderEntry": folders.FolderEntry,
    "FolderListing": folders.FolderListing,
}


def tsc(project: Path) -> subprocess.CompletedProcess[str]:
    if not TSC.exists():
        pytest.fail(f"TypeScript is missing at {TSC}: run scripts/setup.sh (it installs the pinned version)")
    return subprocess.run([str(TSC), "--noEmit", "--pretty", "false", "-p", str(project)],
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)


def modules() -> list[Path]:
    return sorted(STATIC.rglob("*.js"))


def test_ui_modules_type_check() -> None:
    result = tsc(JSCONFIG)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_the_check_is_strict_and_covers_every_module() -> None:
    options = json.loads(JSCONFIG.read_text())["compilerOptions"]
    assert options["checkJs"] is True and options["strict"] is True and options["noEmit"] is True
    found = modules()
    assert {p.name for p in found} >= {"app.js", "api.js", "events.js", "router.js", "format.js"}
    assert (STATIC / "views").is_dir() and len(found) > 10
    for path in found:
        assert path.read_text().startswith("// @ts-check\n"), f"{path.relative_to(STATIC)} lacks // @ts-check"


def test_the_checker_reports_type_errors(tmp_path: Path) -> None:
    """The same configuration over a copy with two mistakes: both are reported, by file and line."""
    copy = tmp_path / "static"
    shutil.copytree(STATIC, copy)
    (copy / "mistakes.js").write_text(
        "// @ts-check\n"
        'import { formatSize } from "./format.js";\n'
        'export const size = formatSize("12 KB");\n'  # a string where a number belongs
        "/** @param {string | null} name */\n"
        "export const width = (name) => name.length;\n"  # strict null checks
    )
    config = tmp_path / "jsconfig.json"
    config.write_text(json.dumps({"extends": str(JSCONFIG), "include": ["static/**/*.js"]}))
    result = tsc(config)
    assert result.returncode != 0
    assert re.search(r"mistakes\.js\(3,\d+\): error TS2345", result.stdout), result.stdout
    assert re.search(r"mistakes\.js\(5,\d+\): error TS18047", result.stdout), result.stdout


def test_module_imports_have_no_cycle() -> None:
    """Imports point one way (views → api, events, helpers → session, dom); JSDoc type imports aside."""
    graph: dict[str, set[str]] = {}
    for path in modules():
        targets = re.findall(r'^import\s[^;]*?from\s+"(\.[^"]+)";', path.read_text(), re.M | re.S)
        graph[path.relative_to(STATIC).as_posix()] = {
            (path.parent / t).resolve().relative_to(STATIC).as_posix() for t in targets}
    assert graph["app.js"] and all(t in graph for ts in graph.values() for t in ts), graph
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> None:
        assert node not in trail, f"import cycle: {' → '.join([*trail, node])}"
        if node not in done:
            for target in sorted(graph[node]):
                visit(target, [*trail, node])
            done.add(node)

    for node in sorted(graph):
        visit(node, [])
    reachable: set[str] = set()
    stack = ["app.js"]
    while stack:
        node = stack.pop()
        if node not in reachable:
            reachable.add(node)
            stack.extend(graph[node])
    assert reachable == set(graph) - {"types.js"}, "modules the page never loads"


def typedefs() -> dict[str, set[str] | list[str]]:
    """typedef name → its @property names, or the names it intersects (``A & B``)."""
    text = (STATIC / "types.js").read_text()
    result: dict[str, set[str] | list[str]] = {}
    for block in re.findall(r"/\*\*(.*?)\*/", text, re.S):
        match = re.search(r"@typedef\s+\{([^}]*)\}\s+(\w+)", block)
        if not match:
            continue
        expr, name = match.group(1).strip(), match.group(2)
        if expr == "object":
            result[name] = set(re.findall(r"@property\s+\{[^}]*\}\s+\[?(\w+)", block))
        elif "&" in expr:
            result[name] = [part.strip() for part in expr.split("&")]
    return result


def fields(name: str, defs: dict[str, set[str] | list[str]]) -> set[str]:
    value = defs[name]
    return value if isinstance(value, set) else set().union(*(fields(part, defs) for part in value))


@pytest.mark.parametrize("name", sorted(API_TYPES))
def test_ui_types_name_the_fields_the_api_sends(name: str) -> None:
    defs = typedefs()
    assert name in defs, f"static/types.js has no typedef {name}"
    expected = {f.encode_name for f in msgspec.structs.fields(API_TYPES[name])}
    assert fields(name, defs) == expected
