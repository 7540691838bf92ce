"""PER valuation: buy in steps when the price-earnings ratio falls below a band, sell in steps above it.

Hypothesis: a stock's price is pulled back toward its usual multiple of its
earnings, so when the price-earnings ratio is well below the band the stock
is cheap and rises toward value (and, above the band, falls back); where
prices take no notice of earnings there is nothing to earn. The band
(``low_per`` .. ``high_per``) is the stock's own: set it around the PER it
usually trades at.

PER is the live price over the EPS in force (``agents.strategies.valuation``:
the latest announcement heard, else the instrument master's), so it moves
with every price and jumps with every announcement. Below the band's floor
the strategy buys one slice per level, each level a further ``step_pct``
below the previous; above the ceiling it sells one slice per level up, the
last level selling what is left. Counters reset once PER is back at the
middle of the band, so the ladder can be climbed again. A step whose order
ends with nothing done (refused, cancelled at the close, expired) was not
taken: it is given back and may be taken again. A step is at most one order
within the agent's per-order limits (``ctx.max_order_qty``). Without a
positive EPS, PER is undefined and the strategy does not trade.

State kept across restarts and days: the ladder (buy and sell steps taken,
and the orders of the last step of each side, which may still be given back),
the last PER and the EPS it was taken on. The ladder is a story of price
levels, not of days: it survives the overnight, so an agent restarted while
holding does not buy its steps again; only PER's return to the middle of the
band resets it.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
from pydantic import Field, model_validator

from agents.context import AgentContext
from agents.strategies.valuation import live_fundamentals
from agents.strategy import BarData, OrderEventData, Strategy, StrategyParams, read_state
from core.messages import SessionPhase


class PerValuationParams(StrategyParams):
    """PER band, spacing of the levels, number of steps and the size of a buy step."""

    low_per: float = Field(default=10.0, gt=0, le=1000)
    high_per: float = Field(default=18.0, gt=0, le=1000)
    step_pct: float = Field(default=0.05, gt=0, le=0.5)
    max_steps: int = Field(default=4, ge=1, le=20)
    step_fraction: float = Field(default=0.25, gt=0, le=1)

    @model_validator(mode="after")
    def _band_ordered(self) -> PerValuationParams:
        if self.low_per >= self.high_per:
            raise ValueError(f"low_per ({self.low_per}) must be below high_per ({self.high_per})")
        return self


class PerValuationState(msgspec.Struct, forbid_unknown_fields=True):
    """The saved ladder."""

    per: float
    eps: int
    buy_steps: int
    sell_steps: int
    buy_step_order: str
    sell_step_order: str
    no_eps_logged: bool


class PerValuation(Strategy):
    """Stepwise buying below a PER band and selling above it."""

    name = "per_valuation"
    Params = PerValuationParams
    params: PerValuationParams
    state_version = 2

    def __init__(self, params: PerValuationParams | None = None) -> None:
        super().__init__(params)
        self.per = 0.0
        self.eps = 0  # the EPS in force at the last bar
        self.buy_steps = 0
        self.sell_steps = 0
        self._step_orders = {"buy": "", "sell": ""}  # client order id of each side's last step
        self._no_eps_logged = False

    def on_bar(self, ctx: AgentContext, bar: BarData) -> None:
        p = self.params
        code = bar.code
        fund = live_fundamentals(ctx, code)
        if fund is None or fund.eps <= 0:
            if not self._no_eps_logged:
                ctx.log(f"{code}: no positive EPS, PER undefined; not trading")
                self._no_eps_logged = True
            return
        if fund.eps != self.eps:
            if self.eps:
                ctx.log(f"{code}: EPS {self.eps} -> {fund.eps} ({fund.source} {fund.effective_date})")
            self.eps = fund.eps
        self.per = per = bar.close / fund.eps
        middle = (p.low_per + p.high_per) / 2
        if per >= middle:
            self.buy_steps, self._step_orders["buy"] = 0, ""
        if per <= middle:
            self.sell_steps, self._step_orders["sell"] = 0, ""
        if ctx.open_orders(code) or ctx.phase not in (None, SessionPhase.OPEN):
            return
        if self.buy_steps < p.max_steps and per <= p.low_per * (1 - p.step_pct * self.buy_steps):
            qty = min(ctx.affordable_qty(code, bar.close, int(ctx.equity() * p.step_fraction)), ctx.max_order_qty(code, "buy", bar.close))
            intent = ctx.buy(code, qty, bar.close) if qty > 0 else None
            if intent is not None and intent.ok:
                self._step_orders["buy"] = intent.client_order_id  # type: ignore[union-attr]
                self.buy_steps += 1
                ctx.log(f"PER {per:.2f} below band: buy step {self.buy_steps} ({qty})")
        elif self.sell_steps < p.max_steps and per >= p.high_per * (1 + p.step_pct * self.sell_steps):
            held = ctx.sellable(code)
            if held > 0:
                qty = min(math.ceil(held / (p.max_steps - self.sell_steps)), ctx.max_order_qty(code, "sell", bar.close))
                intent = ctx.sell(code, qty, bar.close)
                if intent.ok:
                    self._step_orders["sell"] = intent.client_order_id  # type: ignore[union-attr]
                    self.sell_steps += 1
                    ctx.log(f"PER {per:.2f} above band: sell step {self.sell_steps} ({qty})")

    def on_order_event(self, ctx: AgentContext, event: OrderEventData) -> None:
        if event.filled_qty or event.status not in ("rejected", "canceled", "expired"):
            return
        side = event.side
        if side in self._step_orders and event.client_order_id == self._step_orders[side]:
            self._step_orders[side] = ""
            if side == "buy":
                self.buy_steps = max(0, self.buy_steps - 1)
            else:
                self.sell_steps = max(0, self.sell_steps - 1)
            ctx.log(f"{side} step order {event.client_order_id} {event.status} with nothing done: step given back")

    def state(self) -> dict[str, Any]:
        return {"per": self.per, "eps": self.eps, "buy_steps": self.buy_steps, "sell_steps": self.sell_steps}

    def save_state(self) -> dict[str, Any]:
        return msgspec.structs.asdict(PerValuationState(
            per=self.per, eps=self.eps, buy_steps=self.buy_steps, sell_steps=self.sell_steps, buy_step_order=self._step_orders["buy"],
            sell_step_order=self._step_orders["sell"], no_eps_logged=self._no_eps_logged,
        ))

    def load_state(self, state: dict[str, Any], version: int) -> None:
        s = read_state(state, version, self.state_version, PerValuationState)
        self.per, self.eps, self.buy_steps, self.sell_steps = s.per, s.eps, s.buy_steps, s.sell_steps
        self._no_eps_logged = s.no_eps_logged
        self._step_orders = {"buy": s.buy_step_order, "sell": s.sell_step_order}
