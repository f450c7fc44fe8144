"""Helpers for the core repository tests: fast repositories, source trees, tree comparison, the CLI.

Trees are compared through a *manifest*: for every path below a root (as bytes, so names that are
not UTF-8 survive), its type, permission bits, mtime in ns and content (file bytes or symlink
target). Two trees are equal when their manifests are.
"""

from __future__ import annotations

import os
import random
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeAlias

import msgspec
import pytest

from timevault.core import crypto
from timevault.core.chunker import ChunkerParams
from timevault.core.repository import blobs
from timevault.core.repository.format import BlobType, Node, Snapshot, SnapshotStats, Tree
from timevault.core.repository.pack import Packer
from timevault.core.repository.repo import Repository
from timevault.core.restorer import restore
from timevault.core.storage import LocalStorage

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEVAULT = REPO_ROOT / ".venv" / "bin" / "timevault"
PASSWORD = "correct horse battery staple"
# Cheap argon2id for in-process repositories (the CLI always uses the real defaults).
FAST_KDF = crypto.Argon2Params.weak_for_tests()
# Small chunks, so that small test files still span many chunks.
SMALL_CHUNKS = ChunkerParams(min_size=16 * 1024, avg_size=32 * 1024, max_size=128 * 1024)

FileSpec: TypeAlias = bytes | str | None


# --- repositories -------------------------------------------------------------------------


async def new_repo(path: Path, chunker: ChunkerParams | None = None) -> Repository:
    return await Repository.init(LocalStorage(path), PASSWORD, chunker=chunker, kdf=FAST_KDF)


async def reopen(repo_or_path: Repository | Path, password: str = PASSWORD) -> Repository:
    """A fresh Repository object (no cached index) on the same folder."""
    path = repo_or_path if isinstance(repo_or_path, Path) else Path(repo_or_path.storage.location)
    return await Repository.open(LocalStorage(path), password)


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[Repository]:
    """A repository with the default chunker parameters (and a cheap KDF)."""
    r = await new_repo(tmp_path / "repo")
    yield r
    await r.close()


@pytest.fixture
async def small_repo(tmp_path: Path) -> AsyncIterator[Repository]:
    """A repository with small chunks, so that edits and dedup are visible on small files."""
    r = await new_repo(tmp_path / "small-repo", SMALL_CHUNKS)
    yield r
    await r.close()


def stored_objects(repo_path: Path, prefix: str = "") -> dict[str, bytes]:
    """Every object file below the repository folder (including any temp files), name → bytes."""
    found = {}
    for dirpath, _dirs, files in os.walk(repo_path):
        for name in files:
            full = Path(dirpath) / name
            rel = full.relative_to(repo_path).as_posix()
            if rel.startswith(prefix):
                found[rel] = full.read_bytes()
    return found


def repo_bytes(repo_path: Path) -> int:
    return sum(len(data) for data in stored_objects(repo_path).values())


# --- source trees ---------------------------------------------------------------------------


def random_bytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def build_tree(root: Path, spec: Mapping[str, FileSpec], symlinks: Mapping[str, str] | None = None) -> Path:
    """Write `spec` below `root`: "dir/" keys are empty folders, str content is UTF-8."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in spec.items():
        path = root / rel
        if rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else (content or b""))
    for rel, target in (symlinks or {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
    return root


_NAMES: list[bytes] = [
    b"a",
    b"b.txt",
    b"with space",
    b"-dash",
    b".hidden",
    "ünïcödé".encode(),
    "日本語のファイル".encode(),
    "emoji-🙂".encode(),
    b"latin1-\xe9t\xe9",  # not UTF-8
    b"\xff\xfe\xfd",  # not UTF-8
    b"new\nline",
    b"x" * 200,
]


def random_tree(root: Path, seed: int, *, max_depth: int = 3, max_file: int = 40_000) -> Path:
    """A seeded random tree: nested and empty folders, empty/random/compressible files, relative,
    absolute and dangling symlinks, non-ASCII and non-UTF-8 names, varied modes and mtimes."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    dirs: list[bytes] = []

    def fill(path: bytes, depth: int) -> None:
        names = rng.sample(_NAMES, rng.randint(0 if depth else 3, 7))
        for i, base in enumerate(names):
            name = base + b"-%d" % i if rng.random() < 0.3 else base
            full = os.path.join(path, name)
            roll = rng.random()
            if roll < 0.25 and depth < max_depth:
                os.mkdir(full)
                fill(full, depth + 1)
                dirs.append(full)
            elif roll < 0.4:
                kind = rng.choice(["relative", "absolute", "dangling", "up"])
                target = {
                    "relative": b"a",
                    "absolute": b"/etc/hostname",
                    "dangling": b"does/not/exist",
                    "up": b"../" + name,
                }[kind]
                os.symlink(target, full)
                mtime = rng.randrange(10**9, 2 * 10**9) * 10**9 + rng.randrange(10**9)
                os.utime(full, ns=(mtime, mtime), follow_symlinks=False)
            else:
                size = rng.choice([0, 1, rng.randrange(2, 5000), rng.randrange(5000, max_file)])
                data = rng.randbytes(size) if rng.random() < 0.6 else (b"compressible " * size)[:size]
                with open(full, "wb") as f:
                    f.write(data)
                os.chmod(full, rng.choice([0o644, 0o600, 0o755, 0o640, 0o444, 0o700]))
                mtime = rng.randrange(10**9, 2 * 10**9) * 10**9 + rng.randrange(10**9)
                os.utime(full, ns=(mtime, mtime))

    fill(os.fsencode(root), 0)
    # Folder metadata last and deepest first, so creating children does not change it again.
    for full in [*reversed(dirs), os.fsencode(root)]:
        os.chmod(full, rng.choice([0o755, 0o700, 0o750]))
        mtime = rng.randrange(10**9, 2 * 10**9) * 10**9
        os.utime(full, ns=(mtime, mtime))
    return root


def set_mtime(path: Path | bytes, ns: int) -> None:
    os.utime(path, ns=(ns, ns), follow_symlinks=False)


def make_fifo(path: Path) -> None:
    os.mkfifo(path)


def make_socket(path: Path) -> socket.socket:
    """Bind a Unix socket at `path` (via a relative name: tmp paths can exceed sun_path)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        sock.bind(path.name)
    finally:
        os.chdir(cwd)
    return sock


# --- comparing trees --------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    kind: str
    mode: int
    mtime_ns: int
    content: bytes  # file bytes or symlink target; b"" for folders


def tree_manifest(root: Path | bytes, *, root_meta: bool = True) -> dict[bytes, Entry]:
    """Every path below `root` (b"" is the root itself) with type, mode, mtime and content."""
    base = os.fsencode(root)
    found: dict[bytes, Entry] = {}

    def visit(path: bytes, rel: bytes) -> None:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            found[rel] = Entry("symlink", 0, st.st_mtime_ns, os.readlink(path))
        elif stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                found[rel] = Entry("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, f.read())
        elif stat.S_ISDIR(st.st_mode):
            if rel or root_meta:
                found[rel] = Entry("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns, b"")
            for name in sorted(os.listdir(path)):
                visit(os.path.join(path, name), os.path.join(rel, name) if rel else name)
        else:
            found[rel] = Entry("other", stat.S_IMODE(st.st_mode), st.st_mtime_ns, b"")

    visit(base, b"")
    return found


def assert_manifests_equal(actual: dict[bytes, Entry], expected: dict[bytes, Entry]) -> None:
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    assert not missing, f"missing after restore: {missing[:10]}"
    assert not extra, f"unexpected after restore: {extra[:10]}"
    for rel in sorted(expected):
        a, e = actual[rel], expected[rel]
        where = rel.decode(errors="backslashreplace") or "<root>"
        assert a.kind == e.kind, f"{where}: type {a.kind} != {e.kind}"
        assert a.content == e.content, (
            f"{where}: content differs ({len(a.content)} vs {len(e.content)} bytes)"
        )
        assert oct(a.mode) == oct(e.mode), f"{where}: mode {a.mode:o} != {e.mode:o}"
        assert a.mtime_ns == e.mtime_ns, f"{where}: mtime {a.mtime_ns} != {e.mtime_ns}"


def assert_trees_equal(actual: Path | bytes, expected: Path | bytes, *, root_meta: bool = True) -> None:
    """Byte-for-byte equality of two trees, including modes, mtimes and symlink targets."""
    assert_manifests_equal(
        tree_manifest(actual, root_meta=root_meta), tree_manifest(expected, root_meta=root_meta)
    )


def restored_path(target: Path, source: Path) -> Path:
    """Snapshots mirror absolute source paths: `source` restores to target/<source without '/'>."""
    return target / Path(os.path.abspath(source)).relative_to("/")


async def restore_and_compare(
    repo: Repository, ref: str, target: Path, source_manifest: dict[bytes, Entry], source: Path
) -> None:
    result = await restore(repo, ref, str(target))
    assert result.errors == []
    assert_manifests_equal(tree_manifest(restored_path(target, source)), source_manifest)


# --- crafting snapshots directly (hostile repositories) ------------------------------------------


class SnapshotWriter:
    """Writes blobs, trees and a snapshot with the repository's own encoding API, no archiver.

    Nothing is validated: this is how a hostile or buggy writer could lay out a repository.
    """

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.session = crypto.SealingSession(repo.write_keys.public_key)
        self.packer = Packer(repo.storage, repo.write_keys.meta_key)
        self.written: set[bytes] = set()

    async def blob(self, data: bytes, blob_type: BlobType = BlobType.DATA) -> bytes:
        blob_id = crypto.blob_id(self.repo.write_keys.id_key, data)
        self.written.add(blob_id)
        await self.packer.add(blobs.encode(self.session, blob_id, blob_type, data))
        return blob_id

    async def file(self, name: bytes, data: bytes, *, mode: int = 0o644, size: int | None = None) -> Node:
        content = [await self.blob(data)] if data else []
        return Node(
            name=name,
            type="file",
            mode=mode,
            mtime_ns=10**18,
            size=len(data) if size is None else size,
            content=content,
        )

    async def dir(self, name: bytes, nodes: Sequence[Node]) -> Node:
        return Node(name=name, type="dir", mode=0o755, mtime_ns=10**18, subtree=await self.tree(nodes))

    @staticmethod
    def symlink(name: bytes, target: bytes) -> Node:
        return Node(name=name, type="symlink", mode=0o777, mtime_ns=10**18, target=target)

    async def tree(self, nodes: Sequence[Node]) -> bytes:
        return await self.blob(msgspec.msgpack.encode(Tree(list(nodes))), BlobType.TREE)

    async def commit(self, root_nodes: Sequence[Node], when: str | None = None) -> str:
        """A snapshot of `root_nodes`, dated now (or `when`), listing every blob written so far."""
        root = await self.tree(root_nodes)
        await self.packer.flush()
        now = when or datetime.now(UTC).isoformat()
        snapshot = Snapshot(
            time=now,
            finished=now,
            hostname="crafted",
            paths=["/crafted"],
            tree=root,
            stats=SnapshotStats(),
            references=await self.repo.save_references(set(self.written)),
        )
        snapshot_id = await self.repo.save_snapshot(snapshot)
        await self.repo.index(reload=True)
        return snapshot_id


# --- the command line ---------------------------------------------------------------------------


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(
    *args: str | os.PathLike[str], env: Mapping[str, str] | None = None, timeout: float = 120
) -> CliResult:
    """Run `timevault` in a subprocess (no TIMEVAULT_* variables inherited unless given)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEVAULT_")}
    full_env.update(env or {})
    exe = [str(TIMEVAULT)] if TIMEVAULT.exists() else [sys.executable, "-m", "timevault.cli.main"]
    proc = subprocess.run(
        [*exe, *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        cwd=REPO_ROOT,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_clean_error(result: CliResult, *fragments: str) -> None:
    """Non-zero exit, exactly one line on stderr, no traceback, and the line mentions each fragment."""
    assert result.code != 0, result
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got: {result.stderr!r}"
    assert lines[0].startswith("timevault: "), lines[0]
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), f"{fragment!r} not in {lines[0]!r}"


@pytest.fixture
def pw_file(tmp_path: Path) -> Path:
    path = tmp_path / "pw"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path
