"""Child processes that die with the process that started them, even when it is killed -9.

On Linux a child asks the kernel for a parent-death signal (``prctl(PR_SET_PDEATHSIG)``) between
fork and exec; the kernel then sends it SIGKILL the moment its parent goes, however the parent
went. A process group alone is not enough: nats-server runs in a session of its own (so that a
Ctrl-C reaches the services first), and `kill -9 <up>` signals no group at all.

The signal is tied to the *thread* that forked: children must be started from a thread that
lives as long as the process (the event loop's), never from a worker thread of a pool.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for `subprocess.Popen` / `asyncio.create_subprocess_exec`, or None when
    the platform has no parent-death signal (then `up` still stops its children on exit)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        # Looked up here, in the parent: the child between fork and exec only calls it.
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec
