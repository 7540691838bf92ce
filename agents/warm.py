"""What an agent reads at start, read once by the agents' parent and shared by every agent it forks.

An agent starts by reading the stack settings (``load_stack``: the stack file,
``.env`` and the ``TRADER_*`` environment), the instrument master and the whole
roster (``check_roster``). Built in each agent these are some 2.5 MB of its own
memory; built once in the parent (``agents.zygote``) before it freezes its heap,
they are shared copy-on-write.

An agent takes the parent's reading only when it would read the same: the
same working directory, the same ``TRADER_*`` environment, and each file the
reading came from (stack file, ``.env``, instrument master, roster) at the same
path, size and modification time. Anything else (a roster edited since the
parent started, an agent given another ``--roster`` or environment) and the
agent reads its own, as one started by hand does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.settings import RosterReport, check_roster
from core.config import PROJECT_ROOT, StackSettings, stack_config_path
from core.instruments import Instrument, load_instruments


@dataclass(frozen=True, slots=True)
class Reading:
    """The settings, instruments and roster check an agent starts from, with what they were read from."""

    inputs: tuple[Any, ...]
    settings: StackSettings
    instruments: dict[str, Instrument]
    report: RosterReport


_kept: Reading | None = None


def project_path(p: str) -> Path:
    path = Path(p)
    return path if path.is_absolute() else PROJECT_ROOT / path


def inputs(settings: StackSettings, roster: str | None = None) -> tuple[Any, ...]:
    """What a start-up reading depends on: cwd, the TRADER_* environment, and its files' path, size and mtime."""
    files = (stack_config_path(), Path.cwd() / ".env", project_path(settings.market.instruments_file),
             project_path(roster or settings.roster_file))
    return (os.getcwd(), tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("TRADER_"))),
            tuple(_stat(p) for p in files))


def read(settings: StackSettings, roster: str | None = None) -> Reading:
    """Read the instrument master and check the roster (OSError, InstrumentError as ``load_instruments``)."""
    stamp = inputs(settings, roster)
    instruments = load_instruments(project_path(settings.market.instruments_file))
    report = check_roster(project_path(roster or settings.roster_file), instruments, settings)
    return Reading(stamp, settings, instruments, report)


def keep(reading: Reading) -> None:
    """In the parent: the reading its agents may take."""
    global _kept
    _kept = reading


def take(roster: str | None = None) -> Reading | None:
    """In an agent: the parent's reading if it is what this agent would read now, else None."""
    kept = _kept
    if kept is None or inputs(kept.settings, roster) != kept.inputs:
        return None
    return kept


def _stat(p: Path) -> tuple[str, int, int]:
    try:
        st = p.stat()
    except OSError:
        return (str(p), -1, -1)
    return (str(p), st.st_size, st.st_mtime_ns)
