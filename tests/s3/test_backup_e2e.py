"""Backups to an s3:// location end to end, through the CLI and through the library."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from timevault.core.archiver import backup
from timevault.core.checker import check
from timevault.core.repository import Repository
from timevault.core.restorer import restore
from timevault.core.storage import open_location
from timevault.core.storage.s3 import S3Storage

from .conftest import (
    BIG_FILE_MIB,
    FAST_KDF,
    PASSWORD,
    Machine,
    MiB,
    assert_same_tree,
    build_source,
    s3_location,
    stored,
    text_bytes,
)

pytestmark = [pytest.mark.s3, pytest.mark.timeout(120)]


async def test_cli_backup_restore_prune_and_restore_on_a_new_machine(
    moto_endpoint: str,
    s3_bucket: str,
    prefix: str,
    direct_s3: S3Storage,
    new_machine: Callable[[str], Machine],
    tmp_path: Path,
) -> None:
    laptop = new_machine("laptop")
    location = s3_location(moto_endpoint, s3_bucket, prefix)
    source = build_source(tmp_path / "src")
    first_tree = tmp_path / "first-tree"
    shutil.copytree(source, first_tree, symlinks=True)  # the first state, for comparing later

    init = (await laptop.run("repo", "init", location)).ok()
    assert f"s3://{s3_bucket}/{prefix}" in init.stdout
    assert "endpoint" not in init.stdout  # the location printed is only bucket/prefix

    first = (await laptop.run("repo", "backup", location, source, "--json")).ok().json()
    assert first["files"] == 29 and first["size"] > BIG_FILE_MIB * MiB
    assert first["added_size"] > BIG_FILE_MIB * MiB * 0.95  # random data does not compress
    objects = await stored(direct_s3)
    packs = {name: size for name, size in objects.items() if name.startswith("data/")}
    assert len(packs) >= 2, packs  # one file larger than a pack
    assert not any(name.startswith("locks/") for name in objects)  # released after the backup
    full_bytes = sum(packs.values())

    # The incremental: an edit, a new file, and the big file gone (so prune has a pack to free).
    (source / "src" / "module_03.py").write_bytes(text_bytes(5_000, 99))
    (source / "docs" / "new.txt").write_bytes(text_bytes(100_000, 98))
    (source / "videos" / "holiday.mp4").unlink()
    second = (await laptop.run("repo", "backup", location, source, "--json")).ok().json()
    assert second["parent"] == first["id"]
    assert second["files"] == 29
    assert second["unchanged_files"] == 27
    assert second["added_size"] < 200_000, second  # a few KiB of changes and trees, not MiBs
    after_second = sum(size for name, size in (await stored(direct_s3, "data/")).items())
    assert after_second - full_bytes < 200_000

    listed = (await laptop.run("repo", "snapshots", location, "--json")).ok().json()
    assert [s["id"] for s in listed] == [first["id"], second["id"]]

    restore_first = tmp_path / "restore-first"
    (await laptop.run("repo", "restore", location, first["id"][:8], "--target", restore_first)).ok()
    assert_same_tree(first_tree, restore_first, source)

    (await laptop.run("repo", "forget", location, first["id"])).ok()
    pruned = (await laptop.run("repo", "prune", location)).ok()
    assert "deleted" in pruned.stdout
    after_prune = await stored(direct_s3, "data/")
    freed = after_second - sum(after_prune.values())
    assert freed > (BIG_FILE_MIB - 1) * MiB, (pruned.stdout, freed)  # the big file's data is gone
    assert not any(name.startswith("locks/") for name in await stored(direct_s3))

    # A new machine: nothing but the location and the password.
    desktop = new_machine("desktop")
    listed = (await desktop.run("repo", "snapshots", location, "--json")).ok().json()
    assert [s["id"] for s in listed] == [second["id"]]
    target = tmp_path / "restore-on-desktop"
    (await desktop.run("repo", "restore", location, "latest", "--target", target)).ok()
    assert_same_tree(source, target)
    checked = (await desktop.run("repo", "check", location, "--read-data")).ok()
    assert "no errors found" in checked.stdout and "packs read and verified" in checked.stdout
    assert desktop.leftovers() == [], desktop.leftovers()  # no cache was needed, none was made


async def test_library_backup_and_restore_with_open_location(
    moto_endpoint: str, s3_bucket: str, prefix: str, direct_s3: S3Storage, tmp_path: Path
) -> None:
    location = s3_location(moto_endpoint, s3_bucket, prefix, concurrency=3)
    source = build_source(tmp_path / "src", seed=7, big_mib=17)

    repo = await Repository.init(open_location(location), PASSWORD, kdf=FAST_KDF)
    try:
        snapshot_id, snapshot = await backup(repo, [str(source)])
    finally:
        await repo.close()
    assert snapshot.stats.files == 29

    names = await stored(direct_s3)
    kinds = {name.split("/")[0] for name in names}
    assert kinds == {"config", "keys", "data", "index", "snapshots", "references", "endorsements"}, kinds
    assert sum(1 for name in names if name.startswith("data/")) >= 2

    # Opened again from the location string only, as another process would.
    repo = await Repository.open(open_location(location), PASSWORD)
    try:
        assert [sid for sid, _ in await repo.list_snapshots()] == [snapshot_id]
        target = tmp_path / "restored"
        result = await restore(repo, snapshot_id[:10], str(target))
        assert result.errors == []
        assert result.files == 29
        checked = await check(repo, read_data=True)
        assert checked.errors == [] and checked.packs_read == checked.packs >= 2
    finally:
        await repo.close()
    assert_same_tree(source, target)
