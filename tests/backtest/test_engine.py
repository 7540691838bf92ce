"""The back-tester: reference trades of the SMA crossover, costs, determinism, sessions, failures."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from agents.strategies import STRATEGIES
from agents.strategy import Strategy
from backtest.data import MarketData, from_simulator
from backtest.engine import AgentSpec, Backtest, BacktestError, run_backtest
from backtest.fills import FillModel
from core import krx
from core.costs import DEFAULT_COSTS
from core.instruments import load_instruments
from core.matching import MatchingParams
from core.portfolio import kst_date

MASTER = load_instruments("configs/instruments.csv")
SMA = AgentSpec("sma", "sma_cross", ("005930",), {"fast": 10, "slow": 30, "qty": 100}, 500_000_000)


@pytest.fixture(scope="module")
def data() -> MarketData:
    return from_simulator(["005930"], 6, 11, MASTER)


def reference_sma_trades(bars: MarketData, fast: int, slow: int, qty: int) -> list[tuple[int, str, int, int]]:
    """The crossover rule computed directly: (ts_ns, side, qty, price) of every fill, filled at the signal bar's close.

    A signal on a closing auction bar (stamped at or after 15:20 KST) cannot
    fill: the auction has already crossed and the day's orders expire. Nor
    can one on the day's last continuous bar (15:19): its order reaches the
    closing auction, where the agent's cancel at closing takes it back.
    """
    close = bars.bars["close"].to_numpy(dtype=np.int64)
    ts = bars.bars["ts_ns"].to_numpy(dtype=np.int64)
    csum = np.concatenate([[0], np.cumsum(close)])
    idx = np.arange(slow - 1, len(close))
    sum_fast = csum[idx + 1] - csum[idx + 1 - fast]
    sum_slow = csum[idx + 1] - csum[idx + 1 - slow]
    above = sum_fast * slow > sum_slow * fast
    crosses = np.flatnonzero(above[1:] != above[:-1]) + 1
    minutes = ((ts + 9 * 3600 * 10**9) // (60 * 10**9)) % (24 * 60)
    auction = minutes >= 15 * 60 + 19
    held = 0
    out = []
    for k in crosses:
        i = idx[k]
        if auction[i]:
            continue
        if above[k] and held == 0:
            out.append((int(ts[i]), "buy", qty, int(close[i])))
            held = qty
        elif not above[k] and held > 0:
            out.append((int(ts[i]), "sell", held, int(close[i])))
            held = 0
    return out


def test_sma_crossover_gives_exactly_the_reference_trades(data: MarketData) -> None:
    # the reference fills at the close itself: the touch at the last print, the order book off
    result = run_backtest(data, [SMA], fill_model=FillModel.CLOSE, matching_params=MatchingParams(book=False))
    got = [(t.ts_ns, t.side, t.qty, t.price) for t in result.agents["sma"].trades]
    expected = reference_sma_trades(data, 10, 30, 100)
    assert len(expected) > 10
    assert got == expected


def test_fees_and_taxes_are_those_of_core_costs(data: MarketData) -> None:
    result = run_backtest(data, [SMA])
    agent = result.agents["sma"]
    assert agent.trades
    for t in agent.trades:
        fee, tax = DEFAULT_COSTS.fill_costs(t.side, t.qty * t.price, kst_date(t.ts_ns), "KOSPI")
        assert (t.fee_won, t.tax_won) == (fee, tax)
    book = agent.book
    assert book["fees_won"] == sum(t.fee_won for t in agent.trades)
    assert book["taxes_won"] == sum(t.tax_won for t in agent.trades)
    cash = SMA.cash_won + sum((-1 if t.side == "buy" else 1) * t.qty * t.price - t.fee_won - t.tax_won for t in agent.trades)
    assert book["cash_won"] == cash == agent.days[-1].cash_won


@pytest.mark.parametrize("model", list(FillModel))
def test_same_data_gives_the_same_fills_to_the_won(data: MarketData, model: FillModel) -> None:
    first = run_backtest(data, [SMA], fill_model=model)
    second = run_backtest(data, [SMA], fill_model=model)
    assert first.agents["sma"].trades == second.agents["sma"].trades
    assert first.agents["sma"].days == second.agents["sma"].days


def test_next_open_fills_later_than_close(data: MarketData) -> None:
    at_close = run_backtest(data, [SMA], fill_model="close").agents["sma"].trades
    at_open = run_backtest(data, [SMA], fill_model="next_open").agents["sma"].trades
    assert at_open and at_close
    assert at_open[0].ts_ns > at_close[0].ts_ns


def test_every_day_ends_flat_of_open_orders_and_is_recorded(data: MarketData) -> None:
    spec = AgentSpec("lim", "sma_cross", ("005930",), {"fast": 5, "slow": 20}, 100_000_000)
    bt = Backtest(data, [spec], fill_model="intrabar")
    result = bt.run()
    assert [d.date for d in result.agents["lim"].days] == data.days
    assert bt.venue.open_orders() == []
    assert bt.oms.open_orders() == []
    assert result.agents["lim"].book["open_orders"] == 0
    assert result.agents["lim"].book["cash_on_hold_won"] == 0


class _Exploding(Strategy):
    name = "exploding_for_test"

    def on_bar(self, ctx, bar) -> None:  # type: ignore[no-untyped-def]
        if ctx.bar_count(bar.code) == 50:
            raise ZeroDivisionError("boom")


def test_a_strategy_that_raises_stops_the_run_at_that_bar(data: MarketData, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(STRATEGIES, _Exploding.name, _Exploding)
    result = run_backtest(data, [AgentSpec("bad", _Exploding.name, ("005930",))])
    assert result.failure is not None
    assert result.failure.agent_id == "bad"
    assert result.failure.bar_index == 49
    assert result.failure.ts_ns == int(data.bars["ts_ns"].iloc[49])
    assert "ZeroDivisionError: boom" in result.failure.error
    assert len(result.agents["bad"].days) == 1  # the day it stopped in is closed out and recorded


def test_bad_params_unknown_strategy_and_missing_codes_are_named(data: MarketData) -> None:
    with pytest.raises(BacktestError, match="params"):
        Backtest(data, [AgentSpec("a", "sma_cross", ("005930",), {"fast": 40, "slow": 30})])
    with pytest.raises(BacktestError, match="strategy"):
        Backtest(data, [AgentSpec("a", "no_such", ("005930",))])
    with pytest.raises(BacktestError, match="no bars for 000660"):
        Backtest(data, [AgentSpec("a", "sma_cross", ("000660",))])
    with pytest.raises(BacktestError, match="fill"):
        Backtest(data, [SMA], fill_model="tomorrow")


class _BuysOnTheAuctionBar(Strategy):
    """Buys one share at the close on every bar from 15:19 KST on (the last continuous bar and the auction's)."""

    name = "buys_on_the_auction_bar_for_test"

    def on_bar(self, ctx, bar) -> None:  # type: ignore[no-untyped-def]
        minute = ((bar.ts_ns // 60_000_000_000) + 9 * 60) % (24 * 60)
        if minute >= 15 * 60 + 19:
            ctx.buy(bar.code, 1, bar.close)


def _auction_day(*, without_the_last_continuous_bar: bool = False) -> MarketData:
    day = from_simulator(["005930"], 1, 8, MASTER, dt.date(2026, 3, 3))
    bars = day.bars
    if without_the_last_continuous_bar:
        bars = bars.drop(index=len(bars) - 2).reset_index(drop=True)
    return MarketData(bars, day.instruments, day.flows, dict(day.first_base_prices), day.source)


@pytest.mark.parametrize("model", list(FillModel))
@pytest.mark.parametrize("gap", [False, True], ids=["whole_day", "no_15_19_bar"])
def test_an_order_on_the_auction_bar_arrives_after_the_close_and_is_refused(
    model: FillModel, gap: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # live, the exchange publishes the 15:30 auction bar just before ``closed``: an order made on it meets a closed market
    monkeypatch.setitem(STRATEGIES, _BuysOnTheAuctionBar.name, _BuysOnTheAuctionBar)
    data = _auction_day(without_the_last_continuous_bar=gap)
    close_ns = krx.market_hours(dt.date(2026, 3, 3))[1]
    assert int(data.bars["ts_ns"].iloc[-1]) == close_ns
    bt = Backtest(data, [AgentSpec("late", _BuysOnTheAuctionBar.name, ("005930",), {}, 10_000_000)], fill_model=model)
    result = bt.run()
    assert result.ok
    on_auction_bar = [o for o in bt.oms.orders.values() if o.created_ns == close_ns and o.status.value == "rejected"]
    assert [(o.qty, o.reason_code, o.filled_qty) for o in on_auction_bar] == [(1, "MARKET_CLOSED", 0)]
    assert result.agents["late"].rejected == {"MARKET_CLOSED": 1}
    assert not [t for t in result.agents["late"].trades if t.ts_ns >= close_ns - 11 * 60_000_000_000]
    assert bt.venue.open_orders() == [] and bt.oms.open_orders() == []
    assert result.agents["late"].book["cash_on_hold_won"] == 0
    statuses = sorted(o.status.value for o in bt.oms.orders.values())
    # the order on the 15:19 bar (when there is one) enters the auction and the agent's closing cancel takes it back
    assert statuses == (["rejected"] if gap else ["canceled", "rejected"])
