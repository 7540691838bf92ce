"""Parity with backtrader: the same SMA crossover on the same bars gives the same fills and PnL to the won.

backtrader has no costs, no order book and no trading sessions: a market order
made on a bar fills at the next bar's open, whatever the time of day. Our
engine runs the same way with ``costs=CostModel.none()``, the touch-at-last
market (no book), ``sessions=False`` and the ``next_open`` fill model; then
every fill (time, side, quantity, price), the realised PnL and the final
equity agree. The backtrader strategy uses backtrader's own SMA indicators and
order handling; only the comparison of the two averages is done in integers
(``sma * n`` is the exact sum of integer closes), so a tie between them reads
the same on both sides.

With the session rules on, the two differ at the close only: an order made on
a day's last continuous bar (15:19) is taken back by the agent's cancel at
``closing``, and one made on the auction bar (15:30) is refused
``MARKET_CLOSED``, where backtrader fills both at the next bar.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import backtrader as bt
import pandas as pd
import pytest

from backtest.data import MarketData, from_simulator
from backtest.engine import AgentSpec, Backtest, run_backtest
from core import krx
from core.costs import CostModel
from core.instruments import load_instruments
from core.matching import MatchingParams

MASTER = load_instruments("configs/instruments.csv")
CODE = "005930"
DAYS = 30
SEED = 21
FAST, SLOW, QTY = 10, 30, 100
CASH_WON = 500_000_000

Fill = tuple[int, str, int, int]  # (ts_ns, side, qty, price)
BOOK_OFF = MatchingParams(book=False)  # the touch at the last print, no spread


@pytest.fixture(scope="module")
def data() -> MarketData:
    return from_simulator([CODE], DAYS, SEED, MASTER)


SPEC = AgentSpec("sma", "sma_cross", (CODE,), {"fast": FAST, "slow": SLOW, "qty": QTY, "order_type": "market"}, CASH_WON)


class _SmaCross(bt.Strategy):  # type: ignore[misc]
    """sma_cross in backtrader: buy QTY when the fast SMA crosses above the slow one, sell the holding below."""

    def __init__(self) -> None:
        self.fast = bt.indicators.SimpleMovingAverage(self.data.close, period=FAST)
        self.slow = bt.indicators.SimpleMovingAverage(self.data.close, period=SLOW)
        self.above: bool | None = None
        self.pending: bt.Order | None = None
        self.fills: list[Fill] = []
        self.realized = 0.0

    def next(self) -> None:
        sum_fast, sum_slow = round(self.fast[0] * FAST), round(self.slow[0] * SLOW)
        above = sum_fast * SLOW > sum_slow * FAST
        was, self.above = self.above, above
        if was is None or above is was:
            return
        if above:
            if self.position.size == 0 and self.pending is None:
                self.pending = self.buy(size=QTY, exectype=bt.Order.Market)
        elif self.position.size > 0 and self.pending is None:
            self.pending = self.sell(size=self.position.size, exectype=bt.Order.Market)

    def notify_order(self, order: bt.Order) -> None:
        if order.status in (order.Completed, order.Canceled, order.Margin, order.Rejected):
            self.pending = None
        if order.status == order.Completed:
            when = bt.num2date(order.executed.dt).replace(tzinfo=krx.KST)
            side = "buy" if order.isbuy() else "sell"
            self.fills.append((int(when.timestamp()) * 1_000_000_000, side, abs(int(order.executed.size)),
                               int(round(order.executed.price))))

    def notify_trade(self, trade: bt.Trade) -> None:
        if trade.isclosed:
            self.realized += trade.pnl


def backtrader_run(data: MarketData) -> dict[str, Any]:
    bars = data.bars[data.bars["code"] == CODE]
    index = pd.to_datetime(bars["ts_ns"].to_numpy(), utc=True).tz_convert(krx.KST).tz_localize(None)
    frame = pd.DataFrame({k: bars[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close", "volume")}, index=index)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=frame, timeframe=bt.TimeFrame.Minutes, compression=1))
    cerebro.addstrategy(_SmaCross)
    cerebro.broker.setcash(float(CASH_WON))
    cerebro.broker.setcommission(commission=0.0)
    strategy = cerebro.run()[0]
    return {"fills": strategy.fills, "realized": strategy.realized, "value": cerebro.broker.getvalue()}


@pytest.fixture(scope="module")
def theirs(data: MarketData) -> dict[str, Any]:
    return backtrader_run(data)


def test_without_costs_book_and_sessions_the_engine_fills_what_backtrader_fills(data: MarketData, theirs: dict[str, Any]) -> None:
    result = run_backtest(data, [SPEC], fill_model="next_open", costs=CostModel.none(), matching_params=BOOK_OFF,
                          sessions=False)
    assert result.ok, result.failure
    agent = result.agents["sma"]
    got = [(t.ts_ns, t.side, t.qty, t.price) for t in agent.trades]
    assert len(theirs["fills"]) > 100, "the scenario trades often enough to mean something"
    assert got == theirs["fills"]
    assert not agent.refusals and agent.canceled_at_closing == 0
    assert sum(t.fee_won + t.tax_won for t in agent.trades) == 0
    assert agent.book["realized_pnl_won"] == theirs["realized"]
    assert agent.days[-1].equity_won == theirs["value"]
    # fills across the day's close are part of the comparison: some enter on the next day's first bar
    day_of = {krx.kst_date(t) for t, *_ in got}
    assert len(day_of) > DAYS // 2


def test_with_the_session_rules_the_engine_differs_from_backtrader_at_the_close_only(data: MarketData, theirs: dict[str, Any]) -> None:
    run = Backtest(data, [SPEC], fill_model="next_open", costs=CostModel.none(), matching_params=BOOK_OFF)
    result = run.run()
    agent = result.agents["sma"]
    got = [(t.ts_ns, t.side, t.qty, t.price) for t in agent.trades]
    assert set(agent.refusals) <= {"MARKET_CLOSED"}
    late = [o for o in run.oms.orders.values() if o.status.value in ("canceled", "rejected")]
    assert late, "the scenario makes orders on the last continuous bar or the auction bar"
    # held from the 15:19 bar for the auction, or made on the auction bar: sent at or after 15:20
    assert all(kst_time(o.created_ns) >= dt.time(15, 20) for o in late)
    assert agent.canceled_at_closing == sum(o.status.value == "canceled" for o in late)
    assert agent.rejected["MARKET_CLOSED"] == sum(o.status.value == "rejected" for o in late)
    # the two agree up to the first order made at the close; backtrader fills that one at the next bar
    first_late = min(o.created_ns for o in late)
    assert [f for f in got if f[0] < first_late] == [f for f in theirs["fills"] if f[0] < first_late]
    assert any(f[0] >= first_late and f not in got for f in theirs["fills"])


def kst_time(ts_ns: int) -> dt.time:
    return dt.datetime.fromtimestamp(ts_ns / 1e9, krx.KST).time()


@pytest.mark.slow
def test_two_years_of_one_minute_bars_fill_alike_without_costs_book_and_sessions() -> None:
    # the scale of the comparison that first showed the close's difference: about 200,000 bars of one code
    data = from_simulator([CODE], 525, SEED, MASTER)
    assert len(data.bars) > 199_000
    theirs = backtrader_run(data)
    result = run_backtest(data, [SPEC], fill_model="next_open", costs=CostModel.none(), matching_params=BOOK_OFF,
                          sessions=False)
    agent = result.agents["sma"]
    assert [(t.ts_ns, t.side, t.qty, t.price) for t in agent.trades] == theirs["fills"]
    assert agent.book["realized_pnl_won"] == theirs["realized"] and agent.days[-1].equity_won == theirs["value"]
