"""Restoring chosen items: into a folder or back to their place, never over what is there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from timevault.core.archiver import backup
from timevault.core.repository.repo import Repository
from timevault.core.restore_items import (
    TEMP_PREFIX,
    beside_name,
    remove_abandoned,
    rename_noreplace,
    restore_items,
)
from timevault.core.restorer import RestoreError

from .conftest import build_tree


@pytest.fixture
async def backed_up(repo: Repository, tmp_path: Path) -> tuple[Path, str]:
    src = build_tree(tmp_path / "home", {"notes.txt": "v1 notes", "docs/a.txt": "a", "docs/deep/b.txt": "b",
                                         ".bashrc": "rc", "empty/": None})
    os.utime(src / "notes.txt", ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000))
    snapshot_id, _ = await backup(repo, [str(src)])
    return src, snapshot_id


async def test_deleted_file_goes_back_to_its_place(repo: Repository, backed_up: tuple[Path, str]) -> None:
    src, snapshot_id = backed_up
    (src / "notes.txt").unlink()
    result = await restore_items(repo, snapshot_id, [f"{src}/notes.txt"])
    assert (src / "notes.txt").read_text() == "v1 notes"
    assert (src / "notes.txt").stat().st_mtime_ns == 1_500_000_000_000_000_000
    assert [(p.path, p.restored_to, p.beside) for p in result.placed] == [
        (f"{src}/notes.txt", f"{src}/notes.txt", False)]
    assert result.files == 1 and not result.errors
    assert not [n for n in os.listdir(src) if n.startswith(".timevault-restore")]


async def test_existing_file_is_kept_and_the_restored_one_named_beside(
        repo: Repository, backed_up: tuple[Path, str]) -> None:
    src, snapshot_id = backed_up
    (src / "notes.txt").write_text("v2, edited since")
    first = await restore_items(repo, snapshot_id, [f"{src}/notes.txt", f"{src}/.bashrc"])
    assert (src / "notes.txt").read_text() == "v2, edited since"
    placed = {p.path: p for p in first.placed}
    beside = Path(placed[f"{src}/notes.txt"].restored_to)
    assert placed[f"{src}/notes.txt"].beside and beside.parent == src
    assert beside.name.startswith("notes (restored ") and beside.name.endswith(").txt")
    assert beside.read_text() == "v1 notes"
    assert Path(placed[f"{src}/.bashrc"].restored_to).name.startswith(".bashrc (restored ")
    # Again: the name beside is taken as well, so a third name is found.
    second = await restore_items(repo, snapshot_id, [f"{src}/notes.txt"])
    third = Path(second.placed[0].restored_to)
    assert third != beside and third.name.endswith(" 2).txt") and third.read_text() == "v1 notes"
    assert any("kept what is there" in line for line in second.notes())


async def test_folders_into_a_chosen_folder(repo: Repository, backed_up: tuple[Path, str], tmp_path: Path) -> None:
    src, snapshot_id = backed_up
    target = tmp_path / "Restored"
    result = await restore_items(repo, snapshot_id, [f"{src}/docs", f"{src}/docs/deep/b.txt", f"{src}/empty"],
                                 str(target))
    assert (target / "docs" / "deep" / "b.txt").read_text() == "b" and (target / "empty").is_dir()
    assert sorted(os.listdir(target)) == ["docs", "empty"]  # b.txt came with its folder, once
    assert result.dirs >= 3 and result.files == 2
    again = await restore_items(repo, snapshot_id, [f"{src}/docs"], str(target))
    assert again.placed[0].beside and Path(again.placed[0].restored_to, "a.txt").read_text() == "a"


async def test_a_gone_folder_is_made_again(repo: Repository, backed_up: tuple[Path, str]) -> None:
    import shutil

    src, snapshot_id = backed_up
    shutil.rmtree(src / "docs")
    await restore_items(repo, snapshot_id, [f"{src}/docs/deep/b.txt"])
    assert (src / "docs" / "deep" / "b.txt").read_text() == "b"


async def test_refusals(repo: Repository, backed_up: tuple[Path, str], tmp_path: Path) -> None:
    src, snapshot_id = backed_up
    with pytest.raises(RestoreError, match="not in this snapshot"):
        await restore_items(repo, snapshot_id, [f"{src}/missing.txt"])
    with pytest.raises(RestoreError, match=r"'\.\.'"):
        await restore_items(repo, snapshot_id, [f"{src}/../etc/passwd"])
    with pytest.raises(RestoreError, match="no original place"):
        await restore_items(repo, snapshot_id, [str(src.parent)])  # a folder above the source
    with pytest.raises(RestoreError, match="absolute"):
        await restore_items(repo, snapshot_id, ["notes.txt"], str(tmp_path / "t"))
    with pytest.raises(RestoreError, match="not the whole"):
        await restore_items(repo, snapshot_id, ["/"], str(tmp_path / "t"))


def test_names_beside(tmp_path: Path) -> None:
    taken = {"a (restored S).txt"}
    assert beside_name("a.txt", "S", taken.__contains__) == "a (restored S 2).txt"
    assert beside_name("Folder", "S", lambda _: False) == "Folder (restored S)"
    assert beside_name(".profile", "S", lambda _: False) == ".profile (restored S)"
    (tmp_path / "x").write_text("x")
    (tmp_path / "y").write_text("y")
    with pytest.raises(FileExistsError):
        rename_noreplace(str(tmp_path / "x"), str(tmp_path / "y"))
    (tmp_path / "d").mkdir()
    (tmp_path / "e").mkdir()
    with pytest.raises(FileExistsError):
        rename_noreplace(str(tmp_path / "d"), str(tmp_path / "e"))  # rename(2) would replace an empty folder
    assert (tmp_path / "y").read_text() == "y"


def _hold_hidden_folder(folder: Path) -> subprocess.Popen[str]:
    """Another process that claims a hidden restore folder in `folder` and keeps it, as a
    running item restore does; it prints the folder's name once it holds it."""
    code = ("import sys, time; from timevault.core.restore_items import _claim_hidden_folder; "
            "temp, _ = _claim_hidden_folder(sys.argv[1]); print(temp, flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line, "the holder did not start"
    return proc


async def test_a_killed_restores_hidden_folder_is_removed_by_the_next(
    repo: Repository, backed_up: tuple[Path, str], tmp_path: Path
) -> None:
    src, snapshot_id = backed_up
    target = tmp_path / "target"
    target.mkdir()
    killed = _hold_hidden_folder(target)
    killed.kill()  # -9: the process leaves its hidden folder, half filled, behind
    killed.wait()
    running = _hold_hidden_folder(target)  # still running: its folder must stay
    try:
        (old_unowned := target / f"{TEMP_PREFIX}0ld").mkdir()  # died before it locked: old
        os.utime(old_unowned, (1, 1))
        (new_unowned := target / f"{TEMP_PREFIX}n3w").mkdir()  # being made right now
        (target / f"{TEMP_PREFIX}link").symlink_to(src)  # not a folder of ours: left alone
        before = {p.name for p in target.iterdir()}
        assert len(before) == 5

        await restore_items(repo, snapshot_id, [f"{src}/notes.txt"], str(target))

        left = {p.name for p in target.iterdir()}
        assert "notes.txt" in left
        assert new_unowned.name in left and f"{TEMP_PREFIX}link" in left and old_unowned.name not in left
        hidden = {name for name in left if name.startswith(TEMP_PREFIX)} - {new_unowned.name, f"{TEMP_PREFIX}link"}
        assert len(hidden) == 1, "only the running restore's folder stays"
        assert (src / "notes.txt").exists()  # the symlink's target was not followed
        assert remove_abandoned(str(target)) == []
    finally:
        running.kill()
        running.wait()
    assert remove_abandoned(str(target)) == list(hidden)
