"""The back-tester's hot path: indexes and lazy records give the same answers as the plain computations."""

from __future__ import annotations

import gc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.context import AgentContext, CancelIntent, OrderIntent
from agents.strategy import BarData, FillData, OrderEventData
from agents.strategies import STRATEGIES
from backtest.data import MarketData, from_simulator
from backtest.engine import AgentSpec, run_backtest
from core.instruments import load_instruments
from core.orders import OrderBook
from core.portfolio import Portfolio

MASTER = load_instruments("configs/instruments.csv")
CODES = ("005930", "000660")

# one book event: (kind, order number, code index, qty, price)
_event = st.tuples(
    st.sampled_from(["place_buy", "place_sell", "fill", "canceled", "expired", "rejected", "accepted", "filled"]),
    st.integers(0, 7),
    st.integers(0, 1),
    st.integers(1, 300),
    st.sampled_from([50_000, 50_100, 70_000]),
)


def _scan(book: Portfolio, code: str | None = None) -> list[str]:
    """Open orders found the slow way: every order ever placed, tested one by one."""
    return [o.client_order_id for o in book.orders.values() if o.is_open and (code is None or o.code == code)]


@settings(max_examples=150, deadline=None)
@given(st.lists(_event, max_size=40))
def test_open_order_index_agrees_with_a_scan_of_every_order(events: list[tuple[str, int, int, int, int]]) -> None:
    book = Portfolio(1_000_000_000, markets={c: "KOSPI" for c in CODES})
    book.set_start_holding(CODES[0], 1_000, 50_000)
    book.set_start_holding(CODES[1], 1_000, 50_000)
    for code in CODES:
        book.set_upper_limit(code, 65_000)
    execs = 0
    for t, (kind, n, c, qty, price) in enumerate(events):
        coid, code = f"a-20260105-{n}", CODES[c]
        if kind.startswith("place"):
            book.on_order_placed(coid, code, kind[6:], qty, price, t)
        elif kind == "fill":
            order = book.orders.get(coid)
            if order is not None:
                execs += 1
                book.on_fill(f"E{execs}", coid, order.code, order.side, qty, order.price or price, 10, 0, t)
        else:
            book.on_order_event(coid, kind, t)
        for code_filter in (None, *CODES):
            assert [o.client_order_id for o in book.open_orders(code_filter)] == _scan(book, code_filter)
            assert book.has_open_orders(code_filter) == bool(_scan(book, code_filter))


def test_forgetting_finished_orders_keeps_the_open_ones_and_still_ignores_a_repeated_fill() -> None:
    book = Portfolio(100_000_000)
    book.set_upper_limit("005930", 91_000)
    book.on_order_placed("a-20260105-1", "005930", "buy", 10, 70_000, 1)
    book.on_order_placed("a-20260105-2", "005930", "buy", 10, 69_000, 2)
    assert book.on_fill("E1", "a-20260105-1", "005930", "buy", 10, 70_000, 100, 0, 3)
    cash, hold = book.cash_won, book.cash_on_hold_won

    assert book.forget_finished_orders() == 1

    assert list(book.orders) == ["a-20260105-2"]
    assert [o.client_order_id for o in book.open_orders()] == ["a-20260105-2"]
    assert not book.on_fill("E1", "a-20260105-1", "005930", "buy", 10, 70_000, 100, 0, 4)
    assert (book.cash_won, book.cash_on_hold_won, book.positions["005930"].qty) == (cash, hold, 10)


def test_outcome_records_are_built_on_read_with_the_journal_layout() -> None:
    book = OrderBook()
    submitted = book.submit("a1-20260105-1", "a1", "005930", "buy", 100, 71_000, 10)
    acked = book.ack("a1-20260105-1", "B1", 11)
    filled = book.apply_fill("E1", 100, 71_000, 12, "a1-20260105-1", "B1", 1_000, 0)
    expired = book.expire_open(13)

    assert list(submitted.record.items()) == [
        ("op", "submit"), ("client_order_id", "a1-20260105-1"), ("agent_id", "a1"), ("code", "005930"),
        ("side", "buy"), ("qty", 100), ("price", 71_000), ("now_ns", 10), ("order_type", "limit"),
    ]
    assert acked.record == {"op": "ack", "client_order_id": "a1-20260105-1", "broker_order_id": "B1", "now_ns": 11}
    assert filled.record == {"op": "apply_fill", "exec_id": "E1", "qty": 100, "price": 71_000, "now_ns": 12,
                             "client_order_id": "a1-20260105-1", "broker_order_id": "B1", "fee_won": 1_000,
                             "tax_won": 0}
    assert expired.record == {"op": "expire_open", "now_ns": 13, "through_date": ""}
    assert submitted.record is submitted.record  # built once, then the same dict (the journal may amend it)

    replayed = OrderBook.replay([submitted.record, acked.record, filled.record, expired.record])
    order = replayed.get("a1-20260105-1")
    assert order is not None and (order.status, order.filled_qty, order.fees_won) == (book.get("a1-20260105-1").status, 100, 1_000)


def test_a_refused_entry_is_journaled_as_given() -> None:
    out = OrderBook().create("a1-20260105-9", "a1", "005930", "hold", 5, 100, 7)
    assert out.refused and out.record["side"] == "hold" and out.record["op"] == "create"


def test_the_outbox_is_one_list_that_a_drain_empties() -> None:
    strategy = STRATEGIES["sma_cross"].from_params({"fast": 2, "slow": 3, "qty": 1})
    ctx = AgentContext("a", ["005930"], strategy, Portfolio(100_000_000), MASTER)
    kept = ctx.outbox
    buy = ctx.buy("005930", 1, 70_000)
    assert isinstance(buy, OrderIntent) and kept == [buy]
    cancel = ctx.cancel(buy.client_order_id)
    assert isinstance(cancel, CancelIntent)

    assert ctx.drain_outbox() == [buy, cancel]
    assert ctx.outbox is kept and kept == [] and ctx.drain_outbox() == []


@pytest.fixture(scope="module")
def data() -> MarketData:
    return from_simulator(["005930"], 4, 3, MASTER)


@pytest.mark.parametrize("collecting", [True, False])
def test_a_run_leaves_the_cyclic_collector_as_it_found_it(data: MarketData, collecting: bool) -> None:
    was = gc.isenabled()
    try:
        (gc.enable if collecting else gc.disable)()
        run_backtest(data, [AgentSpec("sma", "sma_cross", ("005930",), {"fast": 3, "slow": 8}, 500_000_000)])
        assert gc.isenabled() is collecting
    finally:
        (gc.enable if was else gc.disable)()


def test_a_run_sees_every_bar_and_ends_with_no_working_order(data: MarketData) -> None:
    spec = AgentSpec("sma", "sma_cross", ("005930",), {"fast": 3, "slow": 8, "qty": 10}, 500_000_000)
    bt_result = run_backtest(data, [spec])
    assert bt_result.agents["sma"].orders > 10
    assert bt_result.agents["sma"].book["open_orders"] == 0
    assert bt_result.agents["sma"].bars_seen == len(data.bars)


class _RaisesOnBar(STRATEGIES["sma_cross"]):  # type: ignore[misc,valid-type]
    """Raises on every bar; keeps the base class's fill and order-event hooks."""

    def on_bar(self, ctx: AgentContext, bar: BarData) -> None:
        raise RuntimeError("bar")


class _CountsFills(_RaisesOnBar):
    """Also overrides on_fill, which must then be called."""

    fills_seen = 0

    def on_fill(self, ctx: AgentContext, fill: FillData) -> None:
        self.fills_seen += 1


@pytest.mark.parametrize("cls", [_RaisesOnBar, _CountsFills])
def test_a_fill_ends_a_run_of_strategy_errors_whether_or_not_the_strategy_hooks_fills(cls: type) -> None:
    strategy = cls.from_params({"fast": 2, "slow": 3, "qty": 1})
    ctx = AgentContext("a", ["005930"], strategy, Portfolio(100_000_000), MASTER)
    buy = ctx.buy("005930", 10, 70_000)
    assert isinstance(buy, OrderIntent)
    for k in range(2):
        ctx.on_bar(BarData("005930", k, 70_000, 70_000, 70_000, 70_000, 10))
    assert ctx.consecutive_errors == 2

    ctx.on_order_event(OrderEventData(buy.client_order_id, "005930", "buy", "accepted", 3, 0, 10, ""))
    assert ctx.consecutive_errors == 0
    for k in range(2):
        ctx.on_bar(BarData("005930", 4 + k, 70_000, 70_000, 70_000, 70_000, 10))
    assert ctx.on_fill(FillData("E1", buy.client_order_id, "005930", "buy", 10, 70_000, 100, 0, 6))

    assert ctx.consecutive_errors == 0 and ctx.position("005930") == 10
    assert getattr(strategy, "fills_seen", 1) == 1


def _fills(result: object) -> list[tuple[object, ...]]:
    return [tuple(t) for t in result.agents["sma"].trades]  # type: ignore[attr-defined]


def test_flows_and_restarts_due_on_the_same_bars_reach_the_agents_as_on_their_own(data: MarketData) -> None:
    """The per-bar loop tests a restart and a flow with one compare: both still run, restart first, before the bar."""
    from backtest.engine import Restart

    assert data.side_events(), "the simulated data carries flows"
    spec = AgentSpec("sma", "sma_cross", ("005930",), {"fast": 3, "slow": 8, "qty": 10}, 500_000_000)
    alone = run_backtest(data, [spec])
    ts = data.bars["ts_ns"].tolist()
    flow_ts = sorted({e[0] for e in data.side_events()})
    # a restart at a flow's stamp (both due on one bar), one between flows, one on the last bar
    at = [t for t in ts if t >= flow_ts[0]][0], ts[len(ts) // 2], ts[-1]
    restarted = run_backtest(data, [spec], restarts=[Restart("sma", t) for t in at])
    assert _fills(restarted) == _fills(alone) and len(_fills(alone)) > 10
    assert restarted.agents["sma"].bars_seen == alone.agents["sma"].bars_seen == len(data.bars)
    assert restarted.agents["sma"].exposed_bars == alone.agents["sma"].exposed_bars > 0
    assert [d.equity_won for d in restarted.agents["sma"].days] == [d.equity_won for d in alone.agents["sma"].days]


def test_a_successful_bar_ends_a_run_of_strategy_errors_and_every_bar_is_kept() -> None:
    class _RaisesTwice(STRATEGIES["sma_cross"]):  # type: ignore[misc,valid-type]
        calls = 0

        def on_bar(self, ctx: AgentContext, bar: BarData) -> None:
            self.calls += 1
            if self.calls <= 2:
                raise RuntimeError("bar")

    ctx = AgentContext("a", ["005930"], _RaisesTwice.from_params({"fast": 2, "slow": 3, "qty": 1}), Portfolio(100_000_000), MASTER)
    for k in range(2):
        ctx.on_bar(BarData("005930", k, 70_000, 70_100, 69_900, 70_000 + 100 * k, 10))
    assert (ctx.consecutive_errors, ctx.errors_total) == (2, 2)
    ctx.on_bar(BarData("005930", 2, 70_000, 70_300, 69_900, 70_200, 10))
    assert (ctx.consecutive_errors, ctx.errors_total) == (0, 2)
    assert ctx.bar_count("005930") == 3 and ctx.last_price("005930") == 70_200 and ctx.now() == 2
    ctx.on_bar(BarData("000660", 3, 1, 1, 1, 1, 1))  # not its code: ignored, nothing kept
    assert ctx.ignored_events == 1 and ctx.bar_count("005930") == 3 and ctx.now() == 2
