"""Reconciliation of the broker's account with the order journal and the agents' books."""

from __future__ import annotations

from typing import Any

import pytest

from core.reconcile import (
    Action,
    BrokerState,
    DiffClass,
    JournalState,
    ReconcileInputError,
    broker_state_from_plain,
    journal_state_from_plain,
    reconcile,
)

COID = "alpha-20260105-1"


def fill(exec_id: str = "E1", coid: str = COID, side: str = "buy", qty: int = 10, price: int = 70_000,
         code: str = "005930", agent: str = "alpha", fee: int = 99, tax: int = 0) -> dict[str, Any]:
    return {"exec_id": exec_id, "client_order_id": coid, "agent_id": agent, "code": code, "side": side,
            "qty": qty, "price": price, "fee_won": fee, "tax_won": tax}


def order(coid: str = COID, status: str = "filled", code: str = "005930", qty: int = 10) -> dict[str, Any]:
    return {"client_order_id": coid, "agent_id": coid.split("-")[0], "code": code, "side": "buy", "status": status,
            "qty": qty, "price": 70_000}


CASH = 1_000_000_000
AFTER_BUY = CASH - 10 * 70_000 - 99


def agreeing() -> tuple[BrokerState, JournalState]:
    broker = BrokerState(cash_won=AFTER_BUY, positions={"005930": 10}, open_orders=(), fills=(fill(),))
    journal = JournalState(orders=(order(),), fills=(fill(),), positions={"005930": 10}, cash_won=AFTER_BUY,
                           agent_positions={"alpha": {"005930": 10}})
    return broker, journal


def kinds(report) -> list[tuple[str, str]]:
    return [(d.kind.value, d.action.value) for d in report.differences]


def test_agreeing_books_are_clean() -> None:
    broker, journal = agreeing()
    report = reconcile(broker, journal, agent_books={"alpha": {"005930": 10}})
    assert report.clean
    assert report.skipped == []


def test_fill_the_oms_missed_is_healed_with_the_broker_execution_and_explains_holding_and_cash() -> None:
    broker, _ = agreeing()
    journal = JournalState(orders=(order(status="accepted"),), fills=(), positions={}, cash_won=CASH,
                           agent_positions={"alpha": {}})
    # the agent learns fills from the order manager only: its book lacks the fill as the journal does
    report = reconcile(broker, journal, agent_books={"alpha": {}})
    # the order is not open at the broker any more (it filled), so it is resolved as well
    assert kinds(report) == [("FILL_MISSING_IN_OMS", "APPLY_MISSING_FILL"),
                             ("ORDER_OPEN_IN_OMS_GONE_AT_BROKER", "RESOLVE_ORDER")]
    missing = report.differences[0]
    assert missing.key == "E1" and missing.data["fill"]["exec_id"] == "E1"
    assert report.needing_halt() == []
    assert len(report.to_heal()) == 2


def test_an_agent_is_compared_with_the_journal_as_it_stands_while_a_fill_is_missing_in_it() -> None:
    broker, _ = agreeing()
    journal = JournalState(orders=(order(status="accepted"),), fills=(), positions={}, cash_won=CASH,
                           agent_positions={"alpha": {}}, agent_cash={"alpha": CASH}, agent_last_fill={"alpha": ""})
    # before the heal lands (the journal refusing writes, say) the agent agrees with the journal: no break
    waiting = reconcile(broker, journal, agent_books={"alpha": {}}, agent_cash={"alpha": CASH},
                        agent_last_fill={"alpha": ""})
    assert DiffClass.AGENT_BOOK_DIFFERENCE not in {d.kind for d in waiting.differences}
    assert len(waiting.to_heal()) == 2
    # an agent holding what neither the journal nor the order manager gave it differs
    ahead = reconcile(broker, journal, agent_books={"alpha": {"005930": 10}}, agent_cash={"alpha": AFTER_BUY},
                      agent_last_fill={"alpha": ""})
    assert [d.key for d in ahead.differences if d.kind is DiffClass.AGENT_BOOK_DIFFERENCE] == [
        "alpha/005930", "alpha/cash"]


def test_fill_of_an_order_the_journal_never_had_needs_a_halt() -> None:
    broker, journal = agreeing()
    stray = fill(exec_id="E9", coid="ghost-20260105-1", agent="ghost", qty=1)
    broker = BrokerState(AFTER_BUY - 70_000 - 99, {"005930": 11}, (), (fill(), stray))
    report = reconcile(broker, journal)
    # the stray execution explains the holding and the cash; it alone is reported
    assert kinds(report) == [("FILL_MISSING_IN_OMS", "HALT")]


def test_fill_in_the_journal_unknown_to_the_broker_needs_a_halt() -> None:
    broker, journal = agreeing()
    journal = JournalState(journal.orders, (fill(), fill(exec_id="E2", qty=5)), {"005930": 15}, AFTER_BUY,
                           journal.agent_positions)
    report = reconcile(broker, journal)
    assert kinds(report) == [("FILL_MISSING_AT_BROKER", "HALT"), ("POSITION_DIFFERENCE", "HALT")]


def test_unknown_open_order_at_the_broker_needs_a_halt() -> None:
    broker, journal = agreeing()
    stranger = order(coid="ghost-20260105-7", status="accepted")
    broker = BrokerState(broker.cash_won, broker.positions, (stranger,), broker.fills)
    report = reconcile(broker, journal)
    assert kinds(report) == [("UNKNOWN_OPEN_ORDER_AT_BROKER", "HALT")]
    assert report.differences[0].key == "ghost-20260105-7"


def test_order_working_at_the_broker_but_final_in_the_journal_needs_a_halt() -> None:
    broker, journal = agreeing()
    broker = BrokerState(broker.cash_won, broker.positions, (order(coid="alpha-20260105-2", status="accepted"),),
                         broker.fills)
    journal = JournalState(journal.orders + (order(coid="alpha-20260105-2", status="canceled"),), journal.fills,
                           journal.positions, journal.cash_won)
    assert kinds(reconcile(broker, journal)) == [("UNKNOWN_OPEN_ORDER_AT_BROKER", "HALT")]


def test_order_open_in_the_journal_gone_at_the_broker_is_resolved() -> None:
    broker, journal = agreeing()
    journal = JournalState(journal.orders + (order(coid="alpha-20260105-2", status="accepted"),), journal.fills,
                           journal.positions, journal.cash_won)
    report = reconcile(broker, journal)
    assert kinds(report) == [("ORDER_OPEN_IN_OMS_GONE_AT_BROKER", "RESOLVE_ORDER")]
    assert report.differences[0].data == {"client_order_id": "alpha-20260105-2"}


def test_new_order_not_yet_sent_is_not_a_difference() -> None:
    broker, journal = agreeing()
    journal = JournalState(journal.orders + (order(coid="alpha-20260105-2", status="new"),), journal.fills,
                           journal.positions, journal.cash_won)
    assert reconcile(broker, journal).clean


def test_position_difference_needs_a_halt() -> None:
    broker, journal = agreeing()
    broker = BrokerState(broker.cash_won, {"005930": 10, "000660": 3}, (), broker.fills)
    report = reconcile(broker, journal)
    assert kinds(report) == [("POSITION_DIFFERENCE", "HALT")]
    assert (report.differences[0].broker, report.differences[0].oms) == (3, 0)


def test_cash_difference_needs_a_halt() -> None:
    broker, journal = agreeing()
    broker = BrokerState(AFTER_BUY - 1, broker.positions, (), broker.fills)
    report = reconcile(broker, journal)
    assert kinds(report) == [("CASH_DIFFERENCE", "HALT")]
    assert "-1 won" in report.differences[0].text


def test_agent_book_difference_is_an_alert_and_counts_the_starting_holding() -> None:
    broker, journal = agreeing()
    starts = {"alpha": {"005935": 500}}
    assert reconcile(broker, journal, {"alpha": {"005930": 10, "005935": 500}}, starts).clean
    report = reconcile(broker, journal, {"alpha": {"005930": 9, "005935": 500}}, starts)
    assert kinds(report) == [("AGENT_BOOK_DIFFERENCE", "ALERT")]
    assert report.differences[0].key == "alpha/005930"


def test_unmanaged_holdings_and_the_owners_own_orders_are_left_out() -> None:
    broker, journal = agreeing()
    owners_order = order(coid="HTS-0001", status="accepted", code="035420")
    owners_fill = fill(exec_id="X1", coid="HTS-0000", code="035420", agent="owner")
    broker = BrokerState(broker.cash_won, {"005930": 10, "035420": 120}, (owners_order,), broker.fills + (owners_fill,))
    assert reconcile(broker, journal, unmanaged={"035420": 120}).clean
    # shares beyond the unmanaged amount are the firm's and must be in the journal
    report = reconcile(broker, journal, unmanaged={"035420": 100})
    assert kinds(report) == [("POSITION_DIFFERENCE", "HALT")]
    # the owner's orders count in an unmanaged code only
    assert ("UNKNOWN_OPEN_ORDER_AT_BROKER", "HALT") in kinds(reconcile(broker, journal))


def test_checks_without_data_are_skipped_and_named() -> None:
    broker, journal = agreeing()
    journal = JournalState(journal.orders, journal.fills)
    report = reconcile(broker, journal, agent_books={"alpha": {"005930": 10}})
    assert report.clean
    assert [s.split(":")[0] for s in report.skipped] == ["positions", "cash", "agent books"]


def test_plain_inputs_are_validated_with_reasons() -> None:
    state = broker_state_from_plain({"cash_won": 5}, {"005930": {"qty": 3, "avg_price": 1}, "000660": {"qty": 0}},
                                    [], [fill()])
    assert state.positions == {"005930": 3}
    journal = journal_state_from_plain({"orders": [order()], "fills": [], "positions": {"005930": 2},
                                        "agents": {"alpha": {"positions": {"005930": {"qty": 2}}}}})
    assert journal.agent_positions == {"alpha": {"005930": 2}}
    # the order manager's own shape: the day's net on top of the start of the day
    day = {"orders": [], "fills": [fill()], "account": {"005930": 10},
           "agents": {"alpha": {"positions": {"005930": {"qty": 10, "avg_price": 70_000}}, "cash_flow_won": -700_099}}}
    journal = journal_state_from_plain(day, baseline_positions={"000660": 5}, baseline_cash_won=CASH)
    assert journal.positions == {"000660": 5, "005930": 10}
    assert journal.cash_won == AFTER_BUY
    assert journal_state_from_plain(day).positions is None
    with pytest.raises(ReconcileInputError, match="lacks exec_id"):
        broker_state_from_plain({}, {}, [], [{"qty": 1}])
    with pytest.raises(ReconcileInputError, match="integer"):
        journal_state_from_plain({"positions": {"005930": "many"}})
    with pytest.raises(ReconcileInputError, match="mapping"):
        journal_state_from_plain(["not", "a", "mapping"])


def test_report_is_plain_data() -> None:
    broker, journal = agreeing()
    report = reconcile(BrokerState(AFTER_BUY - 1, broker.positions, (), broker.fills), journal)
    plain = report.to_plain()
    assert plain["clean"] is False
    assert plain["differences"][0]["kind"] == DiffClass.CASH_DIFFERENCE.value
    assert plain["differences"][0]["action"] == Action.HALT.value


def test_an_agent_behind_the_journals_latest_fill_is_pending_and_its_book_is_compared_once_caught_up() -> None:
    broker, journal = agreeing()
    journal = JournalState(orders=journal.orders, fills=journal.fills, positions=journal.positions,
                           cash_won=journal.cash_won, agent_positions={"alpha": {"005930": 10}},
                           agent_cash={"alpha": 5_000}, agent_last_fill={"alpha": "E1"})
    behind = reconcile(broker, journal, agent_books={"alpha": {}}, agent_cash={"alpha": 9_000},
                       agent_last_fill={"alpha": ""})
    assert kinds(behind) == [("AGENT_BOOK_BEHIND", "WAIT")]
    caught_up = reconcile(broker, journal, agent_books={"alpha": {}}, agent_cash={"alpha": 9_000},
                          agent_last_fill={"alpha": "E1"})
    assert kinds(caught_up) == [("AGENT_BOOK_DIFFERENCE", "ALERT"), ("AGENT_BOOK_DIFFERENCE", "ALERT")]


def test_the_ledgers_account_must_move_as_the_sum_of_its_agents() -> None:
    from core.reconcile import ledger_differences

    origins = {"@account": {"cash_won": 100, "positions": {}}, "a": {"cash_won": 60, "positions": {"005930": {"qty": 5}}}}
    agreeing_now = {"@account": {"cash_won": 90, "positions": {"005930": {"qty": 1}}},
                    "a": {"cash_won": 50, "positions": {"005930": {"qty": 6}}}}
    assert ledger_differences(agreeing_now, origins) == []
    drifted = {**agreeing_now, "@account": {"cash_won": 89, "positions": {"005930": {"qty": 2}}}}
    assert sorted(d.key for d in ledger_differences(drifted, origins)) == ["ledger/005930", "ledger/cash"]
