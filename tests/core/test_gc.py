"""Garbage collection in two phases, forget records and retention, as the core does them.

The races are made deterministic with the backup's `on_locked` hook (it runs while the backup
holds its lock, before anything is deduplicated) and with a dedup oracle that remembers the
index from before a prune (what a stale cache would say). Crashes are real: `timevault repo
prune` is stopped at a hold point and killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from timevault.core.archiver import IndexKnownBlobs, PackerSink, backup
from timevault.core.checker import check
from timevault.core.errors import NotEmpty, RepositoryLocked
from timevault.core.prune import PruneOptions, forget, forget_by_rules, mark_due, prune
from timevault.core.repository import gcstate, layout
from timevault.core.repository import repo as repo_module
from timevault.core.repository.index import Index
from timevault.core.repository.repo import Repository
from timevault.core.restorer import restore
from timevault.core.retention import Rules
from timevault.core.storage import LocalStorage

from .conftest import (
    FAST_KDF,
    PASSWORD,
    REPO_ROOT,
    TIMEVAULT,
    assert_manifests_equal,
    build_tree,
    new_repo,
    random_bytes,
    reopen,
    restored_path,
    run_cli,
    tree_manifest,
)


def data_files(repo: Repository) -> set[str]:
    return {p.name for p in (Path(repo.storage.location) / "data").rglob("*") if p.is_file()}


async def write_only(repo: Repository) -> Repository:
    return await Repository.open_write_only(LocalStorage(repo.storage.location), repo.export_write_keys())


# --- races ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("sweep_only", [False, True])
async def test_a_backup_that_deduplicated_against_garbage_keeps_its_data(
    repo: Repository, tmp_path: Path, sweep_only: bool
) -> None:
    source = build_tree(tmp_path / "src", {"a": random_bytes(300_000, 1), "b": random_bytes(200_000, 2)})
    first, _ = await backup(repo, [str(source)])
    manifest = tree_manifest(source)
    await prune(repo)  # the packs are now in an index prune wrote (not a running backup's)
    await forget(repo, [first])  # all of it is garbage now
    stale = IndexKnownBlobs(await repo.index(reload=True))  # what a cache knew before the mark
    marked: list[int] = []

    async def prune_meanwhile() -> None:  # runs while the backup holds its lock
        result = await prune(await reopen(repo))
        marked.append(result.packs_pending)
        assert result.packs_deleted == 0  # the running backup started before the mark

    wo = await write_only(repo)
    second, snapshot = await backup(wo, [str(source)], known=stale, sink=PackerSink(wo, Index()),
                                    on_locked=prune_meanwhile)
    assert marked and marked[0] >= 1
    assert snapshot.stats.added_size == 0  # everything was "known": it relies on marked data

    result = await prune(await reopen(repo), PruneOptions(mark=not sweep_only))
    assert result.packs_rescued >= 1 and result.packs_pending == 0
    fresh = await reopen(repo)
    assert (await check(fresh, read_data=True)).errors == []
    target = tmp_path / "out"
    assert (await restore(fresh, second, str(target))).errors == []
    assert_manifests_equal(tree_manifest(restored_path(target, source)), manifest)


async def test_a_backup_after_a_prune_reloads_the_index(repo: Repository, tmp_path: Path) -> None:
    """The same repository object, its index cached before a prune: the next backup must not
    deduplicate against what the prune took out of the index."""
    source = build_tree(tmp_path / "src", {"a": random_bytes(100_000, 7)})
    first, _ = await backup(repo, [str(source)])
    (source / "a").write_bytes(random_bytes(100_000, 8))
    await backup(repo, [str(source)])
    other = await reopen(repo)
    await forget(other, [first])
    generation = await repo.gc_generation()
    assert (await prune(other)).packs_deleted >= 1
    assert await repo.gc_generation() != generation
    (source / "a").write_bytes(random_bytes(100_000, 7))  # the pruned content, back again
    _, snapshot = await backup(repo, [str(source)])
    assert snapshot.stats.added_size > 90_000
    assert (await check(await reopen(repo), read_data=True)).errors == []


async def test_a_backup_whose_lock_lapsed_does_not_save(repo: Repository, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    source = build_tree(tmp_path / "src", {"a": "x"})
    monkeypatch.setattr(repo_module, "LOCK_STALE_AFTER", 1.0)
    monkeypatch.setattr(repo_module, "LOCK_SAFETY", 0.0)

    async def asleep() -> None:  # a laptop closed mid-backup: the lock expires meanwhile
        time.sleep(1.2)  # noqa: ASYNC251 - the whole process stops, its lock refresher too

    with pytest.raises(RepositoryLocked, match="expired while it ran"):
        await backup(repo, [str(source)], on_locked=asleep)
    assert await repo.list_snapshots() == []


async def test_rebuild_index_leaves_marked_packs_out(repo: Repository, tmp_path: Path) -> None:
    source = build_tree(tmp_path / "src", {"a": random_bytes(50_000, 3)})
    first, _ = await backup(repo, [str(source)])
    await prune(repo)
    (source / "a").write_bytes(random_bytes(50_000, 4))
    await backup(repo, [str(source)])
    await forget(repo, [first])
    other = await reopen(repo)
    async with other.lock(kind="backup"):
        assert (await prune(repo)).packs_pending >= 1
    pending = await gcstate.load(repo.storage, repo.write_keys.meta_key)
    assert pending.pending_packs()
    recovered, _, problems = await repo.rebuild_index()
    assert recovered == 0 and problems == []  # what prune took out stays out
    assert (await prune(repo)).packs_deleted >= 1
    assert (await check(await reopen(repo), read_data=True)).errors == []


async def test_the_generation_changes_with_every_published_state(repo: Repository, tmp_path: Path) -> None:
    source = build_tree(tmp_path / "src", {"a": random_bytes(20_000, 5)})
    await backup(repo, [str(source)])
    assert await repo.gc_generation() == []
    seen = []
    for _ in range(3):
        result = await prune(repo)
        assert result.generation == await repo.gc_generation() and len(result.generation) == 1
        seen.append(result.generation[0])
    assert len(set(seen)) == 3  # never the same name twice: a cache cannot mistake an old state for a new one
    assert not await mark_due(repo, 3600)
    await forget(repo, ["latest"])
    assert await mark_due(repo, 3600)  # a snapshot of the last mark is gone


# --- forgetting without the password --------------------------------------------------------------


async def test_a_forget_by_the_write_tier_is_a_note_a_deletion_by_hand_an_error(repo: Repository,
                                                                                tmp_path: Path) -> None:
    source = build_tree(tmp_path / "src", {"a": "1"})
    ids = []
    for i in range(3):
        (source / "a").write_text(str(i))
        ids.append((await backup(repo, [str(source)]))[0])
    wo = await write_only(repo)
    result = await forget_by_rules(wo, Rules(last=2), "Europe/Berlin")
    assert result.forgotten == [ids[0]]
    assert [d.reasons for d in result.decisions if d.keep] == [["last"], ["last"]]
    assert [p.name for p in (Path(repo.storage.location) / "forgets").iterdir()]
    checked = await check(await reopen(repo))
    assert checked.errors == [] and any("forgotten since without the password" in n and "keep-last 2" in n
                                        for n in checked.notes), checked.notes
    # A snapshot file deleted by someone without keys: no record explains it.
    (Path(repo.storage.location) / "snapshots" / ids[1]).unlink()
    checked = await check(await reopen(repo))
    assert any(ids[1][:8] in e and "no forget record" in e for e in checked.errors), checked.errors
    # The password holder endorses the present: the records have served their purpose.
    await (await reopen(repo)).endorse()
    assert not list((Path(repo.storage.location) / "forgets").iterdir())
    assert (await check(await reopen(repo))).errors == []


async def test_forget_by_rules_dry_run_forgets_nothing(repo: Repository, tmp_path: Path) -> None:
    source = build_tree(tmp_path / "src", {"a": "1"})
    for i in range(3):
        (source / "a").write_text(str(i))
        await backup(repo, [str(source)])
    result = await forget_by_rules(repo, Rules(last=1), dry_run=True)
    assert len(result.forgotten) == 2 and len(await repo.list_snapshots()) == 3
    assert len((await forget_by_rules(repo, Rules(), "UTC")).forgotten) == 0  # no rule: keep everything


# --- locations --------------------------------------------------------------------------------


async def test_init_refuses_a_folder_that_holds_something_else(tmp_path: Path) -> None:
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("mine")
    with pytest.raises(NotEmpty, match="not empty and not a TimeVault repository"):
        await new_repo(folder)
    assert sorted(os.listdir(folder)) == ["chapter1.tex"]
    half = tmp_path / "half"
    (half / "keys").mkdir(parents=True)
    (half / "keys" / ("ab" * 32)).write_text("{}")
    with pytest.raises(NotEmpty, match="incomplete TimeVault repository"):
        await new_repo(half)
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)  # empty folders hold nothing to lose
    repo = await Repository.init(LocalStorage(empty), PASSWORD, kdf=FAST_KDF)
    await repo.close()


def test_layout_names_only_the_formats_objects() -> None:
    h = "0123456789abcdef" * 4
    for name in ("config", f"keys/{h}", f"data/01/{h}", f"index/{h}", f"snapshots/{h}", f"references/{h}",
                 f"endorsements/{h}", f"forgets/{h}", f"gc/{h}", "locks/" + h[:32]):
        assert layout.is_object_name(name), name
    for name in ("config.bak", f"data/ff/{h}", f"data/01/{h}/x", "notes.txt", f"keys/{h[:-1]}", f"index/{h.upper()}",
                 "locks/" + h, f"photos/{h}", "data/01", "data"):
        assert not layout.is_object_name(name), name
    assert layout.is_temp_file(f"data/01/{h}.tmp-0123456789ab") and layout.is_temp_file("config.tmp-0123456789ab")
    assert not layout.is_temp_file("notes.txt.tmp-0123456789ab")
    assert layout.is_folder("data/01") and layout.is_folder("gc") and not layout.is_folder("photos")


# --- kill -9 in the middle of a prune -----------------------------------------------------------------

HOLDS = ["prune.repacked", "prune.marking", "prune.indexed", "prune.marked", "prune.sweeping", "prune.deleting"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("point", HOLDS)
async def test_kill_9_during_prune_loses_nothing(tmp_path: Path, point: str) -> None:
    repo = await new_repo(tmp_path / "repo")
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    source = build_tree(tmp_path / "src", {"keep.bin": random_bytes(300_000, 1), "v.bin": random_bytes(300_000, 2)})
    states = {}
    for i in range(3):
        (source / "v.bin").write_bytes(random_bytes(300_000, 10 + i))
        snapshot_id, _ = await backup(repo, [str(source)])
        states[snapshot_id] = tree_manifest(source)
    await prune(repo)  # one compacted index, so the next prune repacks and deletes
    first, second, third = list(states)
    await forget(repo, [first, second])
    await repo.close()

    hold = tmp_path / "held"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TIMEVAULT_")},
           "TIMEVAULT_TEST_HOLD": point, "TIMEVAULT_TEST_HOLD_FILE": str(hold)}
    exe = [str(TIMEVAULT)] if TIMEVAULT.exists() else [sys.executable, "-m", "timevault.cli.main"]
    command = [*exe, "repo", "prune", str(tmp_path / "repo"), "--password-file", str(pw)]
    proc = subprocess.Popen(  # noqa: ASYNC220 - a child we kill, not awaited output
        command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not hold.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"{point} never reached"
            await asyncio.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()

    # Killed: what the remaining snapshot needs is all there (a stale lock and garbage are fine).
    fresh = await reopen(tmp_path / "repo")
    checked = await check(fresh, read_data=True)
    assert checked.errors == [], (point, checked.errors)
    target = tmp_path / "after-kill"
    assert (await restore(fresh, third, str(target))).errors == []
    assert_manifests_equal(tree_manifest(restored_path(target, source)), states[third])
    # A new backup and a prune after it: both fine, and in the end the space is free.
    (source / "new.txt").write_text("after the crash")
    await backup(fresh, [str(source)])
    result = await prune(fresh, PruneOptions(orphan_age=0))
    assert result.packs_pending == 0
    final = await reopen(tmp_path / "repo")
    assert (await check(final, read_data=True)).errors == [] and (await check(final)).notes == []
    target = tmp_path / "final"
    assert (await restore(final, "latest", str(target))).errors == []
    assert_manifests_equal(tree_manifest(restored_path(target, source)), tree_manifest(source))
    assert not list((tmp_path / "repo" / "locks").iterdir())


# --- the command line ---------------------------------------------------------------------------------


def test_cli_forget_by_rules_and_prune_with_json(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    path = tmp_path / "repo"
    assert run_cli("repo", "init", path, "--password-file", pw).code == 0
    source = build_tree(tmp_path / "src", {"a": random_bytes(200_000, 1)})
    ids = []
    for i in range(3):
        (source / "a").write_bytes(random_bytes(200_000, 20 + i))
        result = run_cli("repo", "backup", path, source, "--json", "--password-file", pw)
        assert result.code == 0, result.stderr
        ids.append(json.loads(result.stdout)["id"])

    dry = run_cli("repo", "forget", path, "--keep-last", "1", "--dry-run", "--json", "--password-file", pw)
    assert dry.code == 0, dry.stderr
    outcome = json.loads(dry.stdout)
    assert outcome["dry_run"] and sorted(outcome["forgotten"]) == sorted(ids[:2])
    assert [k["id"] for k in outcome["kept"]] == [ids[2]] and outcome["kept"][0]["reasons"] == ["last"]
    assert outcome["rules"] == "keep-last 1"
    assert len(json.loads(run_cli("repo", "snapshots", path, "--json", "--password-file", pw).stdout)) == 3

    dry_prune = run_cli("repo", "prune", path, "--dry-run", "--json", "--password-file", pw)
    assert dry_prune.code == 0 and json.loads(dry_prune.stdout)["packs_deleted"] == 0

    done = run_cli("repo", "forget", path, "--keep-last", "1", "--json", "--password-file", pw)
    assert done.code == 0 and sorted(json.loads(done.stdout)["forgotten"]) == sorted(ids[:2])
    before = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    would = json.loads(run_cli("repo", "prune", path, "--dry-run", "--json", "--password-file", pw).stdout)
    assert would["dry_run"] and would["packs_deleted"] >= 2 and would["bytes_freed"] > 300_000
    pruned = run_cli("repo", "prune", path, "--json", "--password-file", pw)
    assert pruned.code == 0, pruned.stderr
    report = json.loads(pruned.stdout)
    assert report["packs_deleted"] == would["packs_deleted"] and report["bytes_freed"] > 300_000
    after = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    assert before - after > 300_000
    text = run_cli("repo", "prune", path, "--password-file", pw)
    assert text.code == 0 and "deleted 0 pack(s)" in text.stdout
    checked = run_cli("repo", "check", path, "--read-data", "--password-file", pw)
    assert checked.code == 0 and "no errors found" in checked.stdout

    both = run_cli("repo", "forget", path, ids[2], "--keep-last", "1", "--password-file", pw)
    assert both.code == 2 and "not both" in both.stderr
    neither = run_cli("repo", "forget", path, "--password-file", pw)
    assert neither.code == 2 and "nothing to forget" in neither.stderr
    bad = run_cli("repo", "forget", path, "--keep-within", "soon", "--password-file", pw)
    assert bad.code == 2 and "invalid duration" in bad.stderr
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x.txt").write_text("mine")
    refused = run_cli("repo", "init", busy, "--password-file", pw)
    assert refused.code == 2 and "not empty and not a TimeVault repository" in refused.stderr
    assert sorted(os.listdir(busy)) == ["x.txt"]
