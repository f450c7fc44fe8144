"""Storage that fails under a backup: a full disk, a read-only or vanished location, leftovers.

Every failure is one line naming the cause, leaves no temporary file, never yields a snapshot,
and the next backup (once the cause is gone) succeeds, checks clean and restores byte for byte.
The disks are real tmpfs mounts; the kernel itself says ENOSPC and EROFS.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest

from tests.core.conftest import (
    FAST_KDF,
    PASSWORD,
    TIMEVAULT,
    CliResult,
    assert_trees_equal,
    random_bytes,
    restored_path,
    run_cli,
)
from tests.faults.conftest import SmallDisk, temp_files
from timevault.core.archiver import backup
from timevault.core.checker import check
from timevault.core.prune import prune
from timevault.core.repository.format import Lock
from timevault.core.repository.repo import Repository, RepositoryError
from timevault.core.restorer import restore
from timevault.core.storage import LocalStorage, LocationNotFound, ObjectInfo, Storage, StorageError

MiB = 1024 * 1024


def _source(root: Path, files: int, size: int, seed: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (root / f"f{i}.bin").write_bytes(random_bytes(size, seed + i))
    (root / "small.txt").write_text("a small file\n")
    return root


def _files(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _env(tmp_path: Path, password: Path) -> dict[str, str]:
    return {"TIMEVAULT_PASSWORD_FILE": str(password), "XDG_CACHE_HOME": str(tmp_path / "cache")}


def _one_error_line(result: CliResult, cause: str) -> str:
    assert result.code == 1, result
    assert "Traceback" not in result.stderr and "never retrieved" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got {result.stderr!r}"
    assert lines[0].startswith(f"timevault: error: {cause}"), lines[0]
    return lines[0]


def _assert_whole(repo: Path, env: dict[str, str], source: Path, out: Path) -> None:
    """The repository checks clean (data read too) and its latest snapshot restores byte for byte."""
    checked = run_cli("repo", "check", repo, "--read-data", env=env)
    assert checked.code == 0 and "no errors found" in checked.stdout, checked
    restored = run_cli("repo", "restore", repo, "latest", "--target", out, env=env)
    assert restored.code == 0, restored
    assert_trees_equal(restored_path(out, source), source)


@pytest.fixture
def password(tmp_path: Path) -> Path:
    path = tmp_path / "pw"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


def test_disk_full_is_one_line_and_leaves_nothing_behind(
    tmp_path: Path, small_disk: Callable[[int], SmallDisk], password: Path
) -> None:
    disk = small_disk(24)
    repo = disk.path / "repo"
    env = _env(tmp_path, password)
    assert run_cli("repo", "init", repo, env=env).code == 0
    source = _source(tmp_path / "src", files=5, size=8 * MiB)  # 40 MiB of incompressible data

    failed = run_cli("repo", "backup", repo, source, env=env)
    line = _one_error_line(failed, "location is full")
    assert "No space left on device" in line and str(repo) in line
    assert temp_files(disk.path) == [], "a failed write must remove its temporary file"
    assert _files(repo / "snapshots") == [] and _files(repo / "locks") == []
    listed = run_cli("repo", "snapshots", repo, env=env)
    assert listed.code == 0 and "0 snapshots" in listed.stdout, listed

    disk.remount(size_mib=96)  # room again: the same repository takes the next backup
    again = run_cli("repo", "backup", repo, source, env=env)
    assert again.code == 0, again
    _assert_whole(repo, env, source, tmp_path / "out")


def test_read_only_location_names_the_write_not_the_lock(
    tmp_path: Path, small_disk: Callable[[int], SmallDisk], password: Path
) -> None:
    disk = small_disk(32)
    repo = disk.path / "repo"
    env = _env(tmp_path, password)
    assert run_cli("repo", "init", repo, env=env).code == 0
    source = _source(tmp_path / "src", files=2, size=MiB)
    disk.remount(read_only=True)
    failed = run_cli("repo", "backup", repo, source, env=env)
    line = _one_error_line(failed, "location is read-only")
    assert "Read-only file system" in line
    disk.remount(read_only=False)
    assert temp_files(disk.path) == []
    assert run_cli("repo", "backup", repo, source, env=env).code == 0
    _assert_whole(repo, env, source, tmp_path / "out")


class _Hook:
    """A storage that runs `action` once, just before the first call that `when` picks."""

    def __init__(self, inner: Storage, when: Callable[[str, str], bool], action: Callable[[], None]) -> None:
        self.inner = inner
        self.when = when
        self.action = action
        self.fired = False

    def _maybe(self, op: str, name: str) -> None:
        if not self.fired and self.when(op, name):
            self.fired = True
            self.action()

    @property
    def location(self) -> str:
        return self.inner.location

    async def put(self, name: str, data: object) -> None:
        self._maybe("put", name)
        await self.inner.put(name, data)  # type: ignore[arg-type]

    async def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        self._maybe("get", name)
        return await self.inner.get(name, offset, length)

    async def stat(self, name: str) -> ObjectInfo:
        return await self.inner.stat(name)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        async for info in self.inner.list(prefix):
            yield info

    async def delete(self, name: str) -> None:
        await self.inner.delete(name)

    async def close(self) -> None:
        await self.inner.close()


async def _new_repo(path: Path) -> Repository:
    return await Repository.init(LocalStorage(path), PASSWORD, kdf=FAST_KDF)


async def test_location_removed_during_a_backup_fails_it_and_stays_gone(tmp_path: Path) -> None:
    location = tmp_path / "repo"
    await (await _new_repo(location)).close()
    source = _source(tmp_path / "src", files=3, size=3 * MiB)
    # The location goes away once the first pack is on its way (an unplugged disk, an rm -r).
    hook = _Hook(LocalStorage(location), lambda op, name: op == "put" and name.startswith("index/"),
                 lambda: shutil.rmtree(location))
    repo = await Repository.open(hook, PASSWORD)
    with pytest.raises(StorageError, match=r"^location disappeared") as info:
        await backup(repo, [str(source)], cache_dir=str(tmp_path / "cache"))
    assert isinstance(info.value, LocationNotFound)
    assert hook.fired
    assert not location.exists(), "a backup must not recreate a removed location piece by piece"


async def test_a_folder_removed_under_a_write_is_the_location_disappearing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rm -r` of a location takes the root last: a write that loses its folder meanwhile (the
    root still there) must fail as the location disappearing, not as a write to try again."""
    storage = LocalStorage(tmp_path / "repo")
    await storage.put("keys/a", b"k")  # the root, as a repository's first object makes it
    # The race, made certain: the object's folders vanish right after they would be made.
    monkeypatch.setattr(storage, "_make_folders", lambda name, folder: None)
    with pytest.raises(LocationNotFound, match=r"^location disappeared: .* is being removed \(write data/ab/"):
        await storage.put("data/ab/" + "ab" * 32, b"pack")
    assert (tmp_path / "repo").is_dir() and not (tmp_path / "repo" / "data").exists()


async def test_a_write_whose_temp_file_is_removed_under_it_is_the_location_disappearing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rm -r` removes a folder's files before the folder: a write can lose its temp file while
    its folder is still there (seen in CI as a bare 'cannot write ... No such file')."""
    storage = LocalStorage(tmp_path / "repo")
    await storage.put("keys/a", b"k")
    real_link = os.link

    def link_after_removal(src: str | Path, dst: str | Path) -> None:
        os.unlink(src)  # as rm -r would, between the write and the link
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link_after_removal)
    with pytest.raises(LocationNotFound, match=r"^location disappeared: .* is being removed \(write data/ab/"):
        await storage.put_new("data/ab/" + "ab" * 32, b"pack")
    assert (tmp_path / "repo" / "data" / "ab").is_dir(), "the folder was there all along"


@pytest.mark.parametrize("gone", ["config", "keys", "both"])
async def test_config_or_keys_gone_at_commit_fail_the_backup(tmp_path: Path, gone: str) -> None:
    location = tmp_path / "repo"
    await (await _new_repo(location)).close()
    source = _source(tmp_path / "src", files=2, size=MiB)

    def remove() -> None:
        if gone in ("config", "both"):
            (location / "config").unlink()
        if gone in ("keys", "both"):
            shutil.rmtree(location / "keys")

    opened = False

    def at_commit(op: str, name: str) -> bool:
        # The first read of config after opening is the backup's last check before it commits.
        nonlocal opened
        if op == "get" and name == "config":
            if opened:
                return True
            opened = True
        return False

    hook = _Hook(LocalStorage(location), at_commit, remove)
    repo = await Repository.open(hook, PASSWORD)
    with pytest.raises(RepositoryError, match=r"location disappeared: the repository's (config|keys) (is|are) gone"):
        await backup(repo, [str(source)], cache_dir=str(tmp_path / "cache"))
    assert hook.fired
    assert _files(location / "snapshots") == []


def test_check_reports_and_prune_removes_leftovers_of_a_killed_backup(
    tmp_path: Path, password: Path
) -> None:
    """kill -9 of `timevault repo backup` leaves its lock (and maybe a temp file); check says so,
    prune removes them, and nothing the repository needs is touched."""
    location = tmp_path / "repo"
    env = _env(tmp_path, password)
    assert run_cli("repo", "init", location, env=env).code == 0
    source = _source(tmp_path / "src", files=6, size=4 * MiB)
    full_env = {**{k: v for k, v in os.environ.items() if not k.startswith("TIMEVAULT_")}, **env}
    proc = subprocess.Popen([str(TIMEVAULT), "repo", "backup", str(location), str(source)], env=full_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not [lock for lock in _files(location / "locks") if ".tmp-" not in lock.name]:
        assert proc.poll() is None and time.monotonic() < deadline, "the backup never took its lock"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(list((location / "locks").iterdir())) == 1
    # A write interrupted long ago (its temp file has not changed for an hour) and a fresh one.
    old = location / "data" / "ab" / ("ab" * 32 + ".tmp-0123456789ab")
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_bytes(b"x" * 1000)
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    fresh = location / "index" / ("cd" * 32 + ".tmp-ba9876543210")
    fresh.parent.mkdir(parents=True, exist_ok=True)
    fresh.write_bytes(b"y" * 10)

    checked = run_cli("repo", "check", location, env=env)
    assert checked.code == 0, checked
    assert re.search(r"note: \d+ temporary file\(s\)", checked.stdout), checked.stdout
    assert "note: 1 stale lock(s)" in checked.stdout, checked.stdout

    pruned = run_cli("repo", "prune", location, env=env)
    assert pruned.code == 0, pruned
    assert "stale lock(s)" in pruned.stdout, pruned.stdout
    assert not old.exists() and fresh.exists(), "only temp files nobody writes any more are removed"
    assert list((location / "locks").iterdir()) == []
    after = run_cli("repo", "check", location, env=env)
    assert "stale lock" not in after.stdout, after.stdout

    assert run_cli("repo", "backup", location, source, env=env).code == 0
    _assert_whole(location, env, source, tmp_path / "out")


async def test_stale_lock_and_leftovers_in_process(tmp_path: Path) -> None:
    """The same through the library: `check` notes, `prune` counts what it removed."""
    repo = await _new_repo(tmp_path / "repo")
    source = _source(tmp_path / "src", files=1, size=100_000)
    await backup(repo, [str(source)], cache_dir=str(tmp_path / "cache"))
    gone_pid = _dead_pid()
    now = time.time()
    lock = Lock(False, os.uname().nodename, gone_pid, now, now + 3600)
    await repo.storage.put("locks/" + "ee" * 16, repo.encrypt_meta(msgspec.msgpack.encode(lock), b"lock"))
    expired = Lock(False, "another-host", 1, now - 7200, now - 3600)
    await repo.storage.put("locks/" + "ff" * 16, repo.encrypt_meta(msgspec.msgpack.encode(expired), b"lock"))
    leftover = Path(repo.storage.location) / "data" / ("0" * 64 + ".tmp-aaaaaaaaaaaa")
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"z" * 100)
    os.utime(leftover, (now - 3600, now - 3600))

    result = await check(repo)
    assert result.errors == []
    assert any("1 temporary file(s) (100 bytes)" in note for note in result.notes), result.notes
    assert any("2 stale lock(s)" in note for note in result.notes), result.notes
    pruned = await prune(repo)
    assert (pruned.temp_files_removed, pruned.locks_removed) == (1, 2)
    assert not leftover.exists()
    result = await check(repo, read_data=True)
    assert result.errors == [] and not any("stale" in n or "temporary" in n for n in result.notes)
    out = tmp_path / "out"
    assert (await restore(repo, "latest", str(out))).errors == []
    assert_trees_equal(restored_path(out, source), source)
    await repo.close()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_restore_from_a_read_only_or_full_location_reads_without_a_lock(
    tmp_path: Path, small_disk: Callable[[int], SmallDisk], password: Path
) -> None:
    """A restore takes a shared lock so that no prune sweeps its packs away; a location that
    takes no new object cannot be pruned either, so the restore goes on without the lock (and
    without endorsing the history) instead of failing for want of one."""
    disk = small_disk(24)
    repo = disk.path / "repo"
    env = _env(tmp_path, password)
    assert run_cli("repo", "init", repo, env=env).code == 0
    source = _source(tmp_path / "src", files=2, size=MiB)
    assert run_cli("repo", "backup", repo, source, env=env).code == 0
    before = sorted(p.relative_to(repo) for p in repo.rglob("*"))

    env["TIMEVAULT_LOG_LEVEL"] = "INFO"  # the fallback says so in one line

    disk.remount(read_only=True)
    restored = run_cli("repo", "restore", repo, "latest", "--target", tmp_path / "out-ro", env=env)
    assert restored.code == 0, restored
    assert "without a lock" in restored.stderr and "Traceback" not in restored.stderr, restored.stderr
    assert_trees_equal(restored_path(tmp_path / "out-ro", source), source)

    disk.remount(read_only=False)
    filler = disk.path / "filler"
    with filler.open("wb", buffering=0) as f:  # to the last byte: not even a lock file fits
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    restored = run_cli("repo", "restore", repo, "latest", "--target", tmp_path / "out-full", env=env)
    assert restored.code == 0, restored
    assert "without a lock" in restored.stderr and "Traceback" not in restored.stderr, restored.stderr
    assert_trees_equal(restored_path(tmp_path / "out-full", source), source)
    filler.unlink()
    after = sorted(p.relative_to(repo) for p in repo.rglob("*"))
    assert after == before, "a restore without a lock leaves the repository as it was"
    assert temp_files(disk.path) == []
