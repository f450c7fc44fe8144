"""Damaged repositories: restores degrade per file and per folder, check names what is wrong.

A damaged data pack costs only the files with data in it; a damaged folder listing (tree blob)
costs only what is below that folder. Everything else is restored byte for byte, every loss is
named, and the CLI exits 3 ("finished but incomplete"). Unsafe or repeated names in trees are
errors for check (restore refuses them).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.core.conftest import (
    FAST_KDF,
    PASSWORD,
    SnapshotWriter,
    build_tree,
    random_bytes,
    reopen,
    restored_path,
    run_cli,
    tree_manifest,
)
from tests.core.test_backup_restore import find_node
from timevault.core.archiver import backup
from timevault.core.checker import check
from timevault.core.repository.index import pack_object_name
from timevault.core.repository.repo import Repository
from timevault.core.restorer import restore
from timevault.core.storage import LocalStorage


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[Repository]:
    r = await Repository.init(LocalStorage(tmp_path / "repo"), PASSWORD, kdf=FAST_KDF)
    yield r
    await r.close()


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


async def _source_and_snapshot(repo: Repository, tmp_path: Path) -> tuple[Path, str]:
    source = build_tree(tmp_path / "src", {
        "top.bin": random_bytes(300_000, 1),
        "keep/a.txt": "kept " * 500,
        "keep/deeper/b.bin": random_bytes(50_000, 2),
        "lost/c.txt": "below the damaged folder",
        "lost/inner/d.txt": "also below it",
        "empty": b"",
    })
    snapshot_id, _ = await backup(repo, [str(source)])
    return source, snapshot_id


def _cli_restore(repo: Repository, tmp_path: Path, target: Path) -> tuple[int, str]:
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    result = run_cli("repo", "restore", repo.storage.location, "latest", "--target", target,
                     "--password-file", pw)
    assert "Traceback" not in result.stderr
    return result.code, result.stderr


async def test_damaged_tree_blob_costs_only_the_folder_below_it(repo: Repository, tmp_path: Path) -> None:
    source, snapshot_id = await _source_and_snapshot(repo, tmp_path)
    lost = await find_node(repo, snapshot_id, source / "lost")
    assert lost.subtree is not None
    location = (await repo.index()).blobs[lost.subtree]
    _flip(Path(repo.storage.location) / pack_object_name(location.pack), location.offset + location.length // 2)

    fresh = await reopen(repo)
    assert any("lost" in error for error in (await check(fresh)).errors)
    target = tmp_path / "out"
    result = await restore(fresh, snapshot_id, str(target))
    assert len(result.errors) == 1 and "lost/" in result.errors[0] and "contents are lost" in result.errors[0]
    out = restored_path(target, source)
    assert (out / "lost").is_dir() and list((out / "lost").iterdir()) == []
    expected = {k: v for k, v in tree_manifest(source).items() if not k.startswith(b"lost/")}
    actual = tree_manifest(out)
    for manifest in (expected, actual):
        manifest.pop(b"lost")  # the folder is there, its mtime differs (its contents are not)
    assert actual == expected

    code, stderr = _cli_restore(repo, tmp_path, tmp_path / "cli-out")
    assert code == 3, stderr
    assert "lost/" in stderr and "timevault: incomplete: 1 item(s) could not be restored" in stderr
    assert (restored_path(tmp_path / "cli-out", source) / "keep" / "deeper" / "b.bin").read_bytes() == (
        source / "keep" / "deeper" / "b.bin").read_bytes()


async def test_damaged_data_pack_costs_only_its_files(repo: Repository, tmp_path: Path) -> None:
    source, _ = await _source_and_snapshot(repo, tmp_path)
    # A second backup of new files puts their data into a pack of its own.
    build_tree(source, {"later/x.bin": random_bytes(200_000, 7), "later/y.bin": random_bytes(20_000, 8)})
    second, _ = await backup(repo, [str(source)])
    node = await find_node(repo, second, source / "later" / "x.bin")
    index = await repo.index()
    pack = index.blobs[node.content[0]].pack
    in_pack = {blob.id for blob in index.packs[pack].blobs}
    pack_file = Path(repo.storage.location) / pack_object_name(pack)
    pack_file.write_bytes(pack_file.read_bytes()[: pack_file.stat().st_size // 3])  # truncated

    fresh = await reopen(repo)
    target = tmp_path / "out"
    result = await restore(fresh, second, str(target))
    lost = sorted(error.split(":")[0] for error in result.errors)
    assert lost and all("later/" in name for name in lost), result.errors
    out = restored_path(target, source)
    for path in source.rglob("*"):
        if path.is_file():
            node = await find_node(fresh, second, path)
            restored = out / path.relative_to(source)
            if any(blob in in_pack for blob in node.content):
                assert not restored.exists(), f"{path} needs the damaged pack"
            else:
                assert restored.read_bytes() == path.read_bytes(), path
    code, stderr = _cli_restore(repo, tmp_path, tmp_path / "cli-out")
    assert code == 3 and "x.bin" in stderr, stderr


@pytest.mark.parametrize("name", [b"..", b"../../x", b"/abs", b"", b"a/b", b"nul\0", b"."], ids=repr)
async def test_check_reports_unsafe_names(repo: Repository, name: bytes) -> None:
    w = SnapshotWriter(repo)
    await w.commit([await w.dir(b"d", [await w.file(b"fine", b"ok"), await w.file(name, b"bad")])])
    result = await check(await reopen(repo))
    assert any("restore refuses it" in error for error in result.errors), result.errors


async def test_check_reports_repeated_names(repo: Repository) -> None:
    w = SnapshotWriter(repo)
    await w.commit([await w.file(b"x", b"one"), await w.dir(b"x", [])])
    result = await check(await reopen(repo))
    assert any("'x' more than once" in error for error in result.errors), result.errors


async def test_check_of_a_sound_snapshot_has_no_name_errors(repo: Repository, tmp_path: Path) -> None:
    await _source_and_snapshot(repo, tmp_path)
    assert (await check(await reopen(repo), read_data=True)).errors == []
