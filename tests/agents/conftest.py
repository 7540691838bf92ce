"""A small venue for agent tests: real AgentContext and Portfolio, fills at the intent's price."""

from __future__ import annotations

import datetime as dt
from typing import Any

from agents.context import AgentContext, CancelIntent, OrderIntent
from agents.strategy import BarData, FillData, OrderEventData, get_strategy
from core.config import PROJECT_ROOT
from core.costs import DEFAULT_COSTS
from core.instruments import load_instruments
from core.portfolio import Portfolio

INSTRUMENTS = load_instruments(PROJECT_ROOT / "configs" / "instruments.csv")
# 2026-03-02 09:00 KST
T0 = int(dt.datetime(2026, 3, 2, 0, 0, tzinfo=dt.UTC).timestamp()) * 1_000_000_000
MINUTE = 60_000_000_000


def make_ctx(
    strategy: str,
    codes: list[str],
    cash: int = 100_000_000,
    params: dict[str, Any] | None = None,
    start: tuple[int, int] | None = None,
    agent_id: str = "t1",
) -> AgentContext:
    """An agent context around a freshly built strategy and book."""
    book = Portfolio(cash, markets={c: INSTRUMENTS[c].market for c in codes})
    if start:
        book.set_start_holding(codes[0], *start)
    ctx = AgentContext(agent_id, codes, get_strategy(strategy).from_params(params or {}), book, INSTRUMENTS)
    ctx.start()
    return ctx


def bar(code: str, i: int, close: int, volume: int = 10_000, high: int | None = None) -> BarData:
    """A one-minute bar at minute ``i`` of the test day."""
    return BarData(code, T0 + i * MINUTE, close, high if high is not None else close, close, close, volume)


def execute(ctx: AgentContext) -> list[OrderIntent | CancelIntent]:
    """Drain the outbox and execute it: orders fill in full at their price (market: last price), cancels confirm."""
    intents = ctx.drain_outbox()
    for n, intent in enumerate(intents):
        ts = ctx.now()
        if isinstance(intent, CancelIntent):
            order = ctx.portfolio.orders[intent.client_order_id]
            ctx.on_order_event(OrderEventData(intent.client_order_id, order.code, order.side, "canceled", ts))
            continue
        ctx.on_order_event(OrderEventData(intent.client_order_id, intent.code, intent.side, "accepted", ts))
        price = intent.price or ctx.last_price(intent.code)
        fee, tax = DEFAULT_COSTS.fill_costs(intent.side, price * intent.qty, dt.date(2026, 3, 2), INSTRUMENTS[intent.code].market)
        ctx.on_fill(
            FillData(f"{intent.client_order_id}-x{n}", intent.client_order_id, intent.code, intent.side, intent.qty, price, fee, tax, ts)
        )
    return intents


def run_bars(ctx: AgentContext, bars: list[BarData], fill: bool = True) -> list[tuple[int, OrderIntent | CancelIntent]]:
    """Feed bars one by one, executing what the strategy sends; returns (bar index, intent) pairs."""
    sent = []
    for i, b in enumerate(bars):
        ctx.on_bar(b)
        for intent in execute(ctx) if fill else ctx.drain_outbox():
            sent.append((i, intent))
    return sent
