"""Restore streams a snapshot in batches: memory holds one batch, never a plan of every file.

The batch limits are lowered here so that small trees cross many batch boundaries: folders that
start in one batch and end in a later one, files of several blobs, empty files and folders,
symlinks, and folders whose times must be set only after everything inside them was written.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timevault.core import restorer
from timevault.core.archiver import Progress, backup
from timevault.core.checker import _pack, _unpack
from timevault.core.chunker import ChunkerParams
from timevault.core.repository.format import BlobType
from timevault.core.repository.index import BlobLocation
from timevault.core.repository.repo import Repository
from timevault.core.restorer import RestoreCanceled, restore

from .conftest import (
    assert_manifests_equal,
    build_tree,
    new_repo,
    random_bytes,
    random_tree,
    restored_path,
    tree_manifest,
)


@pytest.fixture
def tiny_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of a few entries: every folder boundary falls somewhere inside one."""
    monkeypatch.setattr(restorer, "BATCH_FILES", 3)
    monkeypatch.setattr(restorer, "BATCH_FOLDERS", 2)
    monkeypatch.setattr(restorer, "BATCH_BLOBS", 5)
    monkeypatch.setattr(restorer, "DECODE_GROUP_BYTES", 4096)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _many_folders(root: Path) -> Path:
    spec: dict[str, str | bytes | None] = {}
    for i in range(12):
        for j in range(i % 4):
            spec[f"f{i:02d}/sub{j}/file{j}.txt"] = f"text {i} {j} " * (i + j)
        spec[f"f{i:02d}/big.bin"] = random_bytes(20_000 + 3_000 * i, seed=i)  # several chunks
        spec[f"f{i:02d}/empty"] = b""
        spec[f"f{i:02d}/empty-folder/"] = None
    build_tree(root, spec, symlinks={"f00/link": "../f01/big.bin", "f05/sub0/up": ".."})
    for number, path in enumerate(sorted(root.rglob("*"), key=lambda p: -len(p.parts))):
        ns = 1_600_000_000_000_000_000 + number * 1_000_003
        os.utime(path, ns=(ns, ns), follow_symlinks=False)
    return root


async def test_a_tree_of_many_folders_streams_in_batches(tiny_batches: None, tmp_path: Path) -> None:
    small_chunks = ChunkerParams(min_size=4096, avg_size=8192, max_size=16384)
    repo = await new_repo(tmp_path / "repo", small_chunks)
    source = _many_folders(tmp_path / "src")
    snapshot_id, _ = await backup(repo, [str(source)])
    seen: list[Progress] = []
    before = _open_fds()
    result = await restore(repo, snapshot_id, str(tmp_path / "out"), progress=lambda p: seen.append(
        Progress(p.files_done, p.bytes_done, p.files_total, p.bytes_total)))
    assert result.errors == []
    assert_manifests_equal(tree_manifest(restored_path(tmp_path / "out", source)), tree_manifest(source))
    assert _open_fds() == before  # every folder's descriptor was closed
    files = sum(1 for p in source.rglob("*") if p.is_file() and not p.is_symlink())
    assert result.files == files
    # The survey counted exactly what the restore then wrote.
    assert seen[-1].files_total == files and seen[-1].files_done == files
    assert seen[-1].bytes_total == seen[-1].bytes_done == result.bytes


@pytest.mark.parametrize("seed", [3, 11])
async def test_random_trees_stream_in_batches(tiny_batches: None, tmp_path: Path, seed: int) -> None:
    repo = await new_repo(tmp_path / "repo")
    source = random_tree(tmp_path / "src", seed, max_depth=4)
    snapshot_id, _ = await backup(repo, [str(source)])
    result = await restore(repo, snapshot_id, str(tmp_path / "out"))
    assert result.errors == []
    assert_manifests_equal(tree_manifest(restored_path(tmp_path / "out", source)), tree_manifest(source))


async def test_include_in_batches_counts_only_what_it_restores(tiny_batches: None, tmp_path: Path) -> None:
    repo = await new_repo(tmp_path / "repo")
    source = _many_folders(tmp_path / "src")
    snapshot_id, _ = await backup(repo, [str(source)])
    rel = Path(os.path.abspath(source)).relative_to("/")
    seen: list[Progress] = []
    result = await restore(repo, snapshot_id, str(tmp_path / "out"), includes=[f"{rel}/f03", f"{rel}/f07/big.bin"],
                           progress=lambda p: seen.append(Progress(p.files_done, 0, p.files_total)))
    out = restored_path(tmp_path / "out", source)
    assert result.errors == [] and sorted(os.listdir(out)) == ["f03", "f07"]
    assert os.listdir(out / "f07") == ["big.bin"]
    assert_manifests_equal(tree_manifest(out / "f03"), tree_manifest(source / "f03"))
    assert seen[-1].files_total == result.files == 3 + 1 + 1 + 1  # f03: 3 small, big, empty; f07: big


async def test_interrupted_restore_leaves_nothing_that_looks_complete(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Canceled half way (after some batches were written), nothing reaches the target: not a
    file, not a folder, and no hidden temporary folder is left beside it."""
    monkeypatch.setattr(restorer, "BATCH_FILES", 50)
    spec = {f"d{i // 500:02d}/f{i:04d}": random_bytes(300, seed=i) for i in range(3000)}
    source = build_tree(tmp_path / "src", spec)
    snapshot_id, _ = await backup(repo, [str(source)])
    cancel = asyncio.Event()

    async def cancel_once_written(parent: Path, name: str) -> None:
        """Cancel once the restore's temporary folder holds a few hundred files."""
        while True:
            temps = [p for p in parent.iterdir() if p.name.startswith(f".{name}.restore-")]
            if temps and sum(len(files) for _, _, files in os.walk(temps[0])) >= 200:
                cancel.set()
                return
            await asyncio.sleep(0.001)

    for existing in (False, True):
        target = tmp_path / f"target-{existing}"
        if existing:
            build_tree(target, {"mine.txt": "kept"})
        cancel.clear()
        watcher = asyncio.create_task(cancel_once_written(tmp_path, target.name))
        with pytest.raises(RestoreCanceled):
            await restore(repo, snapshot_id, str(target), cancel=cancel)
        await watcher
        if existing:
            assert sorted(p.name for p in target.iterdir()) == ["mine.txt"]
        else:
            assert not target.exists()
        assert [p.name for p in tmp_path.iterdir() if ".restore-" in p.name] == []


def _location(offset: int, length: int) -> tuple[BlobLocation, bytes]:
    return BlobLocation("p" * 64, BlobType.DATA, offset, length, length, b""), offset.to_bytes(8, "big")


@given(st.lists(st.tuples(st.integers(0, 64 << 20), st.integers(1, 2 << 20)), min_size=1, max_size=60,
                unique_by=lambda item: item[0]))
def test_reads_cover_each_blob_once_within_bounds(blobs: list[tuple[int, int]]) -> None:
    locations = [_location(offset, length) for offset, length in blobs]
    runs = restorer._runs(list(locations))
    flat = [item for run in runs for item in run]
    assert sorted(item[1] for item in flat) == sorted(item[1] for item in locations)
    assert [item[0].offset for item in flat] == sorted(item[0].offset for item in flat)
    for run in runs:
        start = run[0][0].offset
        end = run[0][0].offset + run[0][0].length
        for location, _ in run[1:]:
            assert location.offset - end <= restorer.READ_GAP  # a near neighbour
            end = max(end, location.offset + location.length)
        assert len(run) == 1 or end - start <= restorer.READ_RUN_MAX


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=50))
def test_packed_ids_round_trip(ids: list[bytes]) -> None:
    assert _unpack(_pack(ids)) == ids
