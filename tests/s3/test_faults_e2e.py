"""Backups and restores to S3 over a bad network, and what a failed backup leaves behind.

The CLI runs as a subprocess whose S3 endpoint is the fault proxy (tests/s3/proxy.py) in front
of moto: it answers 500/503, delays, and cuts connections at scripted requests. Cases the wire
cannot express (the write happened but its reply was lost) use `FaultyStorage` around a real
`S3Storage`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.storage.fault_proxy import Rule
from tests.support.faulty_storage import Fault, FaultyStorage, transient
from timevault.core.archiver import backup
from timevault.core.checker import check
from timevault.core.repository import Repository
from timevault.core.restorer import restore
from timevault.core.storage import LimitedStorage, RetryingStorage, StorageError, open_location
from timevault.core.storage.s3 import S3Options, S3Storage

from .conftest import (
    FAST_KDF,
    PASSWORD,
    Machine,
    MiB,
    assert_same_tree,
    build_source,
    error_lines,
    s3_location,
    stored,
    text_bytes,
)
from .proxy import CountingProxy, LateRule

pytestmark = [pytest.mark.s3, pytest.mark.timeout(120)]

PACK = r"/data/[0-9a-f]{2}/[0-9a-f]{64}$"  # the path of a pack object in a request
LIST = r"[?&]list-type=2"


async def init_repo(location: str) -> None:
    """A repository made in-process (cheap KDF); the CLI opens it like any other."""
    repo = await Repository.init(open_location(location), PASSWORD, kdf=FAST_KDF)
    await repo.close()


def assert_all_fired(rules: list[Rule]) -> None:
    unfired = [r for r in rules if r.fired < (r.times or 1)]
    assert not unfired, f"rules that never fired: {unfired}"


async def test_transient_faults_during_backup_and_restore(
    moto_endpoint: str,
    s3_bucket: str,
    prefix: str,
    direct_s3: S3Storage,
    proxy: CountingProxy,
    new_machine: Callable[[str], Machine],
    tmp_path: Path,
) -> None:
    await init_repo(s3_location(moto_endpoint, s3_bucket, prefix))
    via_proxy = s3_location(proxy.url, s3_bucket, prefix)
    source = build_source(tmp_path / "src", seed=3)
    laptop = new_machine("laptop")

    during_backup = [
        Rule("drop_mid", method="GET", path=r"/keys/"),
        Rule("error", method="GET", path=LIST, status=503, code="SlowDown"),
        Rule("error", method="PUT", path=r"/locks/", status=500, code="InternalError"),
        Rule("error", method="PUT", path=PACK, status=503, code="SlowDown"),
        Rule("drop_before", method="PUT", path=PACK),
        Rule("error", method="PUT", path=r"/index/", status=500, code="InternalError"),
        Rule("delay", method="PUT", path=r"/index/", delay=1.0),
        Rule("drop_before", method="PUT", path=r"/snapshots/"),
    ]
    proxy.add(*during_backup)
    result = (await laptop.run("repo", "backup", via_proxy, source, "--json")).ok()
    assert_all_fired(during_backup)
    snapshot = result.json()
    assert "retrying" in result.stderr  # the retries are visible, not silent
    packs = {name for name in await stored(direct_s3, "data/")}
    assert len(packs) >= 2
    # Every pack went up once more for each fault injected into pack uploads, and no more.
    assert proxy.count("PUT", PACK) == len(packs) + 2

    proxy.reset()
    during_restore = [
        Rule("error", method="GET", path=r"/snapshots/", status=500, code="InternalError"),
        Rule("delay", method="GET", path=r"/index/", delay=1.0),
        Rule("drop_mid", method="GET", path=PACK),
        Rule("error", method="GET", path=PACK, status=503, code="SlowDown"),
        Rule("drop_before", method="GET", path=PACK),
        Rule("error", method="GET", path=PACK, status=500, code="InternalError"),
    ]
    proxy.add(*during_restore)
    target = tmp_path / "restored"
    desktop = new_machine("desktop")
    restored = await desktop.run("repo", "restore", via_proxy, snapshot["id"], "--target", target, "--json")
    restored.ok()
    assert_all_fired(during_restore)
    assert json.loads(restored.stdout)["errors"] == []
    assert_same_tree(source, target)


async def test_permanent_failure_leaves_no_snapshot_and_next_backup_reuses_packs(
    moto_endpoint: str,
    s3_bucket: str,
    prefix: str,
    direct_s3: S3Storage,
    proxy: CountingProxy,
    new_machine: Callable[[str], Machine],
    tmp_path: Path,
) -> None:
    direct = s3_location(moto_endpoint, s3_bucket, prefix)
    via_proxy = s3_location(proxy.url, s3_bucket, prefix)
    await init_repo(direct)
    # ~30 MiB: two data packs of 12+ MiB each. Which of them reaches the proxy first depends on
    # timing (the last one is sealed while the first is still being built), so either may be the
    # one that gets through; both are big enough for the reuse to show in the numbers.
    source = build_source(tmp_path / "src", seed=4, big_mib=28)
    laptop = new_machine("laptop")

    # The first pack goes up; every pack upload after it fails with 500, forever.
    broken = LateRule("error", method="PUT", path=PACK, status=500, code="InternalError", times=None, skip=1)
    proxy.add(broken)
    failed = await laptop.run("repo", "backup", via_proxy, source, "--json")
    assert failed.code == 1, failed
    assert json.loads(failed.stdout)["error"]["code"] == "storage"  # --json: the error, not a snapshot
    assert "Traceback" not in failed.stderr
    errors = error_lines(failed.stderr)
    assert len(errors) == 1, failed.stderr
    assert failed.stderr.rstrip().splitlines()[-1] == errors[0]  # the last word is the error
    assert errors[0].startswith(f"timevault: error: s3://{s3_bucket}/{prefix}: put data/"), errors[0]
    assert "failed after 5 attempts: 500 InternalError" in errors[0]
    assert "endpoint" not in errors[0]
    # Anything else on stderr is a retry notice naming the location and the operation.
    for line in failed.stderr.splitlines():
        assert line == errors[0] or (
            line.startswith(f"timevault: warning: s3://{s3_bucket}/{prefix}: put data/") and "retrying" in line
        )
    assert broken.fired >= 5

    after_failure = await stored(direct_s3)
    assert not any(name.startswith(("snapshots/", "locks/")) for name in after_failure)
    uploaded = {name: size for name, size in after_failure.items() if name.startswith("data/")}
    assert len(uploaded) == 1, uploaded
    ((first_pack, first_pack_size),) = uploaded.items()
    assert first_pack_size > 12 * MiB

    assert (await laptop.run("repo", "snapshots", direct, "--json")).ok().json() == []
    checked = (await laptop.run("repo", "check", direct)).ok()
    assert "0 snapshots, 1 packs" in checked.stdout and "no errors found" in checked.stdout

    # The fault is gone: the next backup finishes, and does not upload the first pack again.
    proxy.reset()
    second = (await laptop.run("repo", "backup", via_proxy, source, "--json")).ok().json()
    assert proxy.count("PUT", first_pack) == 0
    assert second["parent"] is None and second["size"] > 29 * MiB
    assert second["added_size"] < second["size"] - 0.9 * first_pack_size, second
    assert second["added_size"] > 1 * MiB  # the rest of the data did have to go up
    assert [name for name in await stored(direct_s3, "snapshots/")] == [f"snapshots/{second['id']}"]

    target = tmp_path / "restored"
    (await new_machine("desktop").run("repo", "restore", direct, "latest", "--target", target)).ok()
    assert_same_tree(source, target)


def faulty_location(
    moto_endpoint: str, bucket: str, prefix: str, faults: list[Fault]
) -> tuple[LimitedStorage, FaultyStorage]:
    """What open_location builds, Limited(Retrying(S3)), with FaultyStorage right around S3."""
    faulty = FaultyStorage(
        S3Storage(S3Options(bucket, prefix, endpoint=moto_endpoint, path_style=True)), faults
    )
    retrying = RetryingStorage(faulty, attempts=3, base_delay=0.01, max_delay=0.05)
    return LimitedStorage(retrying, 4), faulty


async def test_lost_replies_after_writes_are_harmless(
    moto_endpoint: str, s3_bucket: str, prefix: str, tmp_path: Path
) -> None:
    """The object was written but the answer never came: the retried put must not duplicate it."""
    source = build_source(tmp_path / "src", seed=5, big_mib=17)
    faults = [
        Fault("put", name=r"^data/", after=True, error=transient),
        Fault("put", name=r"^index/", after=True, error=transient),
        Fault("put", name=r"^snapshots/", after=True, error=transient),
        Fault("list", name=r"^index/", after=True, error=transient),  # a listing cut short
        Fault("get", name=r"^data/", after=True, error=transient, times=2),
    ]
    storage, faulty = faulty_location(moto_endpoint, s3_bucket, prefix, faults)
    repo = await Repository.init(storage, PASSWORD, kdf=FAST_KDF)
    try:
        await backup(repo, [str(source)])
        await backup(repo, [str(source)])  # lists the index: the cut listing is resumed
        snapshots = await repo.list_snapshots()
        assert len(snapshots) == 2  # one per backup, though a snapshot put was "lost"
        target = tmp_path / "restored"
        result = await restore(repo, snapshots[0][0], str(target))
        assert result.errors == []
        faulty.assert_all_fired()
        checked = await check(repo, read_data=True)
        assert checked.errors == [] and checked.notes == []
    finally:
        await repo.close()
    assert_same_tree(source, target)


async def test_failed_snapshot_write_leaves_everything_reusable(
    moto_endpoint: str, s3_bucket: str, prefix: str, direct_s3: S3Storage, tmp_path: Path
) -> None:
    """Every pack and index went up, then the snapshot could not be written: the next backup of
    the same tree has nothing left to upload but the snapshot."""
    source = build_source(tmp_path / "src", seed=6, big_mib=17)
    storage, faulty = faulty_location(
        moto_endpoint, s3_bucket, prefix, [Fault("put", name=r"^snapshots/", error=transient, times=None)]
    )
    repo = await Repository.init(storage, PASSWORD, kdf=FAST_KDF)
    try:
        with pytest.raises(StorageError, match=r"put snapshots/[0-9a-f]+: failed after 3 attempts"):
            await backup(repo, [str(source)])
        assert faulty.calls["put"] >= 3
    finally:
        await repo.close()
    assert not any(name.startswith(("snapshots/", "locks/")) for name in await stored(direct_s3))
    packs_before = await stored(direct_s3, "data/")

    repo = await Repository.open(open_location(s3_location(moto_endpoint, s3_bucket, prefix)), PASSWORD)
    try:
        checked = await check(repo)
        assert checked.errors == [] and checked.snapshots == 0
        _, snapshot = await backup(repo, [str(source)])
        assert snapshot.stats.size > 17 * MiB
        # No data went up again. A folder listing may: the trees record the source's parent
        # folders (/tmp, …), whose times change whenever anything else on the machine writes there.
        assert snapshot.stats.added_size < 4096, snapshot.stats
        assert await stored(direct_s3, "data/") == packs_before
        target = tmp_path / "restored"
        assert (await restore(repo, "latest", str(target))).errors == []
    finally:
        await repo.close()
    assert_same_tree(source, target)


async def test_concurrency_parameter_bounds_requests_in_flight(
    moto_endpoint: str,
    s3_bucket: str,
    prefix: str,
    direct_s3: S3Storage,
    proxy: CountingProxy,
    new_machine: Callable[[str], Machine],
    tmp_path: Path,
) -> None:
    direct = s3_location(moto_endpoint, s3_bucket, prefix)
    # A first, small backup in-process, so the repository has several index files to load.
    small = tmp_path / "small"
    for i in range(4):
        (small / f"f{i}").mkdir(parents=True)
        (small / f"f{i}" / "data.txt").write_bytes(text_bytes(50_000, i))
    repo = await Repository.init(open_location(direct), PASSWORD, kdf=FAST_KDF)
    try:
        await backup(repo, [str(small)])
    finally:
        await repo.close()

    source = build_source(tmp_path / "src", seed=8)
    laptop = new_machine("laptop")
    bounded = s3_location(proxy.url, s3_bucket, prefix, concurrency=2)
    proxy.reset_peak()
    (await laptop.run("repo", "backup", bounded, source)).ok()
    backup_peak = proxy.peak
    assert proxy.count("PUT", PACK) >= 3
    assert backup_peak == 2, f"{backup_peak} requests were in flight at once during the backup"

    proxy.reset_peak()
    proxy.requests.clear()
    target = tmp_path / "restored"
    (await laptop.run("repo", "restore", bounded, "latest", "--target", target)).ok()
    assert proxy.peak <= 2, f"{proxy.peak} requests were in flight at once during the restore"
    # Each pack is read at most once: trees come from whole tree packs, not one request per folder.
    packs = await stored(direct_s3, "data/")
    assert proxy.count("GET", PACK) <= len(packs), (proxy.count("GET", PACK), len(packs))
    assert_same_tree(source, target)

    # The control: with room for more, the same proxy does see more at once.
    proxy.reset_peak()
    (await laptop.run("repo", "check", s3_location(proxy.url, s3_bucket, prefix, concurrency=8))).ok()
    assert proxy.peak > 2
