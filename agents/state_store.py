"""A strategy's saved state: the record, its msgpack form and its file.

The record (``SavedState``) says whose state it is (strategy name, state
version, a hash of the params), when it was saved (trading date and market
time), up to which bar of each code the strategy had seen, the context's
recent investor flows (recorded nowhere else), and the strategy's own plain
``save_state()`` dict. ``AgentContext.save_state`` makes it and
``AgentContext.resume`` takes it back; this module only encodes, checks and
stores it.

The file is ``<run_dir>/agents/<id>/strategy_state.msgpack``, written to a
temporary file and renamed into place, so a crash mid-write leaves the
previous state whole. A file that cannot be read, or a state from another
strategy, other params or another state version, is refused with the reason:
the agent starts fresh, alerts, and keeps the refused file aside
(``strategy_state.refused.msgpack``) for a person to look at.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import msgspec

if TYPE_CHECKING:
    from agents.strategy import Strategy, StrategyParams

STATE_FILE = "strategy_state.msgpack"
REFUSED_FILE = "strategy_state.refused.msgpack"
RECORD_FORMAT = 1  # the record's own layout; the strategy's part has its ``state_version``

# One flow report without its code: ts_ns, foreign, institution and individual net quantities, provisional
# (the figures are the day's running totals, as every venue reports them: a restored report says so).
FlowRow = tuple[int, int, int, int, bool]


class SavedState(msgspec.Struct, forbid_unknown_fields=True):
    """One strategy's state as saved, with what identifies it and how far it had seen the market."""

    strategy: str
    version: int
    params_hash: str
    trading_date: str
    saved_ns: int  # market time of the save
    through_ns: dict[str, int]  # per code: the time stamp of the last bar the strategy was given
    flows: dict[str, list[FlowRow]]  # per code: the context's recent investor-flow reports, oldest first
    state: dict[str, Any]
    record_format: int = RECORD_FORMAT
    parents: list[dict[str, Any]] = []  # the sliced orders being worked (``ParentOrder.to_plain``), of ``trading_date``


class StateFileError(ValueError):
    """Bytes that are not a saved strategy state (truncated, garbage, or another layout)."""


def params_hash(params: StrategyParams) -> str:
    """A short, stable fingerprint of a strategy's params (the same params give the same text)."""
    text = json.dumps(params.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode(saved: SavedState) -> bytes:
    """The record as msgpack; raises TypeError if the strategy's state is not plain data.

    The plain ``msgpack`` packer is strict where msgspec's is lenient (it would
    write a date as text, which comes back as text): what it packs comes back
    as it was.
    """
    try:
        return msgpack.packb(msgspec.structs.asdict(saved), use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"{saved.strategy}: state is not msgpack-able plain data: {exc}") from None


def decode(data: bytes) -> SavedState:
    """A record back from its msgpack bytes; raises StateFileError naming what is wrong."""
    try:
        saved = msgspec.msgpack.decode(data, type=SavedState)
    except msgspec.DecodeError as exc:
        raise StateFileError(f"not a saved strategy state: {exc}") from None
    if saved.record_format != RECORD_FORMAT:
        raise StateFileError(f"record format {saved.record_format}, this program reads {RECORD_FORMAT}")
    return saved


def mismatch(saved: SavedState, strategy: Strategy) -> str | None:
    """Why a saved state cannot be given to this strategy, or None if it is its own."""
    if saved.strategy != strategy.name:
        return f"saved by strategy {saved.strategy!r}, this agent runs {strategy.name!r}"
    if saved.version != strategy.state_version:
        return f"state version {saved.version}, {strategy.name} keeps version {strategy.state_version}"
    digest = params_hash(strategy.params)
    if saved.params_hash != digest:
        return f"saved with other params (hash {saved.params_hash}, now {digest})"
    return None


def state_path(run_path: Path, agent_id: str) -> Path:
    """Where an agent's strategy state lives."""
    return Path(run_path) / "agents" / agent_id / STATE_FILE


def write(path: Path, saved: SavedState) -> None:
    """Write the record atomically (temporary file, then rename)."""
    data = encode(saved)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read(path: Path) -> tuple[SavedState | None, str]:
    """The saved record and ``""``, or None and why not (``""`` when there is no file: a first start)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, ""
    except OSError as exc:
        return None, f"{path}: cannot read: {exc.strerror}"
    try:
        return decode(data), ""
    except StateFileError as exc:
        return None, f"{path}: {exc}"


def set_aside(path: Path) -> Path | None:
    """Move a refused state file out of the way (kept for a person), returning where it went."""
    if not path.exists():
        return None
    aside = path.with_name(REFUSED_FILE)
    os.replace(path, aside)
    return aside
