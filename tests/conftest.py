"""Fixtures shared by the whole suite: paths, a password file and a small-tree factory.

Keep this file small; fixtures for one area belong in that area's own conftest.py.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Tests talk only to servers on this machine. An S3 location without an endpoint would otherwise
# go to AWS, and botocore's credential chain to the instance-metadata address: send the former to
# a closed loopback port and switch the latter off, for this process and every child it starts.
os.environ.update({
    "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
})

TreeSpec = Mapping[str, "bytes | str | None"]


def random_bytes(size: int, seed: int = 0) -> bytes:
    """Deterministic incompressible bytes (same size and seed, same bytes)."""
    return random.Random(seed).randbytes(size)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def test_output_dir() -> Path:
    """`test-output/` at the repository root (git-ignored): screenshots and other artefacts."""
    path = REPO_ROOT / "test-output"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def artifact_dir(test_output_dir: Path, request: pytest.FixtureRequest) -> Path:
    """A folder under test-output/ named after the current test, for artefacts worth keeping."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-150:]
    path = test_output_dir / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text("correct horse battery staple\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def make_tree(tmp_path: Path) -> Callable[..., Path]:
    """Factory for small source trees.

    ``make_tree({"a.txt": "hi", "d/b.bin": b"...", "empty/": None}, symlinks={"l": "a.txt"})``
    writes files (str is UTF-8), empty folders (keys ending in "/"), and symlinks (name -> target,
    written as given, so they may dangle or be absolute). Returns the root, a fresh folder under
    tmp_path unless ``root`` is given. ``mtime`` sets every file's mtime, for reproducible trees.
    """
    counter = 0

    def make(
        files: TreeSpec,
        *,
        symlinks: Mapping[str, str] | None = None,
        root: Path | None = None,
        mtime: float | None = None,
    ) -> Path:
        nonlocal counter
        if root is None:
            counter += 1
            root = tmp_path / f"tree{counter}"
        root.mkdir(parents=True, exist_ok=True)
        for rel, content in files.items():
            path = root / rel
            if rel.endswith("/"):
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            data = content.encode() if isinstance(content, str) else (content or b"")
            path.write_bytes(data)
            if mtime is not None:
                os.utime(path, (mtime, mtime))
        for rel, target in (symlinks or {}).items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(target)
        return root

    return make


@pytest.fixture(scope="session", autouse=True)
def private_cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`timevault repo backup` keeps a files cache under $XDG_CACHE_HOME: never the real home's."""
    cache = tmp_path_factory.mktemp("xdg-cache")
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous
