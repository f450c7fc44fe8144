"""Creating a restore's files in writer processes, so that file creation uses every core.

A restore of many small files is bound by the kernel's work per file: create, write, set the
time, close; about 50 µs a file on ext4, four fifths of the restore. One writer thread does that
work one file at a time. Two writer threads gained nothing measurable: each needs the GIL back
after every system call, and the restore's other threads (walk, reads, decoding) hold it. Writer
processes have no GIL to share. Each writes the files of its own folders (every Nth folder in
walk order, so two never write into one folder), beside the others and beside the restore's
reading and decoding. Measured in bench/README.md ("Restore: writer processes").

A writer is this file run as a script (`python -I -S restore_writer.py FD`). It imports nothing
of TimeVault and holds no key: it gets the plaintext it writes and the descriptors of folders
that the restore created (private, inside the restore's temporary folder). It ends when its
socket closes, so a restore killed with -9 leaves no writer behind.

The protocol, over a Unix stream socket; every message is a kind byte and a little-endian u32
length, then the body:

  restore → writer
    F  count, slots (u32 each), with one descriptor each (SCM_RIGHTS): folders to write into
    C  count, slots: folders done; close them
    J  job id, count, pieces: write the pieces, in order, then answer R
  writer → restore
    R  job id, count, failures: (piece index u32, message length u16, UTF-8 message)

A piece is PIECE (its folder's slot, data length, name length, what to do, modes, owner, time,
offset), the name, the data. `apply_finish` is the one definition of how a finished file gets
its owner, mode and time, for the writers and for the restore's own thread alike.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import itertools
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

HEAD = struct.Struct("<cI")
JOB = struct.Struct("<II")
PIECE = struct.Struct("<IIHBxIIIIqQ")
FAILURE = struct.Struct("<IH")
# What a piece asks for (PIECE's flags).
NEW = 1  # create the file (it does not exist yet); else it was created empty, open it
FINISH = 2  # the file's last piece: set its owner, mode and time afterwards
CHOWN = 4
CHMOD = 8
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
OLD_FILE = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
# The kernel passes at most 253 descriptors in one message, and takes at most 1024 buffers in
# one call (IOV_MAX).
FDS_PER_MESSAGE = 200
IOV_MAX = 1024


def apply_finish(fd: int, flags: int, mode: int, uid: int, gid: int, mtime_ns: int) -> None:
    """Owner (CHOWN), mode (CHMOD, or after a chown, which clears set-id bits) and time of a
    completely written file, through its descriptor. Failures leave the file as created."""
    chowned = False
    if flags & CHOWN:
        try:
            os.fchown(fd, uid, gid)
            chowned = True
        except OSError:
            pass
    if flags & CHMOD or chowned:
        try:
            os.fchmod(fd, mode)
        except OSError:
            pass
    try:
        os.utime(fd, ns=(mtime_ns, mtime_ns))
    except OSError:
        pass


def write_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data = data[written:]
        offset += written


# ---- the writer --------------------------------------------------------------------------


def write_pieces(body: memoryview, folders: dict[int, int]) -> tuple[int, list[tuple[int, str]]]:
    """Write one job's pieces: its id, and the (piece index, message) of each that failed."""
    job_id, count = JOB.unpack_from(body, 0)
    pos = JOB.size
    failures = []
    for index in range(count):
        slot, size, name_length, flags, create_mode, mode, uid, gid, mtime_ns, offset = PIECE.unpack_from(body, pos)
        pos += PIECE.size
        name = bytes(body[pos : pos + name_length])
        pos += name_length
        data = body[pos : pos + size]
        pos += size
        try:
            folder = folders.get(slot)
            if folder is None:
                raise OSError(f"folder {slot} is not open in the writer")
            if flags & NEW:
                fd = os.open(name, NEW_FILE, create_mode, dir_fd=folder)
            else:
                fd = os.open(name, OLD_FILE, dir_fd=folder)
            try:
                write_all(fd, data, offset)
                if flags & FINISH:
                    apply_finish(fd, flags, mode, uid, gid, mtime_ns)
            finally:
                os.close(fd)
        except OSError as exc:
            failures.append((index, exc.strerror or str(exc)))
    return job_id, failures


def answer(job_id: int, failures: list[tuple[int, str]]) -> bytes:
    """The R message for a job."""
    parts = [JOB.pack(job_id, len(failures))]
    for index, message in failures:
        encoded = message.encode("utf-8", "replace")[:1000]
        parts.append(FAILURE.pack(index, len(encoded)) + encoded)
    reply = b"".join(parts)
    return HEAD.pack(b"R", len(reply)) + reply


class _Receiver:
    """Reads whole messages from the socket, collecting the descriptors that come with them.

    Each read fills one buffer that is kept and reused (grown for a larger message, never
    shrunk): a fresh buffer per message left glibc's heap at ~40 MiB per writer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fds: collections.deque[int] = collections.deque()
        self._buffer = bytearray(64 * 1024)

    def read(self, size: int) -> memoryview | None:
        """Exactly `size` bytes, valid until the next read; None at the end of the stream."""
        if len(self._buffer) < size:
            self._buffer = bytearray(size)
        buffer = memoryview(self._buffer)[:size]
        got = 0
        space = socket.CMSG_SPACE(FDS_PER_MESSAGE * 4)
        while got < size:
            n, ancillary, _flags, _address = self.sock.recvmsg_into([buffer[got:]], space, socket.MSG_CMSG_CLOEXEC)
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
                    self.fds.extend(fds)
            if n == 0:
                return None
            got += n
        return buffer


def serve(sock: socket.socket) -> None:
    """Answer the restore's messages until it closes the socket."""
    receiver = _Receiver(sock)
    folders: dict[int, int] = {}
    while (head := receiver.read(HEAD.size)) is not None:
        kind, length = HEAD.unpack(head)  # before the next read reuses the buffer
        body = receiver.read(length)
        if body is None:
            return
        if kind == b"J":
            sock.sendall(answer(*write_pieces(body, folders)))
        elif kind in (b"F", b"C"):
            (count,) = struct.unpack_from("<I", body, 0)
            for slot in struct.unpack_from(f"<{count}I", body, 4):
                if kind == b"F":
                    folders[slot] = receiver.fds.popleft()
                else:
                    with contextlib.suppress(KeyError, OSError):
                        os.close(folders.pop(slot))
        else:
            raise SystemExit(f"restore writer: unknown message {kind!r}")


# ---- the restore's side ------------------------------------------------------------------


class Job:
    """Pieces for one writer, built up by the restore and sent as one J message."""

    __slots__ = ("count", "parts")

    def __init__(self) -> None:
        self.parts: list[bytes | bytearray | memoryview] = []
        self.count = 0

    def add(
        self,
        slot: int,
        name: bytes,
        data: bytes | bytearray | memoryview,
        flags: int,
        create_mode: int,
        mode: int,
        uid: int,
        gid: int,
        mtime_ns: int,
        offset: int,
    ) -> None:
        self.parts.append(
            PIECE.pack(slot, len(data), len(name), flags, create_mode, mode, uid, gid, mtime_ns, offset)
        )
        self.parts.append(name)
        self.parts.append(data)
        self.count += 1


class _Process:
    def __init__(self, sock: socket.socket, child: subprocess.Popen[bytes]) -> None:
        self.sock = sock
        self.child = child
        self.sending = asyncio.Lock()
        self.answers: dict[int, asyncio.Future[list[tuple[int, str]]]] = {}
        self.gone: str | None = None
        self.reader: asyncio.Task[None] | None = None


class Writers:
    """The writer processes of one restore (`async with Writers(n) as writers`); OSError when
    one cannot be started."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._processes: list[_Process] = []
        self._next_job = 0

    async def open(self) -> Writers:
        """Start the writer processes (OSError when one cannot be started; none is left)."""
        try:
            for _ in range(self.count):
                self._processes.append(self._start())
        except BaseException:
            await self.close()
            raise
        for process in self._processes:
            process.reader = asyncio.create_task(self._read_answers(process))
        return self

    async def __aenter__(self) -> Writers:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @staticmethod
    def _start() -> _Process:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            child = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__), str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                close_fds=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        return _Process(ours, child)

    async def close(self) -> None:
        """End every writer: closing its socket ends it; one that does not is killed."""
        for process in self._processes:
            process.sock.close()
            if process.reader is not None:
                process.reader.cancel()
                with contextlib.suppress(BaseException):
                    await process.reader
        for process in self._processes:
            try:
                await asyncio.wait_for(asyncio.to_thread(process.child.wait), 5)
            except TimeoutError:
                process.child.kill()
                await asyncio.to_thread(process.child.wait)
        self._processes = []

    async def open_folders(self, writer: int, folders: list[tuple[int, int]]) -> None:
        """Hand (slot, descriptor) folders to a writer; its jobs may then write into them."""
        for start in range(0, len(folders), FDS_PER_MESSAGE):
            part = folders[start : start + FDS_PER_MESSAGE]
            body = struct.pack(f"<I{len(part)}I", len(part), *(slot for slot, _ in part))
            fds = array.array("i", (fd for _, fd in part))
            await self._send(self._processes[writer], [HEAD.pack(b"F", len(body)), body], fds)

    async def close_folders(self, writer: int, slots: Iterable[int]) -> None:
        listed = list(slots)
        body = struct.pack(f"<I{len(listed)}I", len(listed), *listed)
        await self._send(self._processes[writer], [HEAD.pack(b"C", len(body)), body])

    async def write(self, writer: int, job: Job) -> list[tuple[int, str]]:
        """Have a writer write a job's pieces; the (piece index, message) of each that failed."""
        process = self._processes[writer]
        self._next_job += 1
        job_id = self._next_job
        answer: asyncio.Future[list[tuple[int, str]]] = asyncio.get_running_loop().create_future()
        process.answers[job_id] = answer
        size = JOB.size + sum(len(part) for part in job.parts)
        try:
            await self._send(process, [HEAD.pack(b"J", size), JOB.pack(job_id, job.count), *job.parts])
            return await answer
        finally:
            process.answers.pop(job_id, None)
            if not answer.done():
                answer.cancel()
            elif not answer.cancelled():
                answer.exception()  # a writer gone fails the send and the answer: one is raised

    async def _send(
        self, process: _Process, parts: list[bytes | bytearray | memoryview], fds: array.array[int] | None = None
    ) -> None:
        """Send a message, given in parts, to a writer; the descriptors go with its first bytes.

        The parts go out as they are (scatter-gather, `sendmsg`), without joining them into a
        copy: a job's data is the decoded blobs themselves."""
        if process.gone is not None:
            raise ChildProcessError(process.gone)
        loop = asyncio.get_running_loop()
        views = collections.deque(memoryview(part).cast("B") for part in parts if len(part))
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)] if fds else []
        async with process.sending:
            try:
                while views:
                    try:
                        sent = process.sock.sendmsg(list(itertools.islice(views, IOV_MAX)), ancillary)
                    except BlockingIOError:
                        writable = loop.create_future()
                        loop.add_writer(process.sock, writable.set_result, None)
                        try:
                            await writable
                        finally:
                            loop.remove_writer(process.sock)
                        continue
                    ancillary = []
                    while sent:
                        first = views[0]
                        if sent < len(first):
                            views[0] = first[sent:]
                            break
                        sent -= len(first)
                        views.popleft()
            except OSError as exc:
                self._gone(process, f"a restore writer process ended ({exc.strerror or exc})")
                raise ChildProcessError(process.gone) from exc
            except BaseException:
                # Cut off in the middle of a message: the stream cannot be used again.
                self._gone(process, "a restore writer's stream was cut off")
                raise

    async def _read_answers(self, process: _Process) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                head = await self._receive(loop, process.sock, HEAD.size)
                kind, length = HEAD.unpack(head)
                body = await self._receive(loop, process.sock, length)
                job_id, count = JOB.unpack_from(body, 0)
                failures = []
                pos = JOB.size
                for _ in range(count):
                    index, size = FAILURE.unpack_from(body, pos)
                    pos += FAILURE.size
                    failures.append((index, bytes(body[pos : pos + size]).decode("utf-8", "replace")))
                    pos += size
                answer = process.answers.get(job_id)
                if kind == b"R" and answer is not None and not answer.done():
                    answer.set_result(failures)
        except (OSError, EOFError) as exc:
            code = process.child.poll()
            reason = f"exit status {code}" if code is not None else str(exc) or "end of stream"
            self._gone(process, f"a restore writer process ended ({reason})")

    @staticmethod
    async def _receive(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> memoryview:
        buffer = memoryview(bytearray(size))
        got = 0
        while got < size:
            n = await loop.sock_recv_into(sock, buffer[got:])
            if n == 0:
                raise EOFError("end of stream")
            got += n
        return buffer

    @staticmethod
    def _gone(process: _Process, reason: str) -> None:
        if process.gone is None:
            process.gone = reason
        for answer in process.answers.values():
            if not answer.done():
                answer.set_exception(ChildProcessError(process.gone))


class ThreadWriter:
    """Where no process can be started (`Writers` failed): the same jobs, written by `write_pieces`
    in one thread of the restore. Slower (the GIL), not different."""

    def __init__(self) -> None:
        self._folders: dict[int, int] = {}
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="restore-writer")

    async def close(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)

    async def open_folders(self, writer: int, folders: list[tuple[int, int]]) -> None:
        # The restore's own descriptors: used as they are, closed by the restore.
        self._folders.update(folders)

    async def close_folders(self, writer: int, slots: Iterable[int]) -> None:
        for slot in slots:
            self._folders.pop(slot, None)

    async def write(self, writer: int, job: Job) -> list[tuple[int, str]]:
        body = memoryview(b"".join([JOB.pack(0, job.count), *job.parts]))
        loop = asyncio.get_running_loop()
        _, failures = await loop.run_in_executor(self._thread, write_pieces, body, dict(self._folders))
        return failures


async def start(count: int) -> tuple[Writers | ThreadWriter, str | None]:
    """`count` writer processes, started, or where they cannot be started, a thread (and why).
    The caller closes them (`close`)."""
    writers = Writers(count)
    try:
        return await writers.open(), None
    except OSError as exc:
        return ThreadWriter(), f"restore writer processes could not be started ({exc.strerror or exc}): files were written by one thread"


if __name__ == "__main__":
    with socket.socket(fileno=int(sys.argv[1])) as _sock:
        _sock.setblocking(True)
        try:
            serve(_sock)
        except (BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
            pass
