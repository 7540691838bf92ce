"""The XKRX calendar kept on disk, so that no process builds it twice.

``exchange_calendars`` computes the Korean holidays (lunar dates included) on
every build: about a second of CPU, and pandas with it, some 70 MB of memory
for the life of the process. The result is a few thousand (date, open, close)
rows. The first process that needs them writes them, with the library's
version, to ``xkrx-calendar.json`` in the user's cache folder
(``$XDG_CACHE_HOME/trader``, by default ``~/.cache/trader``; ``TRADER_CACHE_DIR``
overrides it); every later one hands them to ``core.krx.preload_calendar`` and
never imports pandas for it. A missing, unreadable or stale file (another
library version, another range) is built again; a folder that cannot be written
leaves the calendar built in memory only.
"""

from __future__ import annotations

import contextlib
import json
import os
from importlib import metadata
from pathlib import Path

from core import krx

CALENDAR_FILE = "xkrx-calendar.json"


def cache_folder() -> Path:
    """Where the calendar is kept: ``TRADER_CACHE_DIR``, else ``$XDG_CACHE_HOME/trader``, else ``~/.cache/trader``."""
    explicit = os.environ.get("TRADER_CACHE_DIR", "")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME", "") or str(Path.home() / ".cache")
    return Path(base) / "trader"


def _library_version() -> str:
    try:
        return metadata.version("exchange_calendars")
    except metadata.PackageNotFoundError:
        return ""


def load_calendar(folder: Path | None = None) -> str:
    """Load the XKRX calendar from the cache in ``folder`` (default ``cache_folder()``) or build it there.

    Returns how: ``"cache"``, ``"built"``, or ``"built (not cached: <reason>)"``.
    """
    folder = cache_folder() if folder is None else folder
    path = folder / CALENDAR_FILE
    version = _library_version()
    try:
        cached = json.loads(path.read_text())
        if cached["exchange_calendars"] == version and krx.preload_calendar(
                [(str(d), int(o), int(c)) for d, o, c in cached["rows"]]):
            return "cache"
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache yet, or one that cannot be used: build it again
    rows = krx.build_calendar_table()
    krx.preload_calendar(rows)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"exchange_calendars": version, "rows": rows}, separators=(",", ":")))
        os.replace(tmp, path)  # a reader sees the old file or the whole new one
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return f"built (not cached: {exc})"
    return "built"
