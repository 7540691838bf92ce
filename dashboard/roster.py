"""The agent roster as the dashboard shows it, read from ``configs/agents.toml``.

The dashboard only needs each agent's id, code(s), strategy, dashboard port and
allocation, so it reads those few keys itself and never refuses to start over
the roster: a missing or broken file gives an empty roster and a reason the
page shows (``trader config check`` is where the roster is validated).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dashboard.state import RosterEntry

ALLOCATION_KEYS = ("allocation_won", "cash_won", "cash", "allocation")


def _entry(agent_id: str, raw: Mapping[str, Any]) -> RosterEntry:
    codes = raw.get("codes") or raw.get("code") or ()
    if isinstance(codes, str):
        codes = (codes,)
    allocation = next((raw[k] for k in ALLOCATION_KEYS if isinstance(raw.get(k), int)), 0)
    dp = raw.get("dp", 0)
    return RosterEntry(
        id=agent_id,
        codes=tuple(str(c) for c in codes),
        strategy=str(raw.get("strategy", "")),
        dp=dp if isinstance(dp, int) else 0,
        allocation_won=allocation,
    )


def parse_roster(data: Mapping[str, Any]) -> list[RosterEntry]:
    """Roster entries from parsed TOML: ``[[agents]]`` with ``id``, or ``[agents.<id>]`` tables."""
    agents = data.get("agents", data.get("agent", []))
    out: list[RosterEntry] = []
    if isinstance(agents, list):
        for raw in agents:
            if isinstance(raw, Mapping) and raw.get("id"):
                out.append(_entry(str(raw["id"]), raw))
    elif isinstance(agents, Mapping):
        for agent_id, raw in agents.items():
            if isinstance(raw, Mapping):
                out.append(_entry(str(raw.get("id", agent_id)), raw))
    return out


def load_roster(where: str | Path) -> tuple[list[RosterEntry], str]:
    """The roster in ``where`` (a roster file, or a folder holding ``agents.toml``) and a problem text ('' when read)."""
    path = Path(where)
    if path.is_dir():
        path = path / "agents.toml"
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return [], f"{path}: no roster file"
    except tomllib.TOMLDecodeError as exc:
        return [], f"{path}: not valid TOML: {exc}"
    return parse_roster(data), ""
