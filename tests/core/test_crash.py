"""A backup killed with SIGKILL mid-write leaves the repository consistent and its uploads reusable."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from timevault.core.archiver import backup
from timevault.core.checker import check
from timevault.core.repository.index import Index
from timevault.core.restorer import restore
from timevault.core.storage import LocalStorage, check_name

from .conftest import (
    REPO_ROOT,
    TIMEVAULT,
    assert_manifests_equal,
    new_repo,
    random_bytes,
    reopen,
    restored_path,
    tree_manifest,
)

MB = 1024 * 1024


def _first_index_file(repo_path: Path) -> bool:
    index = repo_path / "index"
    return index.is_dir() and any(".tmp-" not in p.name for p in index.iterdir())


def _backup_and_kill(repo_path: Path, source: Path, pw_file: Path) -> tuple[int, bytes]:
    """Run `timevault repo backup`; SIGKILL it once its first pack and index file are durable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEVAULT_")}
    proc = subprocess.Popen(
        [str(TIMEVAULT), "repo", "backup", str(repo_path), str(source), "--password-file", str(pw_file)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        # Kill once the first pack and its index file are durable.
        while not _first_index_file(repo_path) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        _out, err = proc.communicate(timeout=30)
    return proc.returncode, err


async def test_kill_9_mid_backup(tmp_path: Path, pw_file: Path) -> None:
    repo_path = tmp_path / "repo"
    await (await new_repo(repo_path)).close()  # a cheap KDF; the CLI below opens it with the password
    source = tmp_path / "src"
    source.mkdir()
    # 20 MB files: each is read in more than one 16 MiB segment.
    for i in range(3):
        (source / f"part{i}.bin").write_bytes(random_bytes(20 * MB, 100 + i))
    data_size = 60 * MB

    returncode, err = _backup_and_kill(repo_path, source, pw_file)
    assert returncode == -signal.SIGKILL, f"backup finished before it could be killed: {err!r}"

    storage = LocalStorage(repo_path)
    names = [info.name async for info in storage.list()]
    assert all(check_name(name) == name and ".tmp-" not in name for name in names), names
    assert not [n for n in names if n.startswith("snapshots/")], "no snapshot may be visible"
    packs_on_disk = [n for n in names if n.startswith("data/")]
    assert packs_on_disk

    repo = await reopen(repo_path)
    assert await repo.list_snapshots() == []
    result = await check(repo, read_data=True)
    assert result.errors == [], result.errors
    index = await Index.load(storage, repo.write_keys.meta_key)
    indexed_payload = sum(blob.length for pack in index.packs.values() for blob in pack.blobs)
    assert indexed_payload >= 8 * MB, "the killed backup should have indexed at least one pack"

    snapshot_id, snapshot = await backup(repo, [str(source)])
    assert snapshot.stats.size == data_size
    # Per-blob tags, trees, and the Padmé padding of stored lengths (at most ~3 % for 1 MiB chunks).
    overhead = 200_000 + (data_size - indexed_payload) * 3 // 100
    assert snapshot.stats.added_size <= data_size - indexed_payload + overhead, (
        f"added {snapshot.stats.added_size} although {indexed_payload} bytes were already stored"
    )

    fresh = await reopen(repo_path)
    assert (await check(fresh)).errors == []
    assert [s for s, _ in await fresh.list_snapshots()] == [snapshot_id]
    result_restore = await restore(fresh, snapshot_id, str(tmp_path / "out"))
    assert result_restore.errors == []
    assert_manifests_equal(tree_manifest(restored_path(tmp_path / "out", source)), tree_manifest(source))
