"""The live fundamentals a valuation strategy reads: EPS, BPS and DPS in force for a code, and where they came from.

The context's ``fundamentals(code)`` gives the figures of the latest
earnings announcement heard (``md.fund``), falling back to the instrument
master's from the start; a context without it is read through its
instrument record (``instrument(code)``: EPS, BPS, dividend). PER = price / EPS and PBR = price / BPS are taken from
the live price and these figures, so both move with every price and every
announcement.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from agents.context import AgentContext


class Fundamentals(NamedTuple):
    """Per-share figures in won in force for a code, with the day they took force (YYYYMMDD, "" from the master)."""

    eps: int
    bps: int
    dps: int
    effective_date: str
    source: str


def live_fundamentals(ctx: AgentContext, code: str) -> Fundamentals | None:
    """The figures in force for ``code`` now, or None when none are known."""
    read = getattr(ctx, "fundamentals", None) or getattr(ctx, "instrument", None)
    record = read(code) if read is not None else None
    if record is None:
        return None
    dps = getattr(record, "dps", None)
    return Fundamentals(int(record.eps), int(record.bps), int(dps if dps is not None else getattr(record, "dividend", 0)),
                        str(getattr(record, "effective_date", "")), str(getattr(record, "source", "master")))
