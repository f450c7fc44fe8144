"""The collector's thresholds during long jobs (`core.gcsettings`): raised while any job runs,
given back when the last one ends, whatever the jobs' order or outcome."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from timevault.core.archiver import backup
from timevault.core.gcsettings import JOB_THRESHOLDS, fewer_collections
from timevault.core.repository.repo import Repository
from timevault.core.restorer import restore

from .conftest import build_tree, random_bytes


def test_overlapping_jobs_share_the_raised_setting_and_give_it_back() -> None:
    before = gc.get_threshold()
    first, second = fewer_collections(), fewer_collections()
    first.__enter__()
    assert gc.get_threshold() == JOB_THRESHOLDS
    second.__enter__()
    first.__exit__(None, None, None)  # the first ends while the second runs
    assert gc.get_threshold() == JOB_THRESHOLDS
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before


def test_a_failed_job_gives_the_setting_back() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError("the job failed")
    assert gc.get_threshold() == before


async def test_a_restore_runs_with_fewer_collections(repo: Repository, tmp_path: Path) -> None:
    src = build_tree(tmp_path / "src", {f"d/f{i}": random_bytes(300, i) for i in range(20)})
    snapshot_id, _ = await backup(repo, [str(src)])
    seen: list[tuple[int, int, int]] = []
    before = gc.get_threshold()
    await restore(repo, snapshot_id, str(tmp_path / "out"), progress=lambda _: seen.append(gc.get_threshold()))
    assert seen and set(seen) == {JOB_THRESHOLDS}
    assert gc.get_threshold() == before


async def test_a_backup_runs_with_fewer_collections(repo: Repository, tmp_path: Path) -> None:
    src = build_tree(tmp_path / "src", {f"d/f{i}": random_bytes(300, i) for i in range(20)})
    seen: list[tuple[int, int, int]] = []
    before = gc.get_threshold()
    await backup(repo, [str(src)], progress=lambda _: seen.append(gc.get_threshold()))
    assert seen and set(seen) == {JOB_THRESHOLDS}
    assert gc.get_threshold() == before
