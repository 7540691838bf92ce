"""The desk's figures from the book of record, the process states, and alerts folded into groups."""

from __future__ import annotations

import logging

from bus.logcount import LogCounter
from core.messages import Alert, AlertLevel, Heartbeat, OrderEvent
from dashboard.desk import AlertGroups, desk_figures
from dashboard.state import NS, STARTUP_GRACE_S, FirmState, RosterEntry

T0 = 1_760_000_000 * NS
ROSTER = [RosterEntry("sma-samsung", ("005930",), "sma_cross", 8101, 30_000_000),
          RosterEntry("trend-naver", ("035420",), "slow_trend", 8102, 20_000_000)]

LEDGER = {
    "ledger_date": "20261201",
    "agents": {"sma-samsung": {"cash_won": 29_000_000, "realized_pnl_won": 0, "positions": {"005930": {"qty": 10, "avg_price": 70_000, "cost_won": 700_000}}},
               "trend-naver": {"cash_won": 20_000_000, "realized_pnl_won": 0, "positions": {}}},
    "account_book": {"cash_won": 999_300_000, "realized_pnl_won": 15_000, "fees_won": 300, "taxes_won": 200,
                     "positions": {"005930": {"qty": 10, "avg_price": 70_000, "cost_won": 700_000}}},
}


def test_the_desk_values_the_account_book_at_the_last_prices_and_counts_today_from_the_opening() -> None:
    d = desk_figures(LEDGER, {"@account": 10_000}, {"005930": 72_000}, {"005930": "Samsung Electronics"}, [])
    assert d["source"] == "ledger"
    assert (d["cash_won"], d["holdings_won"], d["equity_won"]) == (999_300_000, 720_000, 1_000_020_000)
    assert (d["realized_today_won"], d["unrealized_won"]) == (5_000, 20_000)
    [row] = d["exposure"]
    assert (row["code"], row["name"], row["qty"], row["value_won"], row["agents"]) == ("005930", "Samsung Electronics", 10, 720_000, ["sma-samsung"])
    assert row["pct_of_equity"] == round(100 * 720_000 / 1_000_020_000, 2)


def test_without_an_opening_today_is_unknown_and_without_a_ledger_the_agents_books_stand_in() -> None:
    assert desk_figures(LEDGER, {}, {}, {}, [])["realized_today_won"] is None
    rows = [{"id": "a", "code": "005930", "cash_won": 1_000, "holding": 2, "avg_price": 50, "realized_pnl_won": 7},
            {"id": "b", "code": "005930", "cash_won": 2_000, "holding": 1, "avg_price": 80, "realized_pnl_won": -2}]
    d = desk_figures(None, None, {"005930": 100}, {}, rows)
    assert d["source"] == "agents"
    assert (d["cash_won"], d["holdings_won"], d["equity_won"], d["realized_total_won"]) == (3_000, 300, 3_300, 5)
    assert d["unrealized_won"] == 300 - 180 and d["exposure"][0]["agents"] == ["a", "b"]


def test_alerts_of_one_kind_from_one_source_fold_into_one_row_with_the_worst_level() -> None:
    g = AlertGroups()
    for i in range(5):
        g.add("order-manager", "broker_connection", "warning", f"attempt {i}", T0 + i * NS)
    g.add("order-manager", "broker_connection", "error", "gave up", T0 + 9 * NS)
    g.add("supervisor", "agent_died", "warning", "agent x died", T0 + 2 * NS)
    rows = g.rows(T0 + 10 * NS)
    assert [(r["key"], r["count"], r["level"], r["text"]) for r in rows] == [
        ("order-manager/broker_connection", 6, "error", "gave up"), ("supervisor/agent_died", 1, "warning", "agent x died")]
    assert rows[0]["first_ns"] == T0 and rows[0]["last_ns"] == T0 + 9 * NS


def test_an_acknowledged_group_is_quiet_until_its_next_alert_and_a_muted_one_until_the_time_is_up() -> None:
    g = AlertGroups()
    g.add("s", "k", "warning", "one", T0)
    g.add("t", "m", "error", "two", T0)
    assert g.acknowledge("s/k", "dashboard") is not None and g.mute("t/m", 1, T0) is not None
    rows = {r["key"]: r for r in g.rows(T0 + NS)}
    assert not rows["s/k"]["active"] and rows["s/k"]["acked"] and rows["s/k"]["acked_by"] == "dashboard"
    assert not rows["t/m"]["active"] and rows["t/m"]["muted"]
    g.add("s", "k", "warning", "three", T0 + 2 * NS)
    rows = {r["key"]: r for r in g.rows(T0 + 61 * NS)}
    assert rows["s/k"]["active"] and rows["t/m"]["active"]  # a new alert, and the hour... the minute is over
    assert g.acknowledge("nope/none", "x") is None and g.mute("nope/none", 5, T0) is None


def state() -> FirmState:
    return FirmState(ROSTER, {"005930": "Samsung Electronics"}, {"005930": 70_000}, started_ns=T0)


def liveness(s: FirmState, now_ns: int) -> dict[str, str]:
    return {r["name"]: r["liveness"] for r in s.view(["processes"], now_ns)["processes"]["rows"]}


def test_a_process_is_starting_in_the_grace_period_then_running_late_and_dead() -> None:
    s = state()
    assert liveness(s, T0 + NS)["order-manager"] == "starting"
    assert liveness(s, T0 + int((STARTUP_GRACE_S + 1) * NS))["order-manager"] == "dead"
    s.apply("sys.heartbeat.exchange", "exchange", Heartbeat(name="exchange", pid=42, ts_ns=T0, state="running"), T0)
    assert liveness(s, T0 + 2 * NS)["exchange"] == "running"
    assert liveness(s, T0 + 5 * NS)["exchange"] == "late"
    assert liveness(s, T0 + 11 * NS)["exchange"] == "dead"


def test_a_process_that_announced_a_longer_heartbeat_interval_is_held_to_it() -> None:
    s = state()
    s.apply("sys.heartbeat.market-data", "market-data",
            Heartbeat(name="market-data", pid=42, ts_ns=T0, state="running", interval_s=5.0), T0)
    assert liveness(s, T0 + 14 * NS)["market-data"] == "running"  # 3 of its 5 s intervals
    assert liveness(s, T0 + 16 * NS)["market-data"] == "late"
    assert liveness(s, T0 + 51 * NS)["market-data"] == "dead"


def test_each_process_is_listed_once_under_its_own_name() -> None:
    s = state()
    for name in ("market-data", "order-manager", "risk-guard", "exchange"):
        s.apply(f"sys.heartbeat.{name}", name, Heartbeat(name=name, pid=7, ts_ns=T0), T0)
    names = [r["name"] for r in s.view(["processes"], T0)["processes"]["rows"]]
    assert len(names) == len(set(names)) and not [n for n in names if "_" in n]


def test_an_agent_row_carries_its_log_counts_refusals_and_last_error() -> None:
    s = state()
    info = {"agent_id": "sma-samsung", "code": "005930", "strategy": "sma_cross", "last_error": "on_bar: ValueError: x",
            "refused": {"RISK_NOTIONAL": 2}, "refused_own": {"MARKET_CLOSED": 1},
            "log": {"warnings_1h": 3, "errors_1h": 1, "last_error": "runtime: boom", "last_error_ns": T0}}
    s.apply("sys.heartbeat.agent.sma-samsung", "sma-samsung", Heartbeat(name="sma-samsung", pid=9, ts_ns=T0, info=info), T0)
    r = next(r for r in s.view(["agents"], T0)["agents"]["rows"] if r["id"] == "sma-samsung")
    assert (r["warnings_1h"], r["errors_1h"], r["last_error"]) == (3, 1, "on_bar: ValueError: x")
    assert r["refusals"] == {"RISK_NOTIONAL": 2, "MARKET_CLOSED": 1} and r["refusals_total"] == 3


def test_without_counts_from_the_agent_the_refusals_heard_on_the_bus_are_shown() -> None:
    s = state()
    s.apply("oms.event.trend-naver", "order-manager", OrderEvent(client_order_id="trend-naver-1", agent_id="trend-naver",
            code="035420", side="buy", status="rejected", qty=1, reason_code="MARKET_CLOSED", ts_ns=T0), T0)
    r = next(r for r in s.view(["agents"], T0)["agents"]["rows"] if r["id"] == "trend-naver")
    assert r["refusals"] == {"MARKET_CLOSED": 1}


def test_the_desk_section_reads_the_ledger_answer_and_the_opening_of_its_date() -> None:
    asked: list[str] = []

    def opening(date: str) -> dict[str, int]:
        asked.append(date)
        return {"@account": 10_000}

    s = FirmState(ROSTER, {}, {}, started_ns=T0, opening_realized=opening)
    s.set_rpc("order_manager.positions", True, LEDGER, "", T0)
    s.mark_rates(T0 + 6 * NS)
    d = s.view(["desk"], T0 + 6 * NS)["desk"]
    assert d["source"] == "ledger" and d["realized_today_won"] == 5_000 and d["ledger_date"] == "20261201"
    assert d["curve"] and d["curve"][-1][1] == d["equity_won"]
    assert set(asked) == {"20261201"}


def test_alert_groups_are_in_the_alerts_section_and_actions_change_them() -> None:
    s = state()
    for i in range(3):
        s.apply("sys.alert", "supervisor", Alert(level=AlertLevel.WARNING, source="supervisor", kind="heartbeat_late",
                                                 text=f"late {i}", ts_ns=T0 + i), T0)
    view = s.view(["alerts"], T0)["alerts"]
    assert view["active"] == 1 and view["groups"][0]["count"] == 3
    assert s.alert_action("ack", "supervisor/heartbeat_late", "dashboard", 0, T0)["acked"]
    assert s.view(["alerts"], T0)["alerts"]["active"] == 0
    assert s.alert_action("mute", "no/such", "dashboard", 5, T0) is None


def test_the_log_counter_counts_warnings_and_errors_and_keeps_the_last_error() -> None:
    counter = LogCounter()
    log = logging.getLogger("test.logcount")
    log.addHandler(counter)
    log.propagate = False
    try:
        log.info("not counted")
        log.warning("w1")
        log.warning("w2")
        log.error("bad %s", "thing")
        log.error("bad format %d", "not a number")  # a broken format string is counted, not raised
    finally:
        log.removeHandler(counter)
    summary = counter.summary()
    assert (summary["warnings_1h"], summary["errors_1h"]) == (2, 2)
    assert summary["last_error"].startswith("test.logcount: bad format") and summary["last_error_ns"] > 0
