"""Live-versus-back-test parity: one deterministic day through the back-tester and through the live stack.

The scenario: the paper exchange simulates 2026-03-03 for 005930 with seed 3
and its clock starts at 14:30 KST running 60 times faster than the wall; one
agent trades ``sma_cross`` (fast 2, slow 4, 10 shares, limit at the signal
bar's close) until the close. The back-tester replays the same simulated bars
(``backtest.data.from_simulator``, checked equal to the bars the market-data
recorder wrote during the live run) through the same strategy with the
``close`` fill model, and both must give the same orders, the same fills to the
won and the same book at the close.

Why the ``close`` fill model is the live one here. Live, bar *i* is published
when its minute ends, in the same instant as the first print of bar *i + 1*,
whose open is bar *i*'s close (the simulator opens each minute at the last
close). The agent's order reaches the exchange after that print, so it meets a
touch at bar *i*'s close, which is what ``close`` assumes. Ten shares are
within the venue's minimum depth of one price level (``min_depth_shares``), so
a marketable limit at the close fills in full at the close on both sides.

What is inherent to the live stack and how the scenario stands clear of it:

- The order's trip (agent, order manager, risk guard, exchange) takes wall
  time, during which the exchange's clock moves on. Had the second print of
  bar *i + 1* come before the order, the order would meet that print instead.
  The exchange prints four times a bar (``tick_interval_ms`` 15 s) at
  seeded random instants, and in this scenario the second print after every
  signal comes at least 29 market seconds (about half a wall second) after the
  bar starts. ``test_the_scenario_leaves_each_order_time_to_reach_the_exchange``
  pins this margin from the data alone.
- The agent starts while the exchange is already publishing, so it may miss
  the first few bars; its strategy then starts later, which would change its
  signals. The back-test therefore starts at the first bar the agent saw (the
  strategy's ``bars_seen`` at the end), and the scenario gives the same margin
  and no signal on the day's last two bars for every first bar from 14:30 to
  14:42 (the live test fails plainly if the agent started later).
- No signal falls on the day's last two bars. The last continuous bar is
  published together with the closing auction, so live an order made on it
  rests for the auction and the agent's closing cancel takes it back (the
  back-tester now does the same:
  ``test_an_order_on_the_last_continuous_bar_waits_for_the_auction_as_live``).
  The auction bar is published just before the close, so live an order made on
  it reaches the exchange after the close and is refused ``MARKET_CLOSED``; the
  back-tester refuses it the same way (``tests/parity/test_closing_auction.py``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backtest.data import MarketData, from_bar_dir, from_simulator
from backtest.engine import AgentSpec, Backtest, BacktestResult
from core import krx
from core.config import PROJECT_ROOT
from core.instruments import load_instruments
from core.risk import load_risk_limits
from core.simulator import ticks_from_bar
from tests.agents.test_runtime import Stack, free_port, get_status, wait_for, write_roster

CODE = "005930"
DAY = dt.date(2026, 3, 3)
TRADING_DATE = DAY.strftime("%Y%m%d")
SEED = 3
START_TIME = "14:30"
LATEST_FIRST_BAR = "14:42"  # the agent must be trading by this bar (the scenario is checked up to it)
SPEED = 60
TICK_INTERVAL_MS = 15_000  # four prints a bar
PRINTS_PER_BAR = 4
AGENT_ID = "parity"
CASH_WON = 50_000_000
PARAMS = {"fast": 2, "slow": 4, "qty": 10}
MIN_MARGIN_S = 20.0  # market seconds between a signal bar's end and the next print, at least
MIN_ORDERS = 8

MASTER = load_instruments(PROJECT_ROOT / "configs" / "instruments.csv")
RISK_LIMITS = load_risk_limits(PROJECT_ROOT / "configs" / "risk.toml")


def kst_ns(hhmm: str) -> int:
    """A KST time of the scenario's day as ns since the epoch."""
    t = dt.time.fromisoformat(hhmm)
    return int(dt.datetime.combine(DAY, t, krx.KST).timestamp()) * 1_000_000_000


def day_data() -> MarketData:
    """The whole simulated day, as the exchange simulates it (same seed, same codes, same date)."""
    return from_simulator([CODE], 1, SEED, MASTER, DAY)


def from_first_bar(data: MarketData, first_bar_ns: int) -> MarketData:
    """The day's data from one bar on, with the day's true base prices (the previous close)."""
    bars = data.bars[data.bars["ts_ns"] >= first_bar_ns].reset_index(drop=True)
    flows = data.flows[data.flows["ts_ns"] >= first_bar_ns].reset_index(drop=True)
    return MarketData(bars, data.instruments, flows, dict(data.first_base_prices), f"{data.source} from {first_bar_ns}")


def backtest(data: MarketData) -> tuple[Backtest, BacktestResult]:
    """The scenario's agent back-tested with the live stack's risk limits and the ``close`` fill model."""
    spec = AgentSpec(AGENT_ID, "sma_cross", (CODE,), dict(PARAMS), CASH_WON)
    run = Backtest(data, [spec], fill_model="close", risk_limits=RISK_LIMITS)
    return run, run.run()


def second_print_offset_s(data: MarketData, bar_index: int) -> float:
    """Market seconds from a bar's start to its second print on the live exchange (60 if it prints once)."""
    b = data.bars.iloc[bar_index]
    prints = ticks_from_bar(CODE, int(b.ts_ns), int(b.open), int(b.high), int(b.low), int(b.close), int(b.volume), SEED,
                            max_ticks=PRINTS_PER_BAR)
    return (int(prints.ts_ns[1]) - int(b.ts_ns)) / 1e9 if len(prints.ts_ns) > 1 else 60.0


# --- the scenario, checked from the data alone ------------------------------------------------------


@pytest.mark.parametrize("first_bar", [f"14:{m:02d}" for m in range(30, 43)])
def test_the_scenario_leaves_each_order_time_to_reach_the_exchange(first_bar: str) -> None:
    data = from_first_bar(day_data(), kst_ns(first_bar))
    run, result = backtest(data)
    assert result.ok
    orders = list(run.oms.orders.values())
    assert len(orders) >= MIN_ORDERS, "the scenario trades often enough to mean something"
    assert {o.side.value for o in orders} == {"buy", "sell"}
    stamps = data.bars["ts_ns"].tolist()
    for order in orders:
        signal_bar = stamps.index(order.created_ns)
        assert signal_bar < len(stamps) - 2, f"{order.client_order_id} was made on one of the day's last two bars"
        margin = second_print_offset_s(data, signal_bar + 1)
        assert margin >= MIN_MARGIN_S, f"{order.client_order_id}: the next print comes {margin:.1f} s into the bar"
        assert order.status.value == "filled" and order.filled_qty == order.qty


def test_the_exchange_opens_each_minute_at_the_last_close() -> None:
    # what makes the close fill model the live one: the first print after a bar is at its close
    bars = day_data().bars
    continuous = bars.iloc[:-1]
    assert (continuous["open"].to_numpy()[1:] == continuous["close"].to_numpy()[:-1]).all()


def test_an_order_on_the_last_continuous_bar_waits_for_the_auction_as_live() -> None:
    # seed 0: sma_cross signals on the 15:19 bar; live that bar arrives with the closing auction begun
    data = from_simulator([CODE], 1, 0, MASTER, DAY)
    run, result = backtest(data)
    last_continuous = kst_ns("15:19")
    late = [o for o in run.oms.orders.values() if o.created_ns >= last_continuous]
    assert [(o.status.value, o.filled_qty) for o in late] == [("canceled", 0)]
    assert all(t.ts_ns < last_continuous for t in result.agents[AGENT_ID].trades)


# --- the live run ----------------------------------------------------------------------------------


@pytest.fixture
def live_stack(tmp_path: Path) -> Iterator[tuple[Stack, int]]:
    port = free_port()
    roster = write_roster(tmp_path / "agents.toml", [
        {"id": AGENT_ID, "code": CODE, "dp": port, "strategy": "sma_cross", "cash": CASH_WON, "params": PARAMS},
    ])
    stack = Stack(tmp_path, {
        "TRADER_ROSTER_FILE": str(roster),
        "TRADER_CLOCK__START_DATE": DAY.isoformat(), "TRADER_CLOCK__START_TIME": START_TIME,
        "TRADER_CLOCK__SPEED": str(SPEED), "TRADER_CLOCK__SEED": str(SEED),
        "TRADER_MARKET__CODES": json.dumps([CODE]), "TRADER_MARKET__TICK_INTERVAL_MS": str(TICK_INTERVAL_MS),
    })
    try:
        for name, module in (("bus", "bus.proxy"), ("exchange", "services.exchange"), ("market-data", "services.market_data"),
                             ("risk-guard", "services.risk_guard"), ("order-manager", "services.order_manager")):
            stack.start(name, module)
        stack.start_agent(AGENT_ID)
        yield stack, port
    finally:
        stack.close()


def book_facts(book: dict[str, Any]) -> dict[str, Any]:
    """What orders and fills decide in a book: cash, holdings at cost, realised PnL, costs (not the marks)."""
    positions = {c: (p["qty"], p["cost_won"], p["realized_pnl_won"], p["fees_won"], p["taxes_won"])
                 for c, p in book["positions"].items() if p["qty"] or p["bought_qty"] or p["sold_qty"]}
    keys = ("cash_won", "cash_on_hold_won", "realized_pnl_won", "fees_won", "taxes_won", "open_orders")
    return {**{k: book[k] for k in keys}, "positions": positions}


@pytest.mark.slow
def test_the_live_stack_places_and_fills_what_the_backtest_does(live_stack: tuple[Stack, int]) -> None:
    stack, port = live_stack
    day_file = stack.run_dir / "agents" / AGENT_ID / f"{TRADING_DATE}.json"
    wait_for(day_file.exists, timeout_s=150, what="the agent's day written at the close")
    # the agent's day file is written at the close; the auction bar came just before it
    last_bar_ns = int(day_data().bars["ts_ns"].iloc[-1])
    status = wait_for(lambda: (s := get_status(port)) and s["now_ns"] >= last_bar_ns and s, timeout_s=20,
                      what="the closing auction's bar at the agent")
    assert status["counters"]["bus_gaps"] == 0 and status["sync"]["state"] == "in_sync", status["sync"]
    assert status["errors_total"] == 0, status["last_error"]

    # the same prices: what the recorder wrote live is the simulated day
    whole_day = day_data()
    recorded = wait_for(lambda: _recorded(stack.run_dir), timeout_s=20, what="the recorded bars of the day")
    sim = whole_day.bars.set_index("ts_ns")
    rec = recorded.bars.set_index("ts_ns")
    cols = ["open", "high", "low", "close", "volume"]
    assert (sim.loc[rec.index, cols].to_numpy() == rec[cols].to_numpy()).all(), "live bars differ from the simulated day"

    # the back-test starts at the first bar the agent's strategy saw
    bars_seen = status["strategy_state"]["bars_seen"]
    first_bar_ns = int(whole_day.bars["ts_ns"].iloc[-bars_seen])
    assert first_bar_ns <= kst_ns(LATEST_FIRST_BAR), f"the agent started trading only at bar {bars_seen} from the end"
    run, result = backtest(from_first_bar(whole_day, first_bar_ns))
    assert result.ok

    # the book of record's orders of the day (the ledger has rolled into the next date at the close)
    journaled = stack.command("order_manager_rpc", "orders", agent_id=AGENT_ID, date=TRADING_DATE)
    live_orders = [(o["client_order_id"], o["code"], o["side"], o["qty"], o["price"], o["status"], o["filled_qty"])
                   for o in journaled]
    bt_orders = [(o.client_order_id, o.code, o.side.value, o.qty, o.price, o.status.value, o.filled_qty)
                 for o in run.oms.orders.values()]
    assert len(bt_orders) >= MIN_ORDERS
    assert live_orders == bt_orders

    bt_fills = [(t.client_order_id, t.side, t.qty, t.price, t.fee_won, t.tax_won) for t in result.agents[AGENT_ID].trades]
    bt_costs: dict[str, list[int]] = {}
    for coid, _, _, _, fee, tax in bt_fills:
        bt_costs.setdefault(coid, [0, 0])
        bt_costs[coid][0] += fee
        bt_costs[coid][1] += tax
    assert {o["client_order_id"]: [o["fees_won"], o["taxes_won"]] for o in journaled if o["filled_qty"]} == bt_costs
    # the broker charged what the order manager recorded
    exchange_fills = [(f["client_order_id"], f["side"], f["qty"], f["price"], f["fee_won"], f["tax_won"])
                      for f in stack.command("exchange_rpc", "fills_today")]
    assert exchange_fills == bt_fills

    assert book_facts(status["book"]) == book_facts(result.agents[AGENT_ID].book)
    closed = json.loads(day_file.read_text())
    assert book_facts(closed["book"]) == book_facts(result.agents[AGENT_ID].book)


def _recorded(run_dir: Path) -> MarketData | None:
    folder = run_dir / "bars" / TRADING_DATE
    if not (folder / f"{CODE}.parquet").exists():
        return None
    data = from_bar_dir(run_dir / "bars", MASTER, [CODE])
    # written at the close, with the closing auction's bar (published just before the close)
    return data if int(data.bars["ts_ns"].iloc[-1]) >= kst_ns("15:30") else None
