"""FirmState, the dashboard's in-memory picture, fed by hand with time passed in."""

from __future__ import annotations

from core.messages import Alert, AlertLevel, Fill, Heartbeat, OrderEvent, Tick
from dashboard.export import select_rows
from dashboard.state import NS, FirmState, RosterEntry, find_webhook_failures

T0 = 1_760_000_000 * NS
ROSTER = [RosterEntry("sma-samsung", ("005930",), "sma_cross", 8101, 30_000_000)]


def firm() -> FirmState:
    return FirmState(ROSTER, {"005930": "Samsung Electronics"}, {"005930": 70_000})


def row(state: FirmState, agent_id: str, now_ns: int) -> dict:
    return next(r for r in state.view(["agents"], now_ns)["agents"]["rows"] if r["id"] == agent_id)


def test_a_process_is_down_once_its_heartbeat_is_older_than_three_seconds() -> None:
    s = firm()
    s.apply("sys.heartbeat.exchange", "exchange", Heartbeat(name="exchange", pid=42, ts_ns=T0), T0)
    rows = {r["name"]: r for r in s.view(["processes"], T0 + 2 * NS)["processes"]["rows"]}
    assert rows["exchange"]["up"] and rows["exchange"]["heartbeat_age_s"] == 2.0
    rows = {r["name"]: r for r in s.view(["processes"], T0 + 4 * NS)["processes"]["rows"]}
    assert not rows["exchange"]["up"] and rows["exchange"]["state"] == "down"


def test_fills_on_the_bus_build_a_book_marked_at_the_last_tick() -> None:
    s = firm()
    s.apply("oms.event.sma-samsung", "order_manager", Fill(exec_id="e1", client_order_id="sma-samsung-20260105-1",
            agent_id="sma-samsung", code="005930", side="buy", qty=10, price=70_000, fee_won=99, ts_ns=T0), T0)
    s.apply("md.tick.005930", "market_data", Tick(code="005930", ts_ns=T0, price=71_000, qty=1), T0)
    r = row(s, "sma-samsung", T0)
    assert (r["holding"], r["avg_price"], r["last_price"]) == (10, 70_000, 71_000)
    assert r["cash_won"] == 30_000_000 - 700_000 - 99
    assert (r["realized_pnl_won"], r["unrealized_pnl_won"]) == (-99, 10_000)
    assert r["book_source"] == "bus fills"


def test_a_rejected_order_counts_once_under_its_reason() -> None:
    s = firm()
    event = OrderEvent(client_order_id="sma-samsung-20260105-2", agent_id="sma-samsung", code="005930", side="buy",
                       status="rejected", qty=1, reason_code="TRADING_STATE_HALTED", ts_ns=T0)
    s.apply("oms.event.sma-samsung", "order_manager", event, T0)
    s.apply("oms.event.sma-samsung", "order_manager", event, T0)
    assert s.metric_families(T0)["rejects"] == {"TRADING_STATE_HALTED": 1}
    assert s.metric_families(T0)["orders_by_state"] == {"rejected": 1}


def test_the_preferred_discount_is_sampled_from_both_legs() -> None:
    s = firm()
    s.apply("md.tick.005930", "md", Tick(code="005930", ts_ns=T0, price=70_000, qty=1), T0)
    s.apply("md.tick.005935", "md", Tick(code="005935", ts_ns=T0 + NS, price=58_100, qty=1), T0)
    assert s.view(["market"], T0)["market"]["discount"] == [[T0 + NS, 0.17]]


def test_only_changed_sections_are_reported_to_a_stream() -> None:
    s = firm()
    seen = s.view(["alerts", "market"], T0)["versions"]
    s.apply("sys.alert", "x", Alert(level=AlertLevel.ERROR, source="x", kind="k", text="t", ts_ns=T0), T0)
    assert s.changed_sections(seen) == ["alerts"]


def test_webhook_failures_are_found_anywhere_in_a_health_report() -> None:
    health = {"alerts": {"webhook_failures": 3, "webhook_last_error": "timeout"}, "ok": True}
    assert [f["where"] for f in find_webhook_failures(health)] == ["alerts.webhook_failures", "alerts.webhook_last_error"]
    assert find_webhook_failures({"webhook_failures": 0}) == []


def test_grid_selection_sorts_numbers_with_blanks_last_and_filters_by_column() -> None:
    rows = [{"id": "a", "cash_won": 5, "strategy": "x"}, {"id": "b", "cash_won": None, "strategy": "y"},
            {"id": "c", "cash_won": 1, "strategy": "x"}]
    assert [r["id"] for r in select_rows(rows, sort="cash_won")] == ["c", "a", "b"]
    assert [r["id"] for r in select_rows(rows, filters={"strategy": "x"}, sort="id", desc=True)] == ["c", "a"]
    assert [r["id"] for r in select_rows(rows, q="Y")] == ["b"]


def test_the_market_board_shows_the_book_every_investor_class_and_per_pbr() -> None:
    from core.messages import Fundamentals, InvestorFlow, Quote

    s = firm()
    s.apply("md.tick.005930", "md", Tick(code="005930", ts_ns=T0, price=70_000, qty=1), T0)
    s.apply("md.quote.005930", "md", Quote(code="005930", ts_ns=T0, bid_px=[69_900], bid_qty=[1_200], ask_px=[70_000], ask_qty=[800], vi="dynamic"), T0)
    s.apply("md.fund.005930", "md", Fundamentals(code="005930", ts_ns=T0, effective_date="20260430", eps=5_000, bps=50_000, dps=1_400), T0)
    s.apply("md.flow.005930", "md", InvestorFlow(code="005930", ts_ns=T0, foreign_net_qty=500, institution_net_qty=-200, individual_net_qty=-300), T0)
    line = s.view(["market"], T0)["market"]["rows"][0]
    assert (line["bid"], line["ask"], line["spread"], line["bid_qty"], line["vi"]) == (69_900, 70_000, 100, 1_200, "dynamic")
    assert (line["per"], line["pbr"], line["dividend_yield_pct"]) == (14.0, 1.4, 2.0)
    assert (line["foreign_net_qty"], line["institution_net_qty"], line["individual_net_qty"]) == (500, -200, -300)
