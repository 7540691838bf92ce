"""The XKRX calendar kept in the run directory, so a restart does not rebuild it (about a second of CPU, more under load).

``exchange_calendars`` computes the Korean holidays (lunar dates included) on
every build; the result is a few thousand (date, open, close) rows. The first
start writes them to ``<run_dir>/exchange/xkrx-calendar.json`` with the
library's version; later starts hand them to ``core.krx.preload_calendar``.
A missing, unreadable or stale file (another library version) is rebuilt.
"""

from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path

from core import krx

CALENDAR_FILE = "xkrx-calendar.json"


def _library_version() -> str:
    try:
        return metadata.version("exchange_calendars")
    except metadata.PackageNotFoundError:
        return ""


def load_calendar(folder: Path) -> str:
    """Load the XKRX calendar from the cache in ``folder`` or build (and cache) it; returns "cache" or "built"."""
    path = folder / CALENDAR_FILE
    version = _library_version()
    try:
        cached = json.loads(path.read_text())
        if cached["exchange_calendars"] == version and krx.preload_calendar(
                [(str(d), int(o), int(c)) for d, o, c in cached["rows"]]):
            return "cache"
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache yet, or one that cannot be used: build it again
    rows = krx.calendar_table()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"exchange_calendars": version, "rows": rows}, separators=(",", ":")))
    os.replace(tmp, path)  # a reader sees the old file or the whole new one
    return "built"
