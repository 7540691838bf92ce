"""The Risk and Reconciliation views, from answers built by the real risk guard and reconciliation code."""

from __future__ import annotations

from typing import Any

from core.config import PROJECT_ROOT
from core.instruments import load_instruments
from core.messages import Fill, OrderRequest, RiskState, Side, Tick
from core.reconcile import BrokerState, JournalState, reconcile
from core.risk import parse_risk_limits
from dashboard.riskview import level, recon_view, risk_view, run_line
from dashboard.state import FirmState
from services.risk_guard.guard import AgentAllocation, RiskGuard

NS = 1_000_000_000
T0 = 1_796_000_000 * NS
INSTRUMENTS = load_instruments(PROJECT_ROOT / "configs" / "instruments.csv")
HYNIX, SAMSUNG = "000660", "005930"


def consistent_guard() -> RiskGuard:
    """A guard of two agents, synced, in the continuous session; agent "calm" may have 4 open orders."""
    limits = parse_risk_limits({"agents": {"calm": {"max_open_orders": 4}},
                                "loss": {"daily_loss_limit_agent_won": 1_000_000},
                                "position": {"max_qty_per_agent": 1_000, "max_notional_per_agent_won": 100_000_000,
                                             "max_qty_per_code": 1_200}})
    guard = RiskGuard(limits, INSTRUMENTS, [AgentAllocation("calm", 80_000_000, {}),
                                            AgentAllocation("loser", 80_000_000, {SAMSUNG: (100, 71_000)})])
    guard.load_journal({}, T0)
    guard.load_market({"session": {"phase": "continuous", "trading_date": "20261201"}}, T0)
    assert guard.consistent
    return guard


def status_entry(guard: RiskGuard, ts_ns: int) -> dict[str, Any]:
    """The dashboard's poll entry for the guard's status answer (as the service builds it)."""
    return {"ok": True, "result": {**guard.status(), "decisions": {"approved": 3, "refused": 0}}, "error": "", "ts_ns": ts_ns}


def order(n: int, agent: str, code: str, qty: int, price: int) -> OrderRequest:
    return OrderRequest(client_order_id=f"{agent}-20261201-{n}", agent_id=agent, code=code, side=Side.BUY, qty=qty, price=price)


def test_usage_bars_colour_by_level_and_agents_sort_by_their_highest_usage() -> None:
    guard = consistent_guard()
    for n in range(3):  # 3 of calm's 4 open orders: 75 %
        assert guard.decide(order(n, "calm", HYNIX, 100, 178_000), T0).approved
    guard.on_message(Fill(exec_id="x1", client_order_id="loser-20261201-9", agent_id="loser", code=SAMSUNG,
                          side=Side.BUY, qty=800, price=71_000), T0)
    guard.on_message(Tick(code=SAMSUNG, ts_ns=T0, price=70_000, qty=1), T0)  # 900 shares lose 900,000 won
    view = risk_view(status_entry(guard, T0), {}, T0 + 5 * NS)

    assert [r["agent"] for r in view["rows"]] == ["loser", "calm"]
    loser, calm = view["rows"]
    assert loser["cells"]["loss"] == {"used": 900_000, "limit": 1_000_000, "pct": 90.0, "level": "breach", "day_pnl_won": -900_000}
    assert loser["cells"]["position"] == {"used": 900, "limit": 1_000, "pct": 90.0, "level": "breach", "code": SAMSUNG, "codes": 1}
    assert loser["cells"]["exposure"]["used"] == 900 * 70_000 and loser["level"] == "breach"
    assert calm["cells"]["open_orders"] == {"used": 3, "limit": 4, "pct": 75.0, "level": "warn"}
    # exposure: nothing held, the pending buys at their limit price
    assert calm["cells"]["exposure"]["used"] == 300 * 178_000 and calm["cells"]["exposure"]["pending_buy_won"] == 300 * 178_000
    assert calm["cells"]["position"]["used"] == 300 and calm["cells"]["position"]["code"] == HYNIX
    account = view["account"]
    assert account["cells"]["loss"]["used"] == 900_000 and account["cells"]["loss"]["limit"] == 30_000_000
    assert account["cells"]["position"]["code"] == SAMSUNG and account["cells"]["position"]["pct"] == 75.0
    assert view["counts"] == {"ok": 0, "warn": 1, "breach": 1}
    assert view["trading_state"] == "ACTIVE" and view["guard"]["answering"]


def test_levels_change_at_70_and_90_percent() -> None:
    assert [level(p) for p in (0, 69.9, 70, 89.9, 90, 130)] == ["ok", "ok", "warn", "warn", "breach", "breach"]


def test_the_state_says_who_halted_why_and_since_when() -> None:
    guard = consistent_guard()
    guard.command("halt", "dashboard", "fat finger on 000660", T0 + NS)
    view = risk_view(status_entry(guard, T0 + 2 * NS), {}, T0 + 61 * NS)
    state = view["state"]
    assert (state["state"], state["who"], state["reason"], state["since_ns"], state["age_s"]) == (
        "HALTED", "dashboard", "fat finger on 000660", T0 + NS, 60.0)
    assert state["operator"] is None


def test_while_starting_the_operators_persisted_halt_is_shown_too() -> None:
    guard = RiskGuard(parse_risk_limits({}), INSTRUMENTS, [AgentAllocation("calm", 50_000_000, {})])
    guard.command("reduce", "reconciler", "2 break(s)", T0)
    state = risk_view(status_entry(guard, T0), {}, T0)["state"]
    assert state["state"] == "HALTED" and state["who"] == "startup" and not state["consistent"]
    assert state["operator"] == {"state": "REDUCING", "reason": "2 break(s)", "who": "reconciler", "ts_ns": T0}


def test_a_newer_risk_state_on_the_bus_wins_over_the_last_status_poll() -> None:
    guard = consistent_guard()
    usage = guard.usage()
    usage["calm"]["open_orders"] = 4
    bus = {"ts_ns": T0 + 3 * NS, "sender": "risk-guard",
           "payload": RiskState(state="REDUCING", reason="loss limit", who="loss-limit", ts_ns=T0 + 3 * NS,
                                usage=usage).model_dump(mode="json")}
    view = risk_view(status_entry(guard, T0), bus, T0 + 4 * NS)
    assert view["trading_state"] == "REDUCING" and view["state"]["since_ns"] == T0 + 3 * NS
    assert view["rows"][0]["agent"] == "calm" and view["rows"][0]["cells"]["open_orders"]["level"] == "breach"
    assert view["limits_known"]  # the limits still come from the status answer


def test_no_answer_yet_is_unknown_and_an_error_is_said() -> None:
    view = risk_view({"ok": False, "result": None, "error": "no server at ipc://x", "ts_ns": T0}, {}, T0)
    assert view["trading_state"] == "unknown" and view["rows"] == []
    assert view["guard"] == {**view["guard"], "answering": False, "error": "no server at ipc://x"}


# --- reconciliation --------------------------------------------------------------------


def differences() -> list[dict[str, Any]]:
    """A position and a cash difference between the broker and the ledger, from core.reconcile."""
    broker = BrokerState(cash_won=99_000_000, positions={HYNIX: 120, SAMSUNG: 50})
    journal = JournalState(positions={HYNIX: 100, SAMSUNG: 50}, cash_won=100_000_000)
    return [d.to_plain() for d in reconcile(broker, journal).differences]


def report(ts_ns: int, breaks: list[dict[str, Any]], pending: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """A report as the reconciler journals and answers it."""
    return {"report_id": f"recon-{ts_ns - 40_000_000}-{n:06x}", "ts_ns": ts_ns, "trigger": "schedule", "clean": not breaks,
            "differences": breaks + pending, "skipped": [], "breaks": breaks, "pending": pending, "healed": [],
            "halted": bool(breaks), "sources": {"broker": "ok", "agents_compared": ["calm"]}}


LEDGER = {"ledger_date": "20261201",
          "agents": {"calm": {"cash_won": 40_000_000, "realized_pnl_won": 12_000, "fees_won": 900, "taxes_won": 0,
                              "positions": {HYNIX: {"qty": 100, "avg_price": 178_000, "cost_won": 17_800_000,
                                                    "realized_pnl_won": 0}}, "adjustments": []}},
          "account": {HYNIX: 100},
          "account_book": {"cash_won": 100_000_000, "realized_pnl_won": 12_000, "fees_won": 900, "taxes_won": 0,
                           "positions": {HYNIX: {"qty": 100, "avg_price": 178_000, "cost_won": 17_800_000,
                                                 "realized_pnl_won": 0}}, "adjustments": []}}


def test_a_break_shows_ours_against_the_brokers_its_age_and_the_adjustment_that_books_it() -> None:
    position, cash = differences()
    behind = {"kind": "AGENT_BOOK_BEHIND", "action": "WAIT", "key": "calm/fills", "text": "calm has applied fills up to x1",
              "broker": None, "oms": "x2", "data": {"agent_id": "calm", "agent": "x1"}}
    first = report(T0, [], [behind], 1)
    latest = report(T0 + 60 * NS, [{**position, "first_seen_ns": T0 + 30 * NS}, {**cash, "first_seen_ns": T0 + 50 * NS}],
                    [behind], 2)
    view = recon_view({"ok": True, "result": latest, "error": "", "ts_ns": T0 + 61 * NS},
                      [{"ts_ns": T0, "sender": "reconciler", "payload": first}],
                      {"ok": True, "result": LEDGER, "error": "", "ts_ns": T0}, T0 + 90 * NS)

    pos, money = view["breaks"]
    assert (pos["kind"], pos["key"], pos["ours"], pos["theirs"], pos["delta"], pos["age_s"]) == (
        "POSITION_DIFFERENCE", HYNIX, 100, 120, 20, 60.0)
    assert pos["adjust"] == {"agent_id": "calm", "code": HYNIX, "qty": 20, "cash_won": 0}  # calm alone holds it
    assert money["adjust"] == {"agent_id": "", "code": "", "qty": 0, "cash_won": -1_000_000} and money["age_s"] == 40.0
    assert "halted" in pos["advice"]
    (wait,) = view["pending_items"]
    assert wait["age_s"] == 90.0 and wait["theirs"] == "x1" and wait["agent"] == "calm" and wait["adjust"] is None
    assert view["pending"] == 1
    assert [(h["ts_ns"], h["breaks"], h["pending"], h["result"]) for h in view["history"]] == [
        (T0 + 60 * NS, 2, 1, "2 break(s), trading halted"), (T0, 0, 1, "clean")]
    assert view["history"][0]["duration_ms"] == 40.0
    assert view["books"][0] == {"book": "calm", "cash_won": 40_000_000, "holdings": f"{HYNIX} 100",
                                "realized_pnl_won": 12_000, "fees_won": 900, "taxes_won": 0, "adjustments": 0}
    assert view["books"][1]["book"] == "ACCOUNT" and HYNIX in view["codes"] and view["agents"] == ["calm"]


def test_a_missing_fill_is_booked_by_its_shares_and_cash() -> None:
    fill = {"exec_id": "E9", "client_order_id": "ghost-20261201-1", "agent_id": "calm", "code": HYNIX, "side": "buy",
            "qty": 10, "price": 178_000, "fee_won": 27}
    (missing,) = reconcile(BrokerState(cash_won=None, positions={}, fills=(fill,)), JournalState()).differences
    view = recon_view({"ok": True, "result": report(T0, [{**missing.to_plain(), "first_seen_ns": T0}], [], 1),
                       "error": "", "ts_ns": T0}, [], None, T0 + NS)
    (item,) = view["breaks"]
    assert item["adjust"] == {"agent_id": "calm", "code": HYNIX, "qty": 10, "cash_won": -(1_780_000 + 27)}
    assert item["theirs"] == f"buy 10 {HYNIX} @ 178000" and item["ours"] is None


def test_a_run_that_could_not_reach_the_broker_says_so() -> None:
    line = run_line({"report_id": "recon-5-abc", "ts_ns": 2_000_005, "trigger": "start", "clean": False,
                     "differences": [], "breaks": [], "pending": [], "healed": [], "halted": False, "sources": {},
                     "error": "the broker does not answer"})
    assert line["result"] == "could not run" and line["error"] == "the broker does not answer" and line["duration_ms"] == 2.0


def test_the_firm_state_keeps_the_keys_the_overview_and_the_raw_view_read() -> None:
    state = FirmState()
    guard = consistent_guard()
    entry = status_entry(guard, T0)
    state.set_rpc("risk_guard.status", True, entry["result"], "", T0)
    risk = state.view(["risk"], T0)["risk"]
    assert risk["trading_state"] == "ACTIVE" and risk["status"]["ok"] and risk["bus"] == {}
    recon = state.view(["recon"], T0)["recon"]
    assert recon["breaks"] == [] and recon["pending"] == 0 and recon["latest"] is None and recon["reports"] == []


def test_without_a_status_answer_the_bus_gives_the_state_but_no_since_and_no_limits() -> None:
    guard = consistent_guard()
    bus = {"ts_ns": T0, "sender": "risk-guard",
           "payload": RiskState(state="HALTED", reason="starting", who="startup", ts_ns=T0, consistent=False,
                                usage=guard.usage()).model_dump(mode="json")}
    view = risk_view({"ok": False, "result": None, "error": "timeout", "ts_ns": T0 + NS}, bus, T0 + 2 * NS)
    assert view["trading_state"] == "HALTED" and view["state"]["since_ns"] is None and not view["limits_known"]
    calm = next(r for r in view["rows"] if r["agent"] == "calm")
    assert calm["cells"]["open_orders"]["limit"] == 4 and calm["cells"]["exposure"] is None  # the usage names its own two limits


def test_an_order_unknown_to_the_journal_is_cancelled_at_the_broker_not_booked() -> None:
    order = {"client_order_id": "ghost-20261201-1", "status": "accepted", "code": HYNIX, "side": "buy", "qty": 1}
    (unknown,) = reconcile(BrokerState(cash_won=None, positions={}, open_orders=(order,)), JournalState()).differences
    (item,) = recon_view({"ok": True, "result": report(T0, [{**unknown.to_plain(), "first_seen_ns": T0}], [], 1),
                          "error": "", "ts_ns": T0}, [], None, T0)["breaks"]
    assert item["adjust"] is None and "cancel it at the broker" in item["advice"]
    assert (item["ours"], item["theirs"], item["code"]) == (None, "accepted", HYNIX)
