"""The closing auction live and in the back-test: its bar comes before ``closed``, and an order made on it is refused on both sides.

The one order of events at 15:30 KST, on the exchange's feed and in the
back-tester alike: the closing auction crosses at its single price, its print
and its 1-minute bar (stamped 15:30) are published, then the ``closed`` session
event, then the expiries of the day's open orders. So

- the market-data recorder, which writes the day's bar files at ``closed``,
  has the auction bar in that write (a back-test on the recorded files right
  after the close has the whole day);
- an agent receives the auction bar while the session is still the closing
  auction, but what it orders on that bar reaches the exchange after the close
  and is refused ``MARKET_CLOSED``; the back-tester holds such an order until
  the close and refuses it the same way (it used to accept it and let it
  expire).

Seed 2 on 2026-03-03: ``sma_cross`` (fast 2, slow 4) buys on the auction bar.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backtest.data import from_bar_dir, from_simulator
from backtest.engine import AgentSpec, Backtest
from bus.rpc import RpcFailure
from core import krx
from core.config import PROJECT_ROOT
from core.instruments import load_instruments
from core.messages import Bar, OrderRequest, SessionEvent, SessionPhase
from core.orders import Order
from core.risk import load_risk_limits
from services.broker.base import BrokerUnavailable
from services.broker.venue import VenueBroker
from tests.agents.test_runtime import Stack, wait_for

CODE = "005930"
DAY = dt.date(2026, 3, 3)
SEED = 2
START_TIME = "15:24"
SPEED = 30
MASTER = load_instruments(PROJECT_ROOT / "configs" / "instruments.csv")
CLOSE_NS = krx.market_hours(DAY)[1]


def order_on_the_auction_bar() -> Order:
    """The order the back-tested ``sma_cross`` agent makes on the day's 15:30 auction bar (its record at the end)."""
    data = from_simulator([CODE], 1, SEED, MASTER, DAY)
    assert int(data.bars["ts_ns"].iloc[-1]) == CLOSE_NS
    spec = AgentSpec("parity", "sma_cross", (CODE,), {"fast": 2, "slow": 4, "qty": 10}, 50_000_000)
    run = Backtest(data, [spec], fill_model="close", risk_limits=load_risk_limits(PROJECT_ROOT / "configs" / "risk.toml"))
    assert run.run().ok
    made = [o for o in run.oms.orders.values() if o.created_ns == CLOSE_NS and o.status.value == "rejected"]
    assert len(made) == 1, "the scenario makes one order on the auction bar"
    return made[0]


def test_the_backtest_refuses_an_order_on_the_auction_bar_as_market_closed() -> None:
    order = order_on_the_auction_bar()
    assert (order.side.value, order.qty, order.reason_code, order.filled_qty) == ("buy", 10, "MARKET_CLOSED", 0)


@pytest.fixture
def market(tmp_path: Path) -> Iterator[Stack]:
    """Bus, market data (recording) and the paper exchange from 15:24 KST, 30 times faster than the wall."""
    stack = Stack(tmp_path, {
        "TRADER_CLOCK__START_DATE": DAY.isoformat(), "TRADER_CLOCK__START_TIME": START_TIME,
        "TRADER_CLOCK__SPEED": str(SPEED), "TRADER_CLOCK__SEED": str(SEED),
        "TRADER_MARKET__CODES": json.dumps([CODE]),
    })
    try:
        stack.start("bus", "bus.proxy")
        stack.start("market-data", "services.market_data")

        def market_data_answers() -> bool:
            assert all(p.poll() is None for p in stack.procs.values()), stack.log("market-data")
            try:
                stack.command("market_data_rpc", "status")
                return True
            except RpcFailure:
                return False

        wait_for(market_data_answers, timeout_s=30, what="market data to answer")
        yield stack
    finally:
        stack.close()


@pytest.mark.slow
def test_the_auction_bar_is_recorded_at_the_close_and_an_order_on_it_meets_the_same_refusal_live(market: Stack) -> None:
    bt_order = order_on_the_auction_bar()
    broker = VenueBroker(market.zctx, market.settings, timeout_ms=3000, retries=1)
    feed = broker.subscribe_market([CODE])
    try:
        market.start("exchange", "services.exchange")

        def exchange_answers() -> bool:
            assert market.procs["exchange"].poll() is None, market.log("exchange")
            try:
                broker.ping()
                return True
            except BrokerUnavailable:
                return False

        wait_for(exchange_answers, timeout_s=30, what="the exchange to answer")
        assert broker.ping()["session"] == "closing", "the exchange must start before the close"

        # on the feed: the auction bar, then closed; the agent's order is sent the moment the bar arrives
        seen: list[str] = []
        auction_bar: Bar | None = None
        live_reply = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and SessionPhase.CLOSED.value not in seen:
            env = feed.recv(100)
            if env is None:
                continue
            msg = env.msg
            if isinstance(msg, Bar) and msg.ts_ns == CLOSE_NS:
                auction_bar = msg
                seen.append("auction_bar")
                live_reply = broker.place(OrderRequest(
                    client_order_id=bt_order.client_order_id, agent_id=bt_order.agent_id, code=bt_order.code,
                    side=bt_order.side, qty=bt_order.qty, price=bt_order.price, order_type=bt_order.order_type,
                ))
            elif isinstance(msg, SessionEvent) and msg.phase is SessionPhase.CLOSED:
                seen.append(SessionPhase.CLOSED.value)
        assert seen == ["auction_bar", "closed"], "the auction bar comes before the close on the feed"
        assert auction_bar is not None and live_reply is not None
        assert auction_bar.close == bt_order.price

        # the same status for the same order, live and in the back-test
        assert (live_reply.status.value, live_reply.reason_code, live_reply.filled_qty) == (
            bt_order.status.value, bt_order.reason_code, bt_order.filled_qty)

        # the recorder wrote the day at the close, while still running, with the auction bar in it
        day_file = market.run_dir / "bars" / DAY.strftime("%Y%m%d") / f"{CODE}.parquet"
        wait_for(day_file.exists, timeout_s=20, what="the day's bar file written at the close")
        assert market.procs["market-data"].poll() is None
        recorded = from_bar_dir(market.run_dir / "bars", MASTER, [CODE]).bars
        last = recorded.iloc[-1]
        assert int(last.ts_ns) == CLOSE_NS
        assert (int(last.open), int(last.high), int(last.low), int(last.close), int(last.volume)) == (
            auction_bar.open, auction_bar.high, auction_bar.low, auction_bar.close, auction_bar.volume)
    finally:
        feed.close()
        broker.close()
