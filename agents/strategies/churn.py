"""Churn: a test agent that keeps passive orders working near the price and replaces them on a timer.

Made to load the order path (many orders, many cancels, a steady trickle of
fills), not to make money. On every bar of continuous trading it keeps at most
one buy and one sell working: a limit buy ``ticks_away`` ticks below the
bar's close and, while it holds shares, a limit sell as many ticks above. An
order that has rested ``replace_after_min`` minutes of market time (counted
from its own time stamp, so the rule holds after a restart) is cancelled, and
a fresh one goes out at the next bar once the cancel is confirmed. Buys stay
within the cash available and ``max_position``; sells never exceed what may be
offered. A refused order (the firm halted, a limit reached) quiets it for
``replace_after_min`` minutes counted from the next bar (a refusal's own time
stamp may be the back office's wall clock, not market time), so a halt is not
met with an order on every bar. Everything follows from the events it is
given: the same events give the same orders.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from agents.context import AgentContext
from agents.strategy import BarData, OrderEventData, Strategy, StrategyParams
from core.krx import tick_size
from core.messages import SessionPhase

NS_PER_MIN = 60_000_000_000


class ChurnParams(StrategyParams):
    """Order size, distance from the price in ticks, how long an order rests, the largest holding."""

    qty: int = Field(default=10, ge=1, le=100_000)
    ticks_away: int = Field(default=1, ge=0, le=50)
    replace_after_min: int = Field(default=3, ge=1, le=400)
    max_position: int = Field(default=200, ge=1, le=1_000_000)


def ticks_below(price: int, n: int) -> int:
    """The price ``n`` ticks under ``price`` on the KRX grid (never below one tick)."""
    for _ in range(n):
        step = tick_size(price - 1)
        if price - step < step:
            break
        price -= step
    return price


def ticks_above(price: int, n: int) -> int:
    """The price ``n`` ticks over ``price`` on the KRX grid."""
    for _ in range(n):
        price += tick_size(price)
    return price


class Churn(Strategy):
    """Passive buys and sells a few ticks from the price, cancelled and replaced every few minutes."""

    name = "churn"
    Params = ChurnParams
    params: ChurnParams

    def __init__(self, params: ChurnParams | None = None) -> None:
        super().__init__(params)
        self.placed = 0
        self.replaced = 0
        self.refused = 0
        self._quiet_until_ns = 0
        self._refused_since_bar = False

    def on_order_event(self, ctx: AgentContext, event: OrderEventData) -> None:
        if event.status == "rejected":
            self.refused += 1
            self._refused_since_bar = True

    def on_bar(self, ctx: AgentContext, bar: BarData) -> None:
        if ctx.phase is not SessionPhase.OPEN:
            return
        p = self.params
        code = bar.code
        if self._refused_since_bar:
            self._refused_since_bar = False
            self._quiet_until_ns = bar.ts_ns + p.replace_after_min * NS_PER_MIN
        working = {"buy": False, "sell": False}
        pending_buy_qty = 0
        for order in ctx.open_orders(code):
            if order.side == "buy":
                pending_buy_qty += order.remaining_qty
            if order.cancel_requested:
                working[order.side] = True  # its replacement waits for the cancel's answer
                continue
            if bar.ts_ns - order.ts_ns >= p.replace_after_min * NS_PER_MIN:
                ctx.cancel(order.client_order_id)
                self.replaced += 1
            working[order.side] = True
        if bar.ts_ns < self._quiet_until_ns:
            return
        if not working["buy"]:
            price = ticks_below(bar.close, p.ticks_away)
            room = p.max_position - ctx.position(code) - pending_buy_qty
            qty = min(p.qty, room, ctx.affordable_qty(code, price))
            if qty > 0 and ctx.buy(code, qty, price).ok:
                self.placed += 1
        if not working["sell"]:
            qty = min(p.qty, ctx.sellable(code))
            if qty > 0 and ctx.sell(code, qty, ticks_above(bar.close, p.ticks_away)).ok:
                self.placed += 1

    def state(self) -> dict[str, Any]:
        return {"placed": self.placed, "replaced": self.replaced, "refused": self.refused}
