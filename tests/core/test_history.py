"""The findings of issue 13 on format 1, replayed against format 2: each attack must be caught.

The write tier (what the services hold) and storage itself are the attackers here. On format 1
every one of these went unnoticed: snapshots had random names and constant associated data, so
nothing bound a snapshot to its name or to the history.
"""

from __future__ import annotations

import os
import shutil
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from timevault.core import crypto
from timevault.core.archiver import backup
from timevault.core.checker import check
from timevault.core.errors import HistoryError, RepositoryError
from timevault.core.prune import forget, prune
from timevault.core.repository import endorsements
from timevault.core.repository.format import (
    ConfigFile,
    Endorsement,
    ForgetRecord,
    References,
    Snapshot,
    SnapshotStats,
)
from timevault.core.repository.history import CONTRADICTS, ENDORSED, UNENDORSED, classify
from timevault.core.repository.repo import ReadAccessRequired, Repository
from timevault.core.restorer import restore
from timevault.core.storage import LocalStorage

from .conftest import SnapshotWriter, build_tree, random_bytes, reopen, restored_path


async def _write_only(repo: Repository) -> Repository:
    return await Repository.open_write_only(LocalStorage(repo.storage.location), repo.export_write_keys())


def _repo_path(repo: Repository) -> Path:
    return Path(repo.storage.location)


async def _backed_up(repo: Repository, tmp_path: Path, name: str = "src") -> tuple[Path, str]:
    source = build_tree(tmp_path / name, {"doc.txt": "the real document", "data.bin": random_bytes(50_000, 3)})
    snapshot_id, _ = await backup(repo, [str(source)])  # with the password: endorsed at once
    return source, snapshot_id


async def _forged_tree(writer: SnapshotWriter) -> bytes:
    """A tree with a forged document and a set-user-ID root shell, as the issue's proof of concept."""
    shell = await writer.file(b"sh", b"#!/bin/sh\necho pwned\n", mode=0o4755)
    doc = await writer.file(b"doc.txt", b"FORGED CONTENT")
    return await writer.tree([doc, shell])


# --- 1. the write tier rewrites an old snapshot -------------------------------------------------


async def test_write_tier_rewriting_an_old_snapshot_in_place_is_refused(repo: Repository, tmp_path: Path) -> None:
    """The issue's proof of concept: same id, time and stats, another tree."""
    _, snapshot_id = await _backed_up(repo, tmp_path)
    wo = await _write_only(repo)
    original = await wo.load_snapshot(snapshot_id)
    writer = SnapshotWriter(wo)
    forged_tree = await _forged_tree(writer)
    await writer.packer.flush()
    forged = msgspec.structs.replace(original, tree=forged_tree)
    path = _repo_path(repo) / "snapshots" / snapshot_id
    path.write_bytes(wo.encrypt_meta(msgspec.msgpack.encode(forged), b"snapshot"))

    fresh = await reopen(repo)
    checked = await check(fresh, read_data=True)
    assert any("does not match its name" in e for e in checked.errors), checked.errors
    with pytest.raises(RepositoryError, match="does not match its name"):
        await restore(fresh, snapshot_id, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    damaged: list[str] = []
    assert await fresh.list_snapshots(damaged=damaged) == []
    assert any("renamed, copied or rewritten" in d for d in damaged)


async def test_write_tier_adding_a_backdated_snapshot_is_refused(repo: Repository, tmp_path: Path) -> None:
    """The write tier can add snapshots (that is its job), but one that claims to be older than
    the endorsement it builds on contradicts the endorsed history."""
    _, snapshot_id = await _backed_up(repo, tmp_path)
    wo = await _write_only(repo)
    original = await wo.load_snapshot(snapshot_id)
    writer = SnapshotWriter(wo)
    forged_tree = await _forged_tree(writer)
    await writer.packer.flush()
    old = (datetime.fromisoformat(original.time) - timedelta(days=30)).isoformat()
    forged = Snapshot(time=old, finished=old, hostname=original.hostname, paths=original.paths, tree=forged_tree,
                      stats=original.stats, references=await wo.save_references(writer.written))
    forged_id = await wo.save_snapshot(forged)

    fresh = await reopen(repo)
    history = await fresh.history()
    assert history.status == {snapshot_id: ENDORSED, forged_id: CONTRADICTS}
    assert "backdated" in history.reasons[forged_id]
    checked = await check(fresh)
    assert any(forged_id[:8] in e and "contradicts" in e for e in checked.errors), checked.errors
    with pytest.raises(HistoryError, match="allow-unverified"):
        await restore(fresh, forged_id, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    # Listings leave it out and say why; "latest" is never the forged one.
    damaged: list[str] = []
    assert [s for s, _ in await fresh.list_snapshots(damaged=damaged)] == [snapshot_id]
    assert any("contradicts" in d for d in damaged)
    assert await fresh.resolve_snapshot("latest") == snapshot_id
    # The user may still look at it, knowingly; set-id bits stay dropped.
    result = await restore(fresh, forged_id, str(tmp_path / "look"), allow_unverified=True)
    assert result.history == CONTRADICTS and result.notes
    shell = tmp_path / "look" / "sh"
    assert shell.exists() and not shell.stat().st_mode & (stat.S_ISUID | stat.S_ISGID)
    # An endorsement never covers it: it stays out of endorsed history until forgotten.
    await fresh.endorse()
    assert (await fresh.history()).status[forged_id] == CONTRADICTS


async def test_snapshots_written_since_the_last_endorsement_are_told_apart(repo: Repository, tmp_path: Path) -> None:
    source, first = await _backed_up(repo, tmp_path)
    wo = await _write_only(repo)
    (source / "doc.txt").write_text("a newer version")
    second, _ = await backup(wo, [str(source)])
    history = await wo.history()  # the services can tell too: they verify signatures
    assert history.status == {first: ENDORSED, second: UNENDORSED}
    fresh = await reopen(repo)
    result = await restore(fresh, second, str(tmp_path / "out"))
    assert result.errors == [] and result.history == UNENDORSED
    assert any("written since the password was last used" in note for note in result.notes)
    assert (restored_path(tmp_path / "out", source) / "doc.txt").read_text() == "a newer version"
    await fresh.endorse()  # what the CLI does after a restore
    assert (await (await reopen(repo)).history()).status == {first: ENDORSED, second: ENDORSED}
    with pytest.raises(ReadAccessRequired):
        await wo.endorse()


# --- 2. storage renames, copies and replays -----------------------------------------------------


async def test_snapshot_copied_or_renamed_by_storage_is_detected(repo: Repository, tmp_path: Path) -> None:
    _, snapshot_id = await _backed_up(repo, tmp_path)
    folder = _repo_path(repo) / "snapshots"
    copy_id = "ab" * 32
    shutil.copy(folder / snapshot_id, folder / copy_id)
    fresh = await reopen(repo)
    damaged: list[str] = []
    assert [s for s, _ in await fresh.list_snapshots(damaged=damaged)] == [snapshot_id]
    assert len(damaged) == 1 and copy_id[:12] in damaged[0]
    assert any(copy_id[:12] in e for e in (await check(fresh)).errors)
    with pytest.raises(RepositoryError, match="does not match its name"):
        await restore(fresh, copy_id, str(tmp_path / "out"))
    (folder / snapshot_id).rename(folder / ("cd" * 32))  # renamed: the original name is gone
    fresh = await reopen(repo)
    assert await fresh.list_snapshots(damaged=[]) == []
    assert len((await check(fresh)).errors) >= 2


async def test_forgotten_snapshot_put_back_by_storage_contradicts_history(repo: Repository, tmp_path: Path) -> None:
    source, first = await _backed_up(repo, tmp_path)
    (source / "doc.txt").write_text("second")
    second, _ = await backup(repo, [str(source)])
    kept = (_repo_path(repo) / "snapshots" / second).read_bytes()
    await forget(repo, [second])  # with the password: endorses the history without it
    await prune(repo)
    (_repo_path(repo) / "snapshots" / second).write_bytes(kept)  # storage replays it

    fresh = await reopen(repo)
    history = await fresh.history()
    assert history.status == {first: ENDORSED, second: CONTRADICTS}
    assert any(second[:8] in e for e in (await check(fresh)).errors)
    with pytest.raises(HistoryError):
        await restore(fresh, second, str(tmp_path / "out"))
    assert await fresh.resolve_snapshot("latest") == first


async def test_removed_endorsements_leave_nothing_verifiable(repo: Repository, tmp_path: Path) -> None:
    _, snapshot_id = await _backed_up(repo, tmp_path)
    for path in (_repo_path(repo) / "endorsements").iterdir():
        path.unlink()
    fresh = await reopen(repo)
    history = await fresh.history()
    assert history.status == {snapshot_id: CONTRADICTS}
    assert any("no valid endorsement" in e for e in (await check(fresh)).errors)
    with pytest.raises(HistoryError):
        await restore(fresh, snapshot_id, str(tmp_path / "out"))
    assert (await restore(fresh, snapshot_id, str(tmp_path / "out"), allow_unverified=True)).errors == []


async def test_rolled_back_endorsement_is_detected(repo: Repository, tmp_path: Path) -> None:
    """Storage deletes the newest endorsement and puts an older one back: snapshots that build
    on the deleted one betray it."""
    source, _ = await _backed_up(repo, tmp_path)
    folder = _repo_path(repo) / "endorsements"
    (old_name,) = [p.name for p in folder.iterdir()]
    old_bytes = (folder / old_name).read_bytes()
    (source / "doc.txt").write_text("second")
    second, _ = await backup(repo, [str(source)])  # endorses anew and removes the old one
    assert [p.name for p in folder.iterdir()] != [old_name]
    wo = await _write_only(repo)
    (source / "doc.txt").write_text("third")
    third, _ = await backup(wo, [str(source)])  # builds on the newest endorsement
    for path in folder.iterdir():
        path.unlink()
    (folder / old_name).write_bytes(old_bytes)
    history = await (await reopen(repo)).history()
    assert history.status[third] == CONTRADICTS and "missing" in history.reasons[third]
    # What the rollback undid looks merely unendorsed again; what came after it betrays it.
    assert history.status[second] == UNENDORSED


async def test_forged_endorsement_is_ignored_and_reported(repo: Repository, tmp_path: Path) -> None:
    """The write tier holds the verifying key only: what it signs with any other key is refused."""
    _, first = await _backed_up(repo, tmp_path)
    wo = await _write_only(repo)
    writer = SnapshotWriter(wo)
    await writer.packer.flush()
    forged_id = await writer.commit([await writer.file(b"x", b"forged")],
                                    when=(datetime.now(UTC) - timedelta(days=400)).isoformat())
    fake_key, _ = crypto.new_signing_key()
    claim = Endorsement(repo_id=wo.write_keys.repo_id, time=datetime.now(UTC).isoformat(),
                        snapshots=sorted([first, forged_id]), head=forged_id)
    endorsement_id, data = endorsements.encode(wo.write_keys, fake_key, claim)
    (_repo_path(repo) / "endorsements" / endorsement_id).write_bytes(data)
    fresh = await reopen(repo)
    history = await fresh.history()
    assert history.status[forged_id] == CONTRADICTS and history.status[first] == ENDORSED
    assert any("not signed" in p for p in history.problems)
    assert any("not signed" in e for e in (await check(fresh)).errors)


# --- 3. the history rules, on synthetic snapshots -----------------------------------------------


def _snap(when: datetime, endorsement: str | None, previous: str | None = None) -> Snapshot:
    iso = when.isoformat()
    return Snapshot(time=iso, finished=iso, hostname="h", paths=["/p"], tree=b"t" * 32, stats=SnapshotStats(),
                    previous=previous, endorsement=endorsement)


def test_classify_rules() -> None:
    now = datetime(2025, 6, 1, 12, tzinfo=UTC)
    e1 = Endorsement("r", (now - timedelta(days=2)).isoformat(), ["a"], head="a")
    e2 = Endorsement("r", now.isoformat(), ["a", "b"], head="b", previous="e1")
    snapshots = {
        "a": _snap(now - timedelta(days=3), None),
        "b": _snap(now - timedelta(days=1), "e1", "a"),
        "new": _snap(now + timedelta(hours=2), "e2", "b"),
        "racing": _snap(now - timedelta(minutes=2), "e1", "b"),  # saved while e2 was written
        "replayed": _snap(now - timedelta(days=1, hours=5), "e1", "a"),  # forgotten before e2
        "backdated": _snap(now - timedelta(days=10), "e2", "b"),
        "orphan": _snap(now + timedelta(hours=1), "gone", "b"),
    }
    history = classify(snapshots, {"e2": e2})
    assert history.status == {
        "a": ENDORSED, "b": ENDORSED, "new": UNENDORSED, "racing": UNENDORSED,
        "replayed": CONTRADICTS, "backdated": CONTRADICTS, "orphan": CONTRADICTS,
    }
    # The newest valid endorsement rules; an older one alongside changes nothing.
    assert classify(snapshots, {"e1": e1, "e2": e2}).status == history.status
    # "b" is endorsed but gone: with a forget record that is a note, without one an error for check.
    gone = classify({"a": snapshots["a"]}, {"e2": e2})
    assert gone.removed == ["b"] and not gone.notes
    record = ForgetRecord(time=now.isoformat(), hostname="h", snapshots=["b"], reason="retention: keep-last 1")
    forgotten = classify({"a": snapshots["a"]}, {"e2": e2}, {"b": record})
    assert forgotten.removed == [] and "keep-last 1" in forgotten.notes[0]
    assert set(classify(snapshots, {}).status.values()) == {CONTRADICTS}


# --- 4. references: what the write tier may prune by -------------------------------------------


async def test_references_match_the_trees_and_are_readable_by_the_write_tier(
    small_repo: Repository, tmp_path: Path
) -> None:
    repo = small_repo
    source = build_tree(tmp_path / "src", {f"f{i}.bin": random_bytes(20_000, i) for i in range(80)})
    first, _ = await backup(repo, [str(source)])
    (source / "f3.bin").write_bytes(random_bytes(20_000, 99))
    second, snap2 = await backup(repo, [str(source)])
    wo = await _write_only(repo)
    refs1, refs2 = await wo.snapshot_references(first), await wo.snapshot_references(second)
    assert snap2.tree in refs2 and refs1 != refs2 and len(refs1 & refs2) > len(refs2) // 2
    index = await wo.index()
    assert all(blob_id in index for blob_id in refs1 | refs2)
    # The second list is a small delta on the first (not a second full copy of the ids).
    assert await wo.references_base(snap2.references) == (await wo.load_snapshot(first)).references
    assert (await check(await reopen(repo))).errors == []


async def test_lying_references_are_caught_by_check(repo: Repository, tmp_path: Path) -> None:
    """A write tier that lies about references would make the services prune needed data."""
    source = build_tree(tmp_path / "src", {"a": random_bytes(10_000, 1), "b": random_bytes(10_000, 2)})
    snapshot_id, snapshot = await backup(repo, [str(source)])
    wo = await _write_only(repo)
    listed = await wo.snapshot_references(snapshot_id)
    lying = msgspec.structs.replace(snapshot, references=await wo.save_references(set(list(listed)[:1])))
    lying_id = await wo.save_snapshot(lying)
    checked = await check(await reopen(repo))
    assert any(lying_id[:8] in e and "references" in e for e in checked.errors), checked.errors


# --- 5. blob sizes are hidden from storage ------------------------------------------------------


async def test_blob_boundaries_and_file_sizes_are_not_visible_in_packs(repo: Repository, tmp_path: Path) -> None:
    """Twelve incompressible files of nearby sizes: no repeated prefix marks where blobs start,
    and the stored lengths cannot tell the sizes apart."""
    sizes = [3000 + 7 * i for i in range(12)]
    source = build_tree(tmp_path / "src", {f"f{i:02}": os.urandom(size) for i, size in enumerate(sizes)})
    await backup(repo, [str(source)])
    packs = [p.read_bytes() for p in (_repo_path(repo) / "data").rglob("*") if p.is_file()]
    index = await repo.index()
    sealed_keys = {key for pack in index.packs.values() for key in pack.keys}
    for data in packs:
        for key in sealed_keys:
            assert key[:16] not in data  # the job's sealed key is only inside the encrypted header
        # No 16-byte run occurs twice: nothing repeats from blob to blob.
        runs = [data[i : i + 16] for i in range(0, len(data) - 16, 4)]
        assert len(set(runs)) == len(runs)
    data_lengths = {b.length for pack in index.packs.values() for b in pack.blobs if b.type == 0}
    assert len(data_lengths) <= 2, data_lengths  # 12 sizes, at most 2 stored lengths
    assert all(crypto.padme(length) == length for length in data_lengths)


# --- 6. the config ------------------------------------------------------------------------------


def _tamper_config(path: Path, **chunker: int) -> None:
    """Change the chunker parameters in `config` as storage could (it cannot sign)."""
    outer = msgspec.json.decode(path.read_bytes(), type=ConfigFile)
    body = msgspec.msgpack.decode(outer.body)
    body["chunker"].update(chunker)
    path.write_bytes(msgspec.json.encode(msgspec.structs.replace(outer, body=msgspec.msgpack.encode(body))))


async def test_tampered_config_stops_backups_and_is_an_error_for_check(repo: Repository, tmp_path: Path) -> None:
    source, snapshot_id = await _backed_up(repo, tmp_path)
    config = _repo_path(repo) / "config"
    _tamper_config(config, min_size=256, avg_size=256, max_size=1024)  # the issue's +40 % attack
    fresh = await reopen(repo)
    assert any("not signed" in p for p in fresh.config_problems)
    with pytest.raises(RepositoryError, match="refusing"):
        await backup(fresh, [str(source)])
    wo = await _write_only(repo)
    with pytest.raises(RepositoryError, match="refusing"):
        await backup(wo, [str(source)])
    assert any("config" in e for e in (await check(fresh)).errors)
    # Reading needs no parameter: the data is still restorable.
    assert (await restore(fresh, snapshot_id, str(tmp_path / "out"))).errors == []


async def test_out_of_range_or_unknown_config_values_even_when_signed(repo: Repository, tmp_path: Path) -> None:
    """A config signed by its own (hostile) password holder is still bounds-checked."""
    from timevault.core.repository import config as repoconfig

    source, _ = await _backed_up(repo, tmp_path)
    master_sign = repo._sign_key
    assert master_sign is not None
    for change in ({"chunker": {"min_size": 256, "avg_size": 256, "max_size": 1024}},
                   {"chunker": {"min_size": 4096, "avg_size": 4096, "max_size": 2**40}},
                   {"cipher": "rot13"}, {"compression": "lzma"}):
        changed = msgspec.structs.replace(repo.config, **{
            k: (msgspec.convert(v, type=type(repo.config.chunker)) if k == "chunker" else v) for k, v in change.items()
        })
        (_repo_path(repo) / "config").write_bytes(repoconfig.encode(changed, master_sign))
        fresh = await reopen(repo)
        assert fresh.config_problems, change
        with pytest.raises(RepositoryError, match="refusing"):
            await backup(fresh, [str(source)])
        assert (await check(fresh)).errors


async def test_format_1_repositories_are_refused_clearly(tmp_path: Path) -> None:
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "config").write_text('{"version": 1, "id": "x", "chunker": {}, "created": ""}')
    from .conftest import PASSWORD

    with pytest.raises(RepositoryError, match="format 1"):
        await Repository.open(LocalStorage(folder), PASSWORD)


# --- 7. keys ------------------------------------------------------------------------------------


async def test_passwd_rewraps_with_memory_hard_parameters(repo: Repository, tmp_path: Path) -> None:
    from timevault.core.repository.format import KeyFile

    def kdf() -> tuple[int, int]:
        (key_file,) = (_repo_path(repo) / "keys").iterdir()
        params = msgspec.json.decode(key_file.read_bytes(), type=KeyFile).kdf
        return params.memory_kib, params.time_cost

    assert kdf()[0] < 64 * 1024  # the fixture's test-only parameters
    await repo.change_password("a new password")
    assert kdf()[0] >= 64 * 1024 and kdf()[1] >= 3
    assert (await reopen(repo, "a new password")).write_keys == repo.write_keys


# --- 8. the command line ------------------------------------------------------------------------


async def test_cli_tells_endorsed_from_unendorsed_and_refuses_contradicting(
    repo: Repository, tmp_path: Path, pw_file: Path
) -> None:
    import json

    from .conftest import run_cli

    source, first = await _backed_up(repo, tmp_path)
    wo = await _write_only(repo)
    (source / "doc.txt").write_text("second")
    second, _ = await backup(wo, [str(source)])  # as the services would: not endorsed
    writer = SnapshotWriter(wo)
    forged = await writer.commit([await writer.file(b"x", b"forged")],
                                 when=(datetime.now(UTC) - timedelta(days=40)).isoformat())
    location = _repo_path(repo)

    listed = run_cli("repo", "snapshots", location, "--json", "--password-file", pw_file)
    assert listed.code == 1 and "contradicts" in listed.stderr  # reported, and a failure
    listing, error = listed.stdout.splitlines()  # the list, then the --json error object
    assert json.loads(error)["error"]["code"] == "failed"
    standing = {s["id"]: (s["endorsed"], s["history"]) for s in json.loads(listing)}
    assert standing == {first: (True, "endorsed"), second: (False, "unendorsed"),
                        forged: (False, "contradicts")}
    # Listing with the password endorsed what was consistent: the second is endorsed now.
    assert (await (await reopen(repo)).history()).status[second] == ENDORSED

    refused = run_cli("repo", "restore", location, forged, "--target", tmp_path / "out", "--json",
                      "--password-file", pw_file)
    assert refused.code == 1 and json.loads(refused.stdout)["error"]["code"] == "unverified"
    assert "--allow-unverified" in refused.stderr and not (tmp_path / "out").exists()
    allowed = run_cli("repo", "restore", location, forged, "--target", tmp_path / "out", "--allow-unverified",
                      "--password-file", pw_file)
    assert allowed.code == 0 and "contradicts" in allowed.stderr
    assert (tmp_path / "out" / "x").read_bytes() == b"forged"
    checked = run_cli("repo", "check", location, "--password-file", pw_file)
    assert checked.code == 1 and forged[:8] in checked.stderr


async def test_a_list_of_references_out_of_order_is_damage_not_a_crash(repo: Repository, tmp_path: Path) -> None:
    """Lists are read as sorted ids (merged without a set of them): a hostile write tier that
    stores one out of order gets a clear error from check and prune, never a traceback."""
    source = build_tree(tmp_path / "src", {"a": random_bytes(10_000, 1), "b": random_bytes(10_000, 2)})
    snapshot_id, snapshot = await backup(repo, [str(source)])
    wo = await _write_only(repo)
    ids = sorted(await wo.snapshot_references(snapshot_id))
    record = References(added=b"".join(reversed(ids)))
    data = wo.encrypt_meta(msgspec.msgpack.encode(record), b"references")
    references_id = crypto.content_hash(data).hex()
    await wo.storage.put(f"references/{references_id}", data)
    shuffled_id = await wo.save_snapshot(msgspec.structs.replace(snapshot, references=references_id))
    with pytest.raises(RepositoryError, match="damaged"):
        await wo.snapshot_references(shuffled_id)
    checked = await check(await reopen(repo))
    assert any(shuffled_id[:8] in e and "damaged" in e for e in checked.errors), checked.errors
    with pytest.raises(ReadAccessRequired, match="missing or damaged"):
        await prune(await _write_only(repo))  # the write tier cannot recompute it from the trees
    result = await prune(await reopen(repo))  # with the password: from the trees, nothing lost
    assert (await check(await reopen(repo), read_data=True)).errors != []  # the list is still wrong
    assert result.blobs_removed == 0
