"""Risk limits: ``configs/risk.toml`` as validated settings, per agent with its overrides.

Part of the risk checks (``core.risk``), which re-exports these names.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from core.config import ConfigError

PPM = 1_000_000


class TradingState(StrEnum):
    """What the firm may do: trade, only reduce exposure, or nothing new."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OrderLimits(_Section):
    """Limits on one order."""

    max_qty: int = Field(default=20_000, gt=0)
    max_notional_won: int = Field(default=30_000_000, gt=0)
    fat_finger_pct: float = Field(default=5.0, gt=0, le=100)
    fee_reserve_ppm: int = Field(default=150, ge=0, le=PPM)


class PositionLimits(_Section):
    """Limits on holdings plus pending buys."""

    max_qty_per_agent: int = Field(default=50_000, gt=0)
    max_notional_per_agent_won: int = Field(default=150_000_000, gt=0)
    max_qty_per_code: int = Field(default=200_000, gt=0)


class OpenOrderLimits(_Section):
    max_per_agent: int = Field(default=20, gt=0)


class RateLimits(_Section):
    """New orders per sliding window, per agent and for the whole account."""

    window_s: float = Field(default=1.0, gt=0)
    max_per_agent: int = Field(default=5, gt=0)
    max_account: int = Field(default=15, gt=0)


class LossLimits(_Section):
    """Daily loss limits (realised + unrealised) and the state a breach leads to."""

    daily_loss_limit_agent_won: int = Field(default=5_000_000, gt=0)
    daily_loss_limit_account_won: int = Field(default=30_000_000, gt=0)
    agent_breach_state: TradingState = TradingState.REDUCING
    account_breach_state: TradingState = TradingState.HALTED


class AgentOverrides(_Section):
    """Per-agent replacements of the firm-wide defaults (unset = the default)."""

    max_qty_per_order: int | None = Field(default=None, gt=0)
    max_notional_per_order_won: int | None = Field(default=None, gt=0)
    fat_finger_pct: float | None = Field(default=None, gt=0, le=100)
    max_position_qty: int | None = Field(default=None, gt=0)
    max_position_notional_won: int | None = Field(default=None, gt=0)
    max_open_orders: int | None = Field(default=None, gt=0)
    max_orders_per_window: int | None = Field(default=None, gt=0)
    daily_loss_limit_won: int | None = Field(default=None, gt=0)
    breach_state: TradingState | None = None


@dataclass(frozen=True, slots=True)
class AgentLimits:
    """The limits that apply to one agent, defaults and overrides merged (hot-path form)."""

    max_qty_per_order: int
    max_notional_per_order_won: int
    fat_finger_pct: float
    fee_reserve_ppm: int
    max_position_qty: int
    max_position_notional_won: int
    max_open_orders: int
    max_orders_per_window: int
    daily_loss_limit_won: int
    breach_state: TradingState


class RiskLimits(_Section):
    """Every pre-trade limit, as read from ``configs/risk.toml``."""

    blocked_codes: frozenset[str] = frozenset()
    order: OrderLimits = Field(default_factory=OrderLimits)
    position: PositionLimits = Field(default_factory=PositionLimits)
    open_orders: OpenOrderLimits = Field(default_factory=OpenOrderLimits)
    rate: RateLimits = Field(default_factory=RateLimits)
    loss: LossLimits = Field(default_factory=LossLimits)
    agents: dict[str, AgentOverrides] = Field(default_factory=dict)
    _resolved: dict[str, AgentLimits] = PrivateAttr(default_factory=dict)

    @property
    def window_ns(self) -> int:
        """The rate-limit window in nanoseconds."""
        return int(self.rate.window_s * 1_000_000_000)

    def for_agent(self, agent_id: str) -> AgentLimits:
        """The merged limits of one agent (cached)."""
        # the cache read straight from pydantic's private-attribute store: ``self._resolved`` goes
        # through BaseModel.__getattr__, which costs about ten microseconds per order
        resolved: dict[str, AgentLimits] = self.__pydantic_private__["_resolved"]  # type: ignore[index]
        got = resolved.get(agent_id)
        if got is not None:
            return got
        o = self.agents.get(agent_id) or AgentOverrides()

        def pick(value: Any, default: Any) -> Any:
            return default if value is None else value

        got = AgentLimits(
            max_qty_per_order=pick(o.max_qty_per_order, self.order.max_qty),
            max_notional_per_order_won=pick(o.max_notional_per_order_won, self.order.max_notional_won),
            fat_finger_pct=pick(o.fat_finger_pct, self.order.fat_finger_pct),
            fee_reserve_ppm=self.order.fee_reserve_ppm,
            max_position_qty=pick(o.max_position_qty, self.position.max_qty_per_agent),
            max_position_notional_won=pick(o.max_position_notional_won, self.position.max_notional_per_agent_won),
            max_open_orders=pick(o.max_open_orders, self.open_orders.max_per_agent),
            max_orders_per_window=pick(o.max_orders_per_window, self.rate.max_per_agent),
            daily_loss_limit_won=pick(o.daily_loss_limit_won, self.loss.daily_loss_limit_agent_won),
            breach_state=pick(o.breach_state, self.loss.agent_breach_state),
        )
        resolved[agent_id] = got
        return got


def parse_risk_limits(data: Mapping[str, Any], source: str = "<risk limits>") -> RiskLimits:
    """Validate a mapping into RiskLimits; problems raise ConfigError naming source, key and reason."""
    try:
        return RiskLimits.model_validate(data)
    except ValidationError as exc:
        problems = [(source, ".".join(str(x) for x in err["loc"]) or "-", err["msg"]) for err in exc.errors()]
        raise ConfigError(problems) from exc


def load_risk_limits(path: str | Path) -> RiskLimits:
    """Read ``configs/risk.toml``; a problem raises ConfigError naming file, key and reason."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError([(str(p), "-", "file not found")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([(str(p), "-", f"not valid TOML: {exc}")]) from exc
    return parse_risk_limits(data, str(p))
