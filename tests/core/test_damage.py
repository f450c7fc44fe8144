"""Tampered, truncated and missing objects: `check` reports them, restore fails only what it must."""

from __future__ import annotations

from pathlib import Path

import pytest

from timevault.core.archiver import backup
from timevault.core.checker import check
from timevault.core.repository import CorruptBlob
from timevault.core.repository.index import pack_object_name
from timevault.core.repository.repo import Repository, RepositoryError
from timevault.core.restorer import restore

from .conftest import (
    PASSWORD,
    assert_clean_error,
    assert_manifests_equal,
    build_tree,
    random_bytes,
    reopen,
    restored_path,
    run_cli,
    tree_manifest,
)
from .test_backup_restore import find_node


async def _backed_up(repo: Repository, tmp_path: Path) -> tuple[Path, str]:
    source = build_tree(
        tmp_path / "src",
        {
            "victim.bin": random_bytes(200_000, 1),
            "ok1.bin": random_bytes(150_000, 2),
            "sub/ok2.txt": "fine " * 1000,
            "empty": b"",
        },
    )
    snapshot_id, _ = await backup(repo, [str(source)])
    return source, snapshot_id


async def _location(repo: Repository, snapshot_id: str, path: Path) -> tuple[Path, int, int]:
    """(pack file, offset, length) of the first data blob of `path`."""
    node = await find_node(repo, snapshot_id, path)
    location = (await repo.index()).blobs[node.content[0]]
    return Path(repo.storage.location) / pack_object_name(location.pack), location.offset, location.length


def _pack_files(repo_path: Path) -> list[Path]:
    return sorted(p for p in (repo_path / "data").rglob("*") if p.is_file())


async def test_flipped_byte_in_a_pack(repo: Repository, tmp_path: Path) -> None:
    source, snapshot_id = await _backed_up(repo, tmp_path)
    assert (await check(repo, read_data=True)).errors == []
    pack, offset, length = await _location(repo, snapshot_id, source / "victim.bin")
    data = bytearray(pack.read_bytes())
    data[offset + length // 2] ^= 0x01
    pack.write_bytes(bytes(data))

    fresh = await reopen(repo)
    structural = await check(fresh)
    assert structural.errors == []  # sizes still match: only reading the data finds it
    result = await check(fresh, read_data=True)
    assert result.errors, "a flipped byte must be reported"
    assert any(pack.name[:12] in e for e in result.errors)

    target = tmp_path / "out"
    restored = await restore(fresh, snapshot_id, str(target))
    assert len(restored.errors) == 1 and "victim.bin" in restored.errors[0], restored.errors
    out = restored_path(target, source)
    assert not (out / "victim.bin").exists()
    expected = tree_manifest(source)
    del expected[b"victim.bin"]
    actual = tree_manifest(out)
    del actual[b""], expected[b""]  # the root folder's mtime changed when victim.bin was removed
    assert_manifests_equal(actual, expected)

    # The CLI says so too: check fails (exit 1); restore restores the rest, names the file and
    # ends with 3 (incomplete); no traceback.
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    cli = run_cli("repo", "check", repo.storage.location, "--read-data", "--password-file", pw)
    assert cli.code == 1 and "Traceback" not in cli.stderr and "error:" in cli.stderr
    cli = run_cli(
        "repo",
        "restore",
        repo.storage.location,
        "latest",
        "--password-file",
        pw,
        "--target",
        tmp_path / "cli-out",
    )
    assert cli.code == 3 and "victim.bin" in cli.stderr and "Traceback" not in cli.stderr
    assert (restored_path(tmp_path / "cli-out", source) / "ok1.bin").read_bytes() == (
        source / "ok1.bin"
    ).read_bytes()


async def test_truncated_pack(repo: Repository, tmp_path: Path) -> None:
    source, snapshot_id = await _backed_up(repo, tmp_path)
    pack, offset, length = await _location(repo, snapshot_id, source / "victim.bin")
    data = pack.read_bytes()
    # Keep the bytes before the victim's blob only.
    pack.write_bytes(data[: offset + length // 2])
    fresh = await reopen(repo)
    result = await check(fresh)
    assert any("size" in e and pack.name[:12] in e for e in result.errors), result.errors
    restored = await restore(fresh, snapshot_id, str(tmp_path / "out"))
    assert restored.errors and all(("victim.bin" in e or "ok" in e) for e in restored.errors)
    assert any("victim.bin" in e for e in restored.errors)
    out = restored_path(tmp_path / "out", source)
    assert not (out / "victim.bin").exists()
    # Whatever was restored is exact.
    for path in out.rglob("*"):
        if path.is_file():
            assert path.read_bytes() == (source / path.relative_to(out)).read_bytes()
    assert (out / "empty").read_bytes() == b""


async def test_deleted_data_pack(repo: Repository, tmp_path: Path) -> None:
    source, snapshot_id = await _backed_up(repo, tmp_path)
    pack, _, _ = await _location(repo, snapshot_id, source / "victim.bin")
    pack.unlink()
    fresh = await reopen(repo)
    result = await check(fresh)
    assert any(pack.name[:12] in e and "missing" in e for e in result.errors), result.errors
    restored = await restore(fresh, snapshot_id, str(tmp_path / "out"))
    assert any("victim.bin" in e for e in restored.errors)
    out = restored_path(tmp_path / "out", source)
    assert not (out / "victim.bin").exists()
    assert (out / "empty").exists()  # needs no data


async def test_deleted_tree_pack_fails_restore_clearly(repo: Repository, tmp_path: Path) -> None:
    source, snapshot_id = await _backed_up(repo, tmp_path)
    data_pack, _, _ = await _location(repo, snapshot_id, source / "victim.bin")
    tree_packs = [p for p in _pack_files(Path(repo.storage.location)) if p != data_pack]
    assert tree_packs
    for p in tree_packs:
        p.unlink()
    fresh = await reopen(repo)
    assert (await check(fresh)).errors
    with pytest.raises((CorruptBlob, RepositoryError), match="missing"):
        await restore(fresh, snapshot_id, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


async def test_deleted_index_files_are_rebuilt_from_pack_headers(repo: Repository, tmp_path: Path) -> None:
    """All index files gone: a restore completes the index from the packs' headers in memory,
    and `repo rebuild-index` writes it back (then check is clean again)."""
    source, snapshot_id = await _backed_up(repo, tmp_path)
    expected = tree_manifest(source)
    repo_path = Path(repo.storage.location)
    for index_file in (repo_path / "index").iterdir():
        index_file.unlink()
    fresh = await reopen(repo)
    result = await check(fresh)
    assert result.errors, "snapshots whose trees are not indexed must be reported"
    assert any("not in the index" in n for n in result.notes)
    target = tmp_path / "out"
    restored = await restore(fresh, snapshot_id, str(target))
    assert restored.errors == []
    assert any("read from their own headers" in note for note in restored.notes)
    assert_manifests_equal(tree_manifest(restored_path(target, source)), expected)
    assert list((repo_path / "index").iterdir()) == []  # restore repairs in memory only
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    cli = run_cli("repo", "rebuild-index", repo_path, "--password-file", pw)
    assert cli.code == 0, cli.stderr
    assert "pack" in cli.stdout
    assert len(list((repo_path / "index").iterdir())) == 1
    again = await reopen(repo)
    assert (await check(again, read_data=True)).errors == []


async def test_damaged_index_file_is_replaced_by_rebuild_index(repo: Repository, tmp_path: Path) -> None:
    source, snapshot_id = await _backed_up(repo, tmp_path)
    repo_path = Path(repo.storage.location)
    for index_file in (repo_path / "index").iterdir():
        index_file.write_bytes(index_file.read_bytes()[:-7])  # truncated
    fresh = await reopen(repo)
    assert any("index" in e for e in (await check(fresh)).errors)
    target = tmp_path / "out"
    restored = await restore(fresh, snapshot_id, str(target))
    assert restored.errors == [] and any("damaged" in note for note in restored.notes)
    assert (restored_path(target, source) / "ok1.bin").read_bytes() == (source / "ok1.bin").read_bytes()
    recovered, replaced, problems = await fresh.rebuild_index()
    assert recovered >= 1 and replaced >= 1 and problems == []
    assert (await check(await reopen(repo), read_data=True)).errors == []


async def test_damaged_index_file_is_reported(repo: Repository, tmp_path: Path) -> None:
    await _backed_up(repo, tmp_path)
    index_file = next((Path(repo.storage.location) / "index").iterdir())
    data = bytearray(index_file.read_bytes())
    data[20] ^= 0xFF
    index_file.write_bytes(bytes(data))
    result = await check(await reopen(repo))
    assert any(index_file.name in e for e in result.errors), result.errors


async def test_damaged_snapshot_file(repo: Repository, tmp_path: Path) -> None:
    source, first = await _backed_up(repo, tmp_path)
    (source / "new.txt").write_text("second snapshot")
    second, _ = await backup(repo, [str(source)])
    snap_file = Path(repo.storage.location) / "snapshots" / first
    data = bytearray(snap_file.read_bytes())
    data[len(data) // 2] ^= 0x10
    snap_file.write_bytes(bytes(data))

    fresh = await reopen(repo)
    with pytest.raises(RepositoryError, match="damaged"):
        await fresh.load_snapshot(first)
    result = await check(fresh)
    assert any(first[:8] in e and "damaged" in e for e in result.errors), result.errors
    # The other snapshot still restores, by id.
    restored = await restore(fresh, second, str(tmp_path / "out"))
    assert restored.errors == []
    assert_manifests_equal(tree_manifest(restored_path(tmp_path / "out", source)), tree_manifest(source))

    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    assert_clean_error(run_cli("repo", "snapshots", repo.storage.location, "--password-file", pw), "damaged")
    # Forgetting the damaged snapshot (by prefix: no decoding needed) makes the repository whole again.
    cli = run_cli("repo", "forget", repo.storage.location, first[:12], "--password-file", pw)
    assert cli.code == 0, cli.stderr
    assert (await check(await reopen(repo))).errors == []


async def test_truncated_and_empty_snapshot_files(repo: Repository, tmp_path: Path) -> None:
    _, snapshot_id = await _backed_up(repo, tmp_path)
    snap_file = Path(repo.storage.location) / "snapshots" / snapshot_id
    for content in (snap_file.read_bytes()[:-1], b"", b"x" * 10):
        snap_file.write_bytes(content)
        with pytest.raises(RepositoryError):
            await repo.load_snapshot(snapshot_id)
        with pytest.raises(RepositoryError):
            await restore(repo, snapshot_id[:8], str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


async def test_missing_or_damaged_config(repo: Repository, tmp_path: Path) -> None:
    repo_path = Path(repo.storage.location)
    config = (repo_path / "config").read_bytes()
    (repo_path / "config").write_bytes(b"{not json")
    with pytest.raises(RepositoryError, match="damaged"):
        await reopen(repo_path)
    (repo_path / "config").unlink()
    with pytest.raises(RepositoryError, match="not a TimeVault repository"):
        await reopen(repo_path)
    (repo_path / "config").write_bytes(config)
    assert (await reopen(repo_path)).config.id == repo.config.id
