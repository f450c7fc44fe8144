"""Fewer cyclic garbage collections during a long job that makes millions of small objects.

CPython runs its cycle collector after every 700 new container objects (nodes, file records,
tuples), and each run walks the young objects; older generations, walked more rarely, hold every
object of the process. A restore of 200,000 files spent a fifth of its Python time there
(bench/README.md). Raising the first threshold makes those runs rare; the objects of such a job
are freed by reference counting, and cycles still go, later.

Process-wide (the collector has one setting): jobs that overlap share one raised setting, and
the previous one comes back when the last of them ends.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

JOB_THRESHOLDS = (100_000, 50, 100)

_lock = threading.Lock()
_running = 0
_saved: tuple[int, int, int] | None = None


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    global _running, _saved
    with _lock:
        if _running == 0:
            _saved = gc.get_threshold()
            gc.set_threshold(*JOB_THRESHOLDS)
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            if _running == 0 and _saved is not None:
                gc.set_threshold(*_saved)
                _saved = None
