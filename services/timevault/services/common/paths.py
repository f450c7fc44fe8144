"""Where TimeVault keeps its local state: ``$XDG_DATA_HOME/timevault`` unless told otherwise."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "timevault"
