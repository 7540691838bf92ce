"""The limits an agent trades within, as the risk guard will apply them, and how large one order may be.

The numbers are not copied: they are the risk guard's own, read from the same
``configs/risk.toml`` (``core.risk_limits.RiskLimits.for_agent``: the firm's
defaults with the agent's overrides), so an agent and the guard never disagree
on what one order may be.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from core.risk_limits import AgentLimits, RiskLimits, load_risk_limits


class Limits(NamedTuple):
    """What a strategy may do right now: per-order limits, open-order room, cash and shares per code."""

    max_qty_per_order: int
    max_notional_per_order_won: int
    max_open_orders: int
    open_orders: int
    cash_won: int  # available: cash less what open buys hold
    sellable: dict[str, int]  # per code: held less open sells
    max_position_qty: int
    max_position_notional_won: int

    @property
    def open_order_room(self) -> int:
        """How many more orders may be working at once."""
        return max(0, self.max_open_orders - self.open_orders)


def agent_limits(agent_id: str, risk_file: str | Path | None = None) -> AgentLimits:
    """The merged limits of one agent from the risk file (defaults if there is none); raises ConfigError if it is broken."""
    if risk_file is not None and Path(risk_file).exists():
        return load_risk_limits(risk_file).for_agent(agent_id)
    return RiskLimits().for_agent(agent_id)


def max_qty_at(limits: AgentLimits, unit_price_won: int) -> int:
    """The most shares one order valued at ``unit_price_won`` a share may have under the per-order limits."""
    if unit_price_won <= 0:
        return limits.max_qty_per_order
    return min(limits.max_qty_per_order, limits.max_notional_per_order_won // unit_price_won)
