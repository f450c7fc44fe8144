"""Restoring chosen items: into a folder or back to their place, never over what is there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from timevault.core.archiver import backup
from timevault.core.repository.repo import Repository
from timevault.core.restore_items import beside_name, rename_noreplace, restore_items
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
