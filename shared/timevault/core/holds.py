"""Hold points: let a test stop a process at a named moment, to kill it there (kill -9).

Tests of crash safety need the process stopped at an exact step (after the index was written,
before the state, …), which no timing can hit reliably. A process started with
``TIMEVAULT_TEST_HOLD=<point>`` and ``TIMEVAULT_TEST_HOLD_FILE=<path>`` that reaches `point`
writes `path` (the test waits for it) and then waits until it is killed. Without the variables
`hold` costs one dictionary lookup; nothing else reads them.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path


async def hold(point: str) -> None:
    """Stop here forever if the environment asks for `point` (tests only)."""
    if os.environ.get("TIMEVAULT_TEST_HOLD") != point:
        return
    path = os.environ.get("TIMEVAULT_TEST_HOLD_FILE")
    if path:
        Path(path).write_text(f"{os.getpid()} {point}\n")
    await asyncio.Event().wait()  # never set: the test kills the process here
