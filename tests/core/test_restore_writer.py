"""The restore's writer processes (`core.restore_writer`): the pieces they are sent become exactly
the files asked for, a failure is answered per piece, a writer that dies fails the restore
cleanly, and no writer outlives its restore, even one killed with -9."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from timevault.core import restore_writer
from timevault.core.archiver import backup
from timevault.core.errors import RestoreError
from timevault.core.repository.repo import Repository
from timevault.core.restore_writer import CHMOD, FINISH, JOB, NEW, Job, Writers, write_pieces
from timevault.core.restorer import WRITER_PROCESSES, restore

from .conftest import PASSWORD, TIMEVAULT, build_tree, random_bytes, restore_and_compare, tree_manifest

MTIME = 1_600_000_000_123_456_789


def _add(job: Job, slot: int, name: bytes, data: bytes, flags: int, offset: int = 0, mode: int = 0o640) -> None:
    job.add(slot, name, data, flags, 0o600, mode, os.getuid(), os.getgid(), MTIME, offset)


def _run(job: Job, folders: dict[int, int], job_id: int = 7) -> list[tuple[int, str]]:
    body = memoryview(b"".join([JOB.pack(job_id, job.count), *job.parts]))
    answered_id, failures = write_pieces(body, folders)
    assert answered_id == job_id
    return failures


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    files=st.lists(
        st.tuples(st.binary(max_size=3000), st.integers(min_value=1, max_value=4), st.randoms(use_true_random=False)),
        min_size=1,
        max_size=12,
    )
)
def test_pieces_become_the_files_asked_for(tmp_path_factory: pytest.TempPathFactory, files) -> None:
    folder = tmp_path_factory.mktemp("pieces")
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        job = Job()
        for number, (data, parts, rng) in enumerate(files):
            name = f"f{number}".encode()
            if parts == 1 or len(data) < parts:  # one piece: the writer creates the file
                _add(job, 1, name, data, NEW | FINISH | CHMOD)
                continue
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=fd))  # as `_make` does
            cuts = sorted(rng.sample(range(1, len(data)), parts - 1))
            spans = list(zip([0, *cuts], [*cuts, len(data)], strict=True))
            rng.shuffle(spans)  # blobs arrive in stored order, not file order
            for k, (start, end) in enumerate(spans):
                _add(job, 1, name, data[start:end], FINISH | CHMOD if k == len(spans) - 1 else 0, start)
        assert _run(job, {1: fd}) == []
        for number, (data, _, _) in enumerate(files):
            path = folder / f"f{number}"
            assert path.read_bytes() == data
            st_ = path.stat()
            assert (st_.st_mtime_ns, st_.st_mode & 0o7777) == (MTIME, 0o640)
    finally:
        os.close(fd)


def test_a_failed_piece_is_answered_and_the_others_are_written(tmp_path: Path) -> None:
    (tmp_path / "taken").write_bytes(b"already here")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        job = Job()
        _add(job, 1, b"taken", b"new", NEW | FINISH)  # O_EXCL: never over what is there
        _add(job, 1, b"fine", b"ok", NEW | FINISH)
        _add(job, 9, b"nowhere", b"x", NEW | FINISH)  # a folder the writer was not given
        _add(job, 1, b"missing", b"x", FINISH)  # reopened, but never created
        failures = dict(_run(job, {1: fd}))
    finally:
        os.close(fd)
    assert sorted(failures) == [0, 2, 3]
    assert "exists" in failures[0] and "not open" in failures[2] and "No such file" in failures[3]
    assert (tmp_path / "taken").read_bytes() == b"already here"
    assert (tmp_path / "fine").read_bytes() == b"ok"
    assert not (tmp_path / "nowhere").exists()


async def test_writer_processes_write_their_own_folders_and_end_with_their_socket(tmp_path: Path) -> None:
    folders = [tmp_path / "a", tmp_path / "b"]
    fds = []
    for folder in folders:
        folder.mkdir()
        fds.append(os.open(folder, os.O_RDONLY | os.O_DIRECTORY))
    try:
        async with Writers(2) as writers:
            children = [process.child for process in writers._processes]
            for writer, fd in enumerate(fds):
                await writers.open_folders(writer, [(writer + 10, fd)])
            jobs = []
            for writer in range(2):
                job = Job()
                for k in range(50):
                    _add(job, writer + 10, f"{k}".encode(), random_bytes(k * 37, writer * 100 + k), NEW | FINISH)
                jobs.append(writers.write(writer, job))
            assert await asyncio.gather(*jobs) == [[], []]
            await writers.close_folders(0, [10])
            job = Job()
            _add(job, 10, b"late", b"x", NEW | FINISH)  # its folder was closed
            assert [index for index, _ in await writers.write(0, job)] == [0]
    finally:
        for fd in fds:
            os.close(fd)
    assert [child.poll() for child in children] == [0, 0]
    for writer, folder in enumerate(folders):
        assert sorted(os.listdir(folder), key=int) == [str(k) for k in range(50)]
        assert (folder / "49").read_bytes() == random_bytes(49 * 37, writer * 100 + 49)


async def test_a_writer_that_dies_fails_its_jobs(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        async with Writers(2) as writers:
            await writers.open_folders(1, [(1, fd)])
            writers._processes[1].child.kill()
            job = Job()
            _add(job, 1, b"f", b"x" * 1_000_000, NEW | FINISH)
            with pytest.raises(ChildProcessError, match="restore writer"):
                await asyncio.wait_for(writers.write(1, job), 10)
            with pytest.raises(ChildProcessError):  # and every later one, at once
                await writers.write(1, job)
    finally:
        os.close(fd)


async def test_folders_beyond_one_message_and_a_full_socket(tmp_path: Path) -> None:
    """More folders than one message carries (`FDS_PER_MESSAGE`), handed over while a job waits
    for a writer that is stopped (its socket full): every folder arrives, and a file in each is
    written."""
    count = 2 * restore_writer.FDS_PER_MESSAGE + 50
    fds = []
    for k in range(count):
        (tmp_path / f"d{k}").mkdir()
        fds.append(os.open(tmp_path / f"d{k}", os.O_RDONLY | os.O_DIRECTORY))
    try:
        async with Writers(1) as writers:
            child = writers._processes[0].child
            await writers.open_folders(0, [(0, fds[0])])
            big = Job()
            _add(big, 0, b"big", random_bytes(8 << 20, 1), NEW | FINISH)
            os.kill(child.pid, signal.SIGSTOP)
            try:
                sending = asyncio.create_task(writers.write(0, big))
                opening = asyncio.create_task(writers.open_folders(0, list(enumerate(fds))[1:]))
                await asyncio.sleep(0.3)
                assert not sending.done() and not opening.done()  # the socket is full
            finally:
                os.kill(child.pid, signal.SIGCONT)
            assert await asyncio.wait_for(sending, 30) == []
            await asyncio.wait_for(opening, 30)
            job = Job()
            for k in range(1, count):
                _add(job, k, b"f", f"{k}".encode(), NEW | FINISH)
            assert await asyncio.wait_for(writers.write(0, job), 30) == []
    finally:
        for fd in fds:
            os.close(fd)
    assert (tmp_path / "d0" / "big").read_bytes() == random_bytes(8 << 20, 1)
    assert all((tmp_path / f"d{k}" / "f").read_text() == f"{k}" for k in range(1, count))


class _FullOnce:
    """The writer's real socket, but the first send that carries descriptors finds it full
    (a full socket cannot be had on demand at the moment descriptors go out)."""

    def __init__(self, sock: object) -> None:
        self._sock = sock
        self.refused = 0

    def sendmsg(self, buffers: list[memoryview], ancillary: list[tuple[int, int, object]]) -> int:
        if ancillary and not self.refused:
            self.refused += 1
            raise BlockingIOError
        return self._sock.sendmsg(buffers, ancillary)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)


async def test_descriptors_go_with_the_message_when_it_is_sent_again(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        async with Writers(1) as writers:
            process = writers._processes[0]
            full = _FullOnce(process.sock)
            process.sock = full  # type: ignore[assignment]
            await asyncio.wait_for(writers.open_folders(0, [(3, fd)]), 10)
            assert full.refused == 1
            job = Job()
            _add(job, 3, b"after", b"written", NEW | FINISH)
            assert await asyncio.wait_for(writers.write(0, job), 10) == []
            process.sock = full._sock  # type: ignore[assignment]
    finally:
        os.close(fd)
    assert (tmp_path / "after").read_bytes() == b"written"


def _tree(root: Path, folders: int = 12, files: int = 20) -> Path:
    return build_tree(
        root, {f"d{i:02}/f{j:02}": random_bytes(300 + j, i * files + j) for i in range(folders) for j in range(files)}
    )


async def test_a_restore_whose_writer_dies_fails_cleanly(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _tree(tmp_path / "src")
    snapshot_id, _ = await backup(repo, [str(src)])
    real_write = Writers.write

    async def write_after_a_death(self: Writers, writer: int, job: Job) -> list[tuple[int, str]]:
        process = self._processes[writer]
        process.child.kill()  # a real writer, really killed: the moment is the test's
        await asyncio.to_thread(process.child.wait)
        return await real_write(self, writer, job)

    monkeypatch.setattr(Writers, "write", write_after_a_death)
    target = tmp_path / "out"
    with pytest.raises(RestoreError, match="restore writer process ended"):
        await asyncio.wait_for(restore(repo, snapshot_id, str(target)), 60)
    assert not target.exists() and not [name for name in os.listdir(tmp_path) if ".restore-" in name]
    monkeypatch.setattr(Writers, "write", real_write)
    await restore_and_compare(repo, snapshot_id, target, tree_manifest(src), src)  # the next one works


async def test_without_processes_one_thread_writes_the_same_files(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _tree(tmp_path / "src", folders=4, files=5)
    snapshot_id, _ = await backup(repo, [str(src)])
    monkeypatch.setattr(restore_writer.sys, "executable", str(tmp_path / "no-such-python"))
    target = tmp_path / "out"
    result = await restore(repo, snapshot_id, str(target))
    assert result.errors == [] and any("one thread" in note for note in result.notes)
    await restore_and_compare(repo, snapshot_id, tmp_path / "again", tree_manifest(src), src)


def _writer_children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:  # the restore has ended
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children = f.read().split()
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
        for child in children:
            try:
                with open(f"/proc/{child}/cmdline", "rb") as cmd:
                    if b"restore_writer.py" in cmd.read():
                        found.append(int(child))
            except FileNotFoundError:
                pass
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_writers_do_not_outlive_a_restore_killed_with_9(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", folders=60, files=200)
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    exe = [str(TIMEVAULT)] if TIMEVAULT.exists() else [sys.executable, "-m", "timevault.cli.main"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEVAULT_")}
    repo_path = tmp_path / "repo"
    for args in (["init", repo_path], ["backup", repo_path, src]):
        subprocess.run([*exe, "repo", *map(str, args), "--password-file", str(pw)], env=env, check=True,
                       capture_output=True, timeout=120)
    target = tmp_path / "out"
    proc = subprocess.Popen(
        [*exe, "repo", "restore", str(repo_path), "latest", "--target", str(target), "--password-file", str(pw)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        writers: list[int] = []
        while not writers and proc.poll() is None and time.monotonic() < deadline:
            writers = _writer_children(proc.pid)
            time.sleep(0.005)
        assert writers, "the restore ended before its writers were seen"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in writers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in writers)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not target.exists()  # the restore never got to move its folder into place


def test_a_writer_started_alone_ends_at_the_end_of_its_socket() -> None:
    import socket

    ours, theirs = socket.socketpair()
    with ours, theirs:
        child = subprocess.Popen(
            [sys.executable, "-I", "-S", restore_writer.__file__, str(theirs.fileno())], pass_fds=(theirs.fileno(),)
        )
        theirs.close()
        ours.sendall(bytes(random.Random(1).randrange(256) for _ in range(3)))  # a cut-off message
        ours.close()
        assert child.wait(timeout=10) == 0


async def test_a_restore_runs_its_writers_once_and_leaves_none(repo: Repository, tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", folders=6, files=10)
    snapshot_id, _ = await backup(repo, [str(src)])
    seen: list[int] = []
    result = await restore(
        repo, snapshot_id, str(tmp_path / "out"), progress=lambda _: seen.append(len(_writer_children(os.getpid())))
    )
    assert result.errors == [] and result.notes == []
    assert seen and max(seen) == WRITER_PROCESSES
    assert _writer_children(os.getpid()) == []
