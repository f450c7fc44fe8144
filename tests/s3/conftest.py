"""Backups to S3 end to end: a real moto server, the real `timevault` command, real trees.

The moto server, its bucket and the dummy AWS credentials are the fixtures of tests/storage
(imported below, so a run of both folders starts one server for each; they are cheap).
Every CLI run is a subprocess on a "machine": a fresh HOME holding only a password file, with
no caches and no TIMEVAULT_* variables, so a restore there proves that the location and the
password are all a user needs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import stat
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.s3.proxy import CountingProxy
from tests.storage import conftest as storage_fixtures
from tests.storage.conftest import unique_prefix
from tests.support.moto_server import DUMMY_AWS_ENV
from timevault.core import crypto
from timevault.core.storage.s3 import S3Options, S3Storage

# The session's moto server, its bucket and dummy credentials: tests/storage's fixtures.
aws_env = storage_fixtures.aws_env
moto_endpoint = storage_fixtures.moto_endpoint
s3_bucket = storage_fixtures.s3_bucket

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
# Cheap scrypt for repositories created in-process; the key file records its parameters, so the
# CLI opens such a repository quickly too (it uses the real defaults only for `init`).
FAST_KDF = crypto.Argon2Params.weak_for_tests()
MiB = 1024 * 1024
BIG_FILE_MIB = 18  # > one 16 MiB pack: every full backup writes at least two data packs
CLI_TIMEOUT = 60.0


def timevault_command() -> list[str]:
    exe = REPO_ROOT / ".venv" / "bin" / "timevault"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "timevault.cli.main"]


def s3_location(endpoint: str, bucket: str, prefix: str, **params: object) -> str:
    query = "&".join(
        [
            f"endpoint={endpoint}",
            "region=us-east-1",
            "path_style=true",
            *(f"{k}={v}" for k, v in params.items()),
        ]
    )
    return f"s3://{bucket}/{prefix}?{query}"


# --- the command line -----------------------------------------------------------------------


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def ok(self) -> CliResult:
        assert self.code == 0, f"exit {self.code}\nstdout: {self.stdout}\nstderr: {self.stderr}"
        return self


@dataclass
class Machine:
    """A fresh user account: its own HOME with a password file, nothing else."""

    home: Path
    password_file: Path

    @property
    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR")}
        return {
            **keep,
            **DUMMY_AWS_ENV,
            "HOME": str(self.home),
            "XDG_CACHE_HOME": str(self.home / ".cache"),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
        }

    async def run(self, *args: str | Path, limit: float = CLI_TIMEOUT) -> CliResult:
        """`timevault ARGS --password-file F` as a subprocess; the event loop keeps running."""
        cmd = [*timevault_command(), *map(str, args), "--password-file", str(self.password_file)]
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.home,
            env=self.env,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), limit)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"timevault {' '.join(map(str, args))} ran over {limit} s") from None
        assert proc.returncode is not None
        return CliResult(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    def leftovers(self) -> list[str]:
        """Anything a command left in HOME besides the password file (caches, configs)."""
        return sorted(str(p.relative_to(self.home)) for p in self.home.rglob("*") if p != self.password_file)


@pytest.fixture
def new_machine(tmp_path: Path) -> Callable[[str], Machine]:
    def make(name: str) -> Machine:
        home = tmp_path / f"home-{name}"
        home.mkdir()
        password_file = home / "password"
        password_file.write_text(PASSWORD + "\n")
        password_file.chmod(0o600)
        return Machine(home, password_file)

    return make


# --- storage --------------------------------------------------------------------------------


@pytest.fixture
def prefix() -> str:
    return unique_prefix()


@pytest.fixture
async def direct_s3(moto_endpoint: str, s3_bucket: str, prefix: str) -> AsyncIterator[S3Storage]:
    """The test's prefix, straight to moto with no wrappers: to look at what a run left behind."""
    storage = S3Storage(S3Options(s3_bucket, prefix, endpoint=moto_endpoint, path_style=True))
    yield storage
    await storage.close()


async def stored(storage: S3Storage, prefix: str = "") -> dict[str, int]:
    """name → size of every object below `prefix`."""
    return {info.name: info.size async for info in storage.list(prefix)}


@pytest.fixture
async def proxy(moto_endpoint: str, s3_bucket: str) -> AsyncIterator[CountingProxy]:
    p = CountingProxy(moto_endpoint)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


# --- source trees ---------------------------------------------------------------------------


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def text_bytes(size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    words = ["backup", "restore", "pack", "index", "snapshot", "bucket", "chunk", "key", "tree"]
    out = bytearray()
    while len(out) < size:
        out += (" ".join(rng.choice(words) for _ in range(12)) + "\n").encode()
    return bytes(out[:size])


def build_source(root: Path, seed: int = 1, big_mib: int = BIG_FILE_MIB) -> Path:
    """A small home-folder-like tree: one file bigger than a pack, documents, many small files,
    an empty file and folder, a symlink, odd modes and a deep path. ~`big_mib` + 2 MiB."""
    files: dict[str, bytes] = {
        "videos/holiday.mp4": random_bytes(big_mib * MiB, seed),
        "docs/report.pdf": random_bytes(3 * MiB // 2, seed + 1),
        "docs/notes.txt": text_bytes(300_000, seed + 2),
        "docs/empty.txt": b"",
        "a/b/c/d/deep.txt": b"deep\n",
    }
    for i in range(24):
        files[f"src/module_{i:02d}.py"] = text_bytes(2_000 + 97 * i, seed + 10 + i)
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "empty-folder").mkdir()
    (root / "docs" / "latest").symlink_to("notes.txt")
    (root / "src" / "module_00.py").chmod(0o755)
    (root / "docs" / "report.pdf").chmod(0o640)
    return root


def manifest(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every path below root → (kind, mode bits, size, sha256 or link target, mtime in ns)."""
    found: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("symlink", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                found[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_size, digest, st.st_mtime_ns)
    return found


def restored_root(target: Path, source: Path) -> Path:
    """Restores mirror the source's absolute path below the target folder."""
    return target / str(source.resolve()).lstrip("/")


def assert_same_tree(expected_root: Path, target: Path, source: Path | None = None) -> None:
    """The tree restored into `target` from `source` (default: expected_root) is expected_root's."""
    expected = manifest(expected_root)
    got = manifest(restored_root(target, source or expected_root))
    missing, extra = expected.keys() - got.keys(), got.keys() - expected.keys()
    assert not missing and not extra, f"missing {sorted(missing)}, extra {sorted(extra)}"
    differ = [rel for rel in expected if expected[rel] != got[rel]]
    assert not differ, f"differ: {differ[:5]}"


def error_lines(stderr: str) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if line.startswith("timevault: ") and not line.startswith("timevault: warning: ")
    ]
