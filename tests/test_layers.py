"""Imports point one way: core ← proto ← services ← cli. This test fails when a layer is crossed.

It reads the source (no import side effects) and checks every `import`/`from … import`, including
imports inside functions, against the rules below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE_ROOTS = [REPO_ROOT / "shared", REPO_ROOT / "proto", REPO_ROOT / "services"]

# Third-party packages that only the outer layers may use. aiohttp is allowed in the core's S3
# backend, because aiobotocore is built on it, and in the Space backend, which speaks HTTP.
NETWORK_LIBS = {"nats", "aiohttp", "aiosqlite"}
CORE_EXCEPTIONS = {"timevault.core.storage.s3": {"aiohttp"}, "timevault.core.storage.space": {"aiohttp"}}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root in SOURCE_ROOTS:
        for path in sorted((root / "timevault").rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _violations(module: str, imported: set[str]) -> list[str]:
    layer = _layer(module)
    bad: list[str] = []
    for name in sorted(imported):
        top = name.split(".")[0]
        if top in {"shared", "proto", "services"}:
            bad.append(f"{name}: the old top-level packages are gone; import timevault.*")
        if layer in {"core", "proto"}:
            if top in NETWORK_LIBS and top not in CORE_EXCEPTIONS.get(module, set()):
                bad.append(f"{name}: {layer} must not depend on {top}")
            if name.startswith(("timevault.services", "timevault.cli")):
                bad.append(f"{name}: {layer} must not import an outer layer")
        if layer == "core" and name.startswith("timevault.proto"):
            bad.append(f"{name}: the core must not import the NATS contracts")
        if layer in {"core", "proto", "services"} and name.startswith("timevault.space"):
            bad.append(f"{name}: only the command line may import the Space server")
        if layer == "space":
            # The Space server stands beside the services: the core and aiohttp, nothing of TimeVault's
            # own system (no NATS contracts, no service, no command line).
            if top in {"nats", "aiosqlite"}:
                bad.append(f"{name}: the Space server must not depend on {top}")
            if name.startswith(("timevault.services", "timevault.cli", "timevault.proto")):
                bad.append(f"{name}: the Space server may import only timevault.core")
        if layer == "services":
            if name.startswith("timevault.cli"):
                bad.append(f"{name}: services must not import the command line")
            own = module.split(".")[2] if len(module.split(".")) > 2 else ""
            if name.startswith("timevault.services."):
                other = name.split(".")[2]
                if other not in {own, "common"}:
                    bad.append(f"{name}: a service must not import another service ({own} -> {other})")
                if own == "common" and other != "common":
                    bad.append(f"{name}: common helpers must not import a service")
    return bad


MODULES = _modules()


def test_every_layer_has_modules() -> None:
    layers = {_layer(m) for m in MODULES}
    assert {"core", "proto", "services", "cli", "space"} <= layers, layers


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_inward(module: str) -> None:
    assert _violations(module, _imports(module, MODULES[module])) == []


def test_the_check_catches_a_crossing() -> None:
    """The rules themselves: each of these must be reported."""
    assert _violations("timevault.core.chunker", {"timevault.services.common.rpc"})
    assert _violations("timevault.core.archiver.walk", {"nats.aio.client"})
    assert _violations("timevault.proto.plans", {"timevault.cli.main"})
    assert _violations("timevault.services.snapshotter.service", {"timevault.services.catalog.service"})
    assert _violations("timevault.services.common.rpc", {"timevault.services.gateway.app"})
    assert _violations("timevault.services.gateway.app", {"timevault.cli.up"})
    assert not _violations("timevault.cli.system", {"timevault.services.common.paths"})
    assert not _violations("timevault.core.storage.s3", {"aiohttp"})
    assert not _violations("timevault.core.storage.space", {"aiohttp"})
    assert _violations("timevault.core.storage.local", {"aiohttp"})
    assert _violations("timevault.space.api", {"timevault.services.common.rpc"})
    assert _violations("timevault.space.app", {"timevault.cli.main"})
    assert not _violations("timevault.space.app", {"timevault.core.storage", "aiohttp.web"})
    assert _violations("timevault.services.catalog.spaces", {"timevault.space.device"})
    assert not _violations("timevault.cli.space", {"timevault.space.server"})
