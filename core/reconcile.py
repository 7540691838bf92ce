"""Reconciliation: the broker's account against the order journal and the agents' books (pure).

Three views of the firm should agree: the broker's account (cash, holdings,
open orders, today's executions), the order manager's journal (orders and
fills it recorded, and the holdings and cash they imply) and each agent's own
book. ``reconcile`` compares them and classifies every difference:

==================================  =========================================  ====================
class                               what it means                              proposed action
==================================  =========================================  ====================
FILL_MISSING_IN_OMS                 the broker executed, the journal has no    APPLY_MISSING_FILL
                                    such execution id (order known to the OMS)  (heal: safe)
FILL_MISSING_IN_OMS (unknown order) an execution of an order the OMS never     HALT
                                    journaled
FILL_MISSING_AT_BROKER              the journal has an execution the broker    HALT
                                    does not know
UNKNOWN_OPEN_ORDER_AT_BROKER        working at the broker, unknown to the OMS  HALT
                                    (or final in the journal)
ORDER_OPEN_IN_OMS_GONE_AT_BROKER    open in the journal, not open at the       RESOLVE_ORDER
                                    broker                                      (heal: safe)
POSITION_DIFFERENCE                 broker holding != journal holding, after   HALT
                                    the missing fills are accounted for
CASH_DIFFERENCE                     broker cash != journal cash, likewise      HALT
AGENT_BOOK_DIFFERENCE               an agent's book (holdings, cash) != its    ALERT
                                    entry in the ledger                         (the agent re-syncs)
LEDGER_DIFFERENCE                   the ledger's account moved otherwise than  HALT
                                    the sum of its agents since they opened
AGENT_BOOK_BEHIND                   an agent has not applied the journal's     WAIT
                                    latest fill of its own yet (in flight): its (pending; its book is
                                    book is not compared this time              compared once caught up)
==================================  =========================================  ====================

Healing is safe only where the broker's own record settles the question: a
missing fill is applied with the broker's execution id (idempotent), and a
vanished order is resolved from the broker's record of it. Everything else
means the firm does not know its exposure, so trading must stop.

Holdings the firm does not manage (the owner's own shares in the same account)
are given as ``unmanaged`` {code: shares}: that many shares are left out of the
broker's holding, and the broker's orders and executions in such a code that do
not carry a firm client order id are left out too.

The journal side is the ledger (the book of record, kept independently of
the broker): the account's holdings and cash now, each agent's, and the
opening each book was created with (``origins``). The account must have moved
exactly as the sum of its agents since (a fill or an adjustment moves both);
the agents' starting holdings (``start_qty`` in the roster) are the agents'
own and are not at the broker, which is why the check compares movements, not
levels. An agent's book is compared with its ledger entry, holdings and cash.

Inputs are plain data (what the RPC calls return); ``broker_state_from_plain``
and ``journal_state_from_plain`` validate them and raise ``ReconcileInputError``
with a reason on anything malformed. The report is plain data too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from core.messages import TERMINAL_STATUSES, OrderStatus

FIRM_CLIENT_ORDER_ID = re.compile(r"^[a-z][a-z0-9_-]*-[0-9]{8}-[0-9]+$")


class DiffClass(StrEnum):
    """The kinds of difference between the broker, the journal and the agents."""

    FILL_MISSING_IN_OMS = "FILL_MISSING_IN_OMS"
    FILL_MISSING_AT_BROKER = "FILL_MISSING_AT_BROKER"
    UNKNOWN_OPEN_ORDER_AT_BROKER = "UNKNOWN_OPEN_ORDER_AT_BROKER"
    ORDER_OPEN_IN_OMS_GONE_AT_BROKER = "ORDER_OPEN_IN_OMS_GONE_AT_BROKER"
    POSITION_DIFFERENCE = "POSITION_DIFFERENCE"
    CASH_DIFFERENCE = "CASH_DIFFERENCE"
    AGENT_BOOK_DIFFERENCE = "AGENT_BOOK_DIFFERENCE"
    LEDGER_DIFFERENCE = "LEDGER_DIFFERENCE"
    AGENT_BOOK_BEHIND = "AGENT_BOOK_BEHIND"


class Action(StrEnum):
    """What the reconciler should do about a difference."""

    APPLY_MISSING_FILL = "APPLY_MISSING_FILL"  # heal: OMS Command apply_missing_fill with the broker's fill
    RESOLVE_ORDER = "RESOLVE_ORDER"  # heal: OMS Command resolve_order {client_order_id}
    HALT = "HALT"  # alert and ask the risk guard to halt
    ALERT = "ALERT"  # tell a person; no trading consequence
    WAIT = "WAIT"  # something in flight explains it: look again (pending)


HEALING_ACTIONS = frozenset({Action.APPLY_MISSING_FILL, Action.RESOLVE_ORDER})


class ReconcileInputError(ValueError):
    """A source answered with data that cannot be reconciled (the reason says what is wrong)."""


@dataclass(frozen=True, slots=True)
class BrokerState:
    """The broker's account: cash, holdings by code, open orders and today's executions."""

    cash_won: int | None
    positions: Mapping[str, int]
    open_orders: tuple[Mapping[str, Any], ...] = ()
    fills: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class JournalState:
    """The order manager's journal: today's orders and fills, and the holdings and cash they imply.

    ``positions`` (firm-wide, by code), ``cash_won`` and ``agent_positions``
    (agent -> code -> shares, from executions only) are None when the order
    manager does not report them; the matching checks are then skipped and
    the report says so.
    """

    orders: tuple[Mapping[str, Any], ...] = ()
    fills: tuple[Mapping[str, Any], ...] = ()
    positions: Mapping[str, int] | None = None
    cash_won: int | None = None
    agent_positions: Mapping[str, Mapping[str, int]] | None = None
    agent_cash: Mapping[str, int] | None = None
    agent_last_fill: Mapping[str, str] | None = None  # agent -> exec id of its latest fill in the journal
    ledger: Mapping[str, Mapping[str, Any]] | None = None  # book -> core.ledger.Book plain form, now
    origins: Mapping[str, Mapping[str, Any]] | None = None  # book -> the opening it was created with


@dataclass(frozen=True, slots=True)
class Difference:
    """One difference: its class, what it is about, the two sides, and the proposed action."""

    kind: DiffClass
    action: Action
    key: str  # exec id, client order id, code, or "agent/code"
    text: str
    broker: Any = None
    oms: Any = None
    data: Mapping[str, Any] = field(default_factory=dict)  # what a healing action needs (e.g. the broker's fill)

    @property
    def safe_to_heal(self) -> bool:
        """Whether the reconciler may fix it on its own."""
        return self.action in HEALING_ACTIONS

    def to_plain(self) -> dict[str, Any]:
        """JSON-safe form for the journal, the bus and the CLI."""
        return {
            "kind": self.kind.value,
            "action": self.action.value,
            "key": self.key,
            "text": self.text,
            "broker": self.broker,
            "oms": self.oms,
            "data": dict(self.data),
        }


@dataclass(slots=True)
class Report:
    """The outcome of one reconciliation: every difference and the checks that could not run."""

    differences: list[Difference] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # checks left out for lack of data, with why

    @property
    def clean(self) -> bool:
        return not self.differences

    def to_heal(self) -> list[Difference]:
        """Differences the reconciler may fix itself."""
        return [d for d in self.differences if d.safe_to_heal]

    def needing_halt(self) -> list[Difference]:
        """Differences that mean the firm does not know its exposure."""
        return [d for d in self.differences if d.action is Action.HALT]

    def to_plain(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "differences": [d.to_plain() for d in self.differences],
            "skipped": list(self.skipped),
        }


# --- input -------------------------------------------------------------------


def _int(value: Any, what: str) -> int:
    if type(value) is not int:
        raise ReconcileInputError(f"{what} must be an integer, got {value!r}")
    return value


def _positions(raw: Any, what: str) -> dict[str, int]:
    """Holdings given as {code: qty} or {code: {"qty": qty, ...}}; zero holdings dropped."""
    if not isinstance(raw, Mapping):
        raise ReconcileInputError(f"{what} must be a mapping of code to holding, got {type(raw).__name__}")
    out: dict[str, int] = {}
    for code, value in raw.items():
        qty = value.get("qty") if isinstance(value, Mapping) else value
        qty = _int(qty, f"{what}[{code}] quantity")
        if qty:
            out[str(code)] = qty
    return out


def _records(raw: Any, what: str, required: Iterable[str]) -> tuple[Mapping[str, Any], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, (list, tuple)):
        raise ReconcileInputError(f"{what} must be a list, got {type(raw).__name__}")
    need = tuple(required)
    for i, rec in enumerate(raw):
        if not isinstance(rec, Mapping):
            raise ReconcileInputError(f"{what}[{i}] must be a mapping, got {type(rec).__name__}")
        missing = [k for k in need if k not in rec]
        if missing:
            raise ReconcileInputError(f"{what}[{i}] lacks {', '.join(missing)}")
    return tuple(raw)


FILL_KEYS = ("exec_id", "client_order_id", "agent_id", "code", "side", "qty", "price")
ORDER_KEYS = ("client_order_id", "status")


def broker_state_from_plain(
    account: Mapping[str, Any], positions: Any, open_orders: Any, fills: Any
) -> BrokerState:
    """The broker's answers (account, positions, open_orders, fills_today) as a BrokerState."""
    if not isinstance(account, Mapping):
        raise ReconcileInputError("broker account must be a mapping")
    cash = account.get("cash_won")
    return BrokerState(
        cash_won=None if cash is None else _int(cash, "broker cash_won"),
        positions=_positions(positions, "broker positions"),
        open_orders=_records(open_orders, "broker open orders", ORDER_KEYS),
        fills=_records(fills, "broker fills", FILL_KEYS),
    )


def journal_state_from_plain(
    raw: Any,
    baseline_positions: Mapping[str, int] | None = None,
    baseline_cash_won: int | None = None,
) -> JournalState:
    """The order manager's ``journal_state`` answer as a JournalState.

    Keys read: ``orders`` and ``fills`` (lists of OrderEvent / Fill dicts) and
    ``agents`` ({agent_id: {"positions": {code: {qty, avg_price}}, "cash_flow_won"}}).
    Holdings and cash come from ``positions`` / ``cash_won`` when the answer
    carries them; otherwise they are the day's net (``account`` {code: qty} and
    the agents' ``cash_flow_won``) on top of the baseline the caller knows
    (the account at the start of the day), and are left out without one.
    """
    if not isinstance(raw, Mapping):
        raise ReconcileInputError(f"journal state must be a mapping, got {type(raw).__name__}")
    agents = raw.get("agents")
    agent_positions: dict[str, dict[str, int]] | None = None
    agent_cash: dict[str, int] | None = None
    agent_last_fill: dict[str, str] | None = None
    day_cash_flow = 0
    if agents is not None:
        if not isinstance(agents, Mapping):
            raise ReconcileInputError("journal agents must be a mapping of agent id to book")
        agent_positions = {}
        for agent_id, book in agents.items():
            if not isinstance(book, Mapping):
                raise ReconcileInputError(f"journal agents[{agent_id}] must be a mapping")
            agent_positions[str(agent_id)] = _positions(book.get("positions", {}), f"journal agents[{agent_id}].positions")
            day_cash_flow += _int(book.get("cash_flow_won", 0), f"journal agents[{agent_id}].cash_flow_won")
            if book.get("cash_won") is not None:
                agent_cash = agent_cash if agent_cash is not None else {}
                agent_cash[str(agent_id)] = _int(book["cash_won"], f"journal agents[{agent_id}].cash_won")
            if isinstance(book.get("last_exec_id"), str):
                agent_last_fill = agent_last_fill if agent_last_fill is not None else {}
                agent_last_fill[str(agent_id)] = book["last_exec_id"]
    positions: dict[str, int] | None = None
    if raw.get("positions") is not None:
        positions = _positions(raw["positions"], "journal positions")
    elif raw.get("account") is not None and baseline_positions is not None:
        positions = dict(baseline_positions)
        for code, qty in _positions(raw["account"], "journal account").items():
            positions[code] = positions.get(code, 0) + qty
        positions = {c: q for c, q in positions.items() if q}
    cash: int | None = None
    if raw.get("cash_won") is not None:
        cash = _int(raw["cash_won"], "journal cash_won")
    elif agents is not None and baseline_cash_won is not None:
        cash = baseline_cash_won + day_cash_flow
    ledger, origins = raw.get("ledger"), raw.get("origins")
    for what, value in (("ledger", ledger), ("origins", origins)):
        if value is not None and (not isinstance(value, Mapping) or not all(isinstance(b, Mapping) for b in value.values())):
            raise ReconcileInputError(f"journal {what} must be a mapping of book to book")
    return JournalState(
        orders=_records(raw.get("orders"), "journal orders", ORDER_KEYS),
        # today's executions by their trading date when the ledger gives them apart (a late fill of a rolled
        # day counts in today's books but is the broker's execution of that earlier day)
        fills=_records(raw["day_fills"] if "day_fills" in raw else raw.get("fills"), "journal fills", FILL_KEYS),
        positions=positions,
        cash_won=cash,
        agent_positions=agent_positions,
        agent_cash=agent_cash,
        agent_last_fill=agent_last_fill,
        ledger=ledger or None,
        origins=origins or None,
    )


# --- the comparison ----------------------------------------------------------


def _signed_qty(fill: Mapping[str, Any]) -> int:
    return int(fill["qty"]) if str(fill["side"]) == "buy" else -int(fill["qty"])


def _cash_effect(fill: Mapping[str, Any]) -> int:
    notional = int(fill["qty"]) * int(fill["price"])
    fee, tax = int(fill.get("fee_won", 0) or 0), int(fill.get("tax_won", 0) or 0)
    if str(fill["side"]) == "buy":
        return -(notional + fee)
    return notional - fee - tax


def _is_open(status: Any) -> bool:
    try:
        return OrderStatus(str(status)) not in TERMINAL_STATUSES
    except ValueError:
        return False


def _managed(record: Mapping[str, Any], unmanaged: Mapping[str, int]) -> bool:
    """Whether a broker record is the firm's (not the owner's own trading in an unmanaged code)."""
    if str(record.get("code", "")) not in unmanaged:
        return True
    return bool(FIRM_CLIENT_ORDER_ID.match(str(record.get("client_order_id", ""))))


def reconcile(
    broker: BrokerState,
    journal: JournalState,
    agent_books: Mapping[str, Mapping[str, int]] | None = None,
    agent_starts: Mapping[str, Mapping[str, int]] | None = None,
    unmanaged: Mapping[str, int] | None = None,
    agent_cash: Mapping[str, int] | None = None,
    agent_last_fill: Mapping[str, str] | None = None,
) -> Report:
    """Compare the broker with the journal (and the agents' books when given) and classify each difference.

    ``agent_books``: agent -> code -> shares as each agent reports it (agents
    that could not be reached are simply absent). ``agent_starts``: the
    roster's starting holdings, agent -> code -> shares, added to the
    journal's holdings of the agent (empty when those come from the ledger,
    which holds them already). ``agent_cash``: agent -> cash as each agent
    reports it, compared with the journal's when it reports agents' cash.
    ``agent_last_fill``: agent -> exec id of the latest fill its book has
    applied; an agent that has not reached the journal's latest fill of its
    own is behind (AGENT_BOOK_BEHIND, pending) and its book is not compared.
    An execution missing in the journal is missing in every agent's book too
    (agents learn fills only from the order manager), so an agent's book is
    compared with the journal as it stands: the heal brings both along.
    """
    unmanaged = unmanaged or {}
    report = Report()
    diffs = report.differences

    journal_orders = {str(o["client_order_id"]): o for o in journal.orders}
    journal_exec = {str(f["exec_id"]): f for f in journal.fills}
    broker_fills = [f for f in broker.fills if _managed(f, unmanaged)]
    broker_exec = {str(f["exec_id"]): f for f in broker_fills}
    broker_open = {str(o["client_order_id"]): o for o in broker.open_orders if _managed(o, unmanaged)}

    # executions
    missing_in_oms: list[Mapping[str, Any]] = []
    for exec_id, fill in broker_exec.items():
        if exec_id in journal_exec:
            continue
        missing_in_oms.append(fill)
        coid = str(fill["client_order_id"])
        brief = f"{fill['side']} {fill['qty']} {fill['code']} @ {fill['price']} ({coid})"
        if coid in journal_orders:
            diffs.append(Difference(DiffClass.FILL_MISSING_IN_OMS, Action.APPLY_MISSING_FILL, exec_id,
                                    f"broker execution {exec_id} {brief} is not in the journal",
                                    broker=dict(fill), data={"fill": dict(fill)}))
        else:
            diffs.append(Difference(DiffClass.FILL_MISSING_IN_OMS, Action.HALT, exec_id,
                                    f"broker execution {exec_id} {brief} belongs to an order the journal never had",
                                    broker=dict(fill)))
    for exec_id, fill in journal_exec.items():
        if exec_id not in broker_exec:
            diffs.append(Difference(DiffClass.FILL_MISSING_AT_BROKER, Action.HALT, exec_id,
                                    f"journal execution {exec_id} ({fill['client_order_id']}) is unknown to the broker",
                                    oms=dict(fill)))

    # orders
    for coid, order in broker_open.items():
        known = journal_orders.get(coid)
        if known is None:
            diffs.append(Difference(DiffClass.UNKNOWN_OPEN_ORDER_AT_BROKER, Action.HALT, coid,
                                    f"order {coid} ({order.get('side', '?')} {order.get('qty', '?')} {order.get('code', '?')}) "
                                    "is working at the broker but the journal never had it",
                                    broker=dict(order)))
        elif not _is_open(known["status"]):
            diffs.append(Difference(DiffClass.UNKNOWN_OPEN_ORDER_AT_BROKER, Action.HALT, coid,
                                    f"order {coid} is working at the broker but {known['status']} in the journal",
                                    broker=dict(order), oms=dict(known)))
    for coid, order in journal_orders.items():
        status = str(order["status"])
        # NEW has not left the firm; the OMS resolves its own in-flight submissions.
        if status == OrderStatus.NEW.value or not _is_open(status) or coid in broker_open:
            continue
        diffs.append(Difference(DiffClass.ORDER_OPEN_IN_OMS_GONE_AT_BROKER, Action.RESOLVE_ORDER, coid,
                                f"order {coid} is {status} in the journal but not open at the broker",
                                oms=dict(order), data={"client_order_id": coid}))

    # holdings, after the executions the journal is about to receive
    if journal.positions is None:
        report.skipped.append("positions: the journal state carries no positions")
    else:
        expected = dict(journal.positions)
        for fill in missing_in_oms:
            expected[str(fill["code"])] = expected.get(str(fill["code"]), 0) + _signed_qty(fill)
        for code in sorted(set(broker.positions) | set(expected)):
            at_broker = broker.positions.get(code, 0) - unmanaged.get(code, 0)
            in_journal = expected.get(code, 0)
            if at_broker != in_journal:
                diffs.append(Difference(DiffClass.POSITION_DIFFERENCE, Action.HALT, code,
                                        f"{code}: broker holds {at_broker} managed shares, the journal {in_journal}",
                                        broker=at_broker, oms=in_journal))

    if journal.cash_won is None or broker.cash_won is None:
        report.skipped.append("cash: " + ("the journal" if journal.cash_won is None else "the broker") + " reports no cash")
    else:
        expected_cash = journal.cash_won + sum(_cash_effect(f) for f in missing_in_oms)
        if broker.cash_won != expected_cash:
            diffs.append(Difference(DiffClass.CASH_DIFFERENCE, Action.HALT, "cash",
                                    f"broker cash {broker.cash_won:,} won, the journal {expected_cash:,} won "
                                    f"(difference {broker.cash_won - expected_cash:+,} won)",
                                    broker=broker.cash_won, oms=expected_cash))

    if journal.ledger is not None and journal.origins is not None:
        diffs.extend(ledger_differences(journal.ledger, journal.origins))
    if agent_last_fill and journal.agent_last_fill is not None:
        for agent_id, seen in sorted(agent_last_fill.items()):
            latest = journal.agent_last_fill.get(agent_id, "")
            if latest and seen != latest:
                diffs.append(Difference(DiffClass.AGENT_BOOK_BEHIND, Action.WAIT, f"{agent_id}/fills",
                                        f"agent {agent_id} has applied fills up to {seen or 'none'}, the journal "
                                        f"holds {latest}", broker=None, oms=latest,
                                        data={"agent_id": agent_id, "agent": seen}))
                agent_books = {a: b for a, b in (agent_books or {}).items() if a != agent_id}
                agent_cash = {a: c for a, c in (agent_cash or {}).items() if a != agent_id}
    if agent_books:
        _compare_agent_books(report, journal, agent_books, agent_starts or {})
    if agent_cash and journal.agent_cash is not None:
        for agent_id in sorted(agent_cash):
            implied = journal.agent_cash.get(agent_id)
            if implied is None:
                continue
            if agent_cash[agent_id] != implied:
                diffs.append(Difference(
                    DiffClass.AGENT_BOOK_DIFFERENCE, Action.ALERT, f"{agent_id}/cash",
                    f"agent {agent_id} books {agent_cash[agent_id]:,} won of cash, the ledger {implied:,} won",
                    broker=None, oms=implied, data={"agent_id": agent_id, "agent": agent_cash[agent_id]}))
    return report


def ledger_differences(ledger: Mapping[str, Mapping[str, Any]], origins: Mapping[str, Mapping[str, Any]],
                       account: str = "@account") -> list[Difference]:
    """Where the ledger's account moved otherwise than the sum of its agents since each book opened."""
    def moved(book: str) -> tuple[dict[str, int], int]:
        now, start = ledger.get(book) or {}, origins.get(book) or {}
        qty: dict[str, int] = {}
        for sign, b in ((1, now), (-1, start)):
            for code, h in (b.get("positions") or {}).items():
                qty[code] = qty.get(code, 0) + sign * int(h.get("qty", 0))
        return qty, int(now.get("cash_won", 0)) - int(start.get("cash_won", 0))

    if account not in ledger:
        return []
    account_qty, account_cash = moved(account)
    agents_qty: dict[str, int] = {}
    agents_cash = 0
    for book in set(ledger) | set(origins):
        if book == account:
            continue
        qty, cash = moved(book)
        agents_cash += cash
        for code, q in qty.items():
            agents_qty[code] = agents_qty.get(code, 0) + q
    out = []
    for code in sorted(set(account_qty) | set(agents_qty)):
        a, b = account_qty.get(code, 0), agents_qty.get(code, 0)
        if a != b:
            out.append(Difference(DiffClass.LEDGER_DIFFERENCE, Action.HALT, f"ledger/{code}",
                                  f"{code}: the ledger's account moved {a:+,} shares, its agents {b:+,}",
                                  broker=None, oms={"account": a, "agents": b}))
    if account_cash != agents_cash:
        out.append(Difference(DiffClass.LEDGER_DIFFERENCE, Action.HALT, "ledger/cash",
                              f"the ledger's account cash moved {account_cash:+,} won, its agents {agents_cash:+,} won",
                              broker=None, oms={"account": account_cash, "agents": agents_cash}))
    return out


def _compare_agent_books(
    report: Report,
    journal: JournalState,
    agent_books: Mapping[str, Mapping[str, int]],
    agent_starts: Mapping[str, Mapping[str, int]],
) -> None:
    if journal.agent_positions is None:
        report.skipped.append("agent books: the journal state carries no per-agent positions")
        return
    for agent_id in sorted(agent_books):
        book = agent_books[agent_id]
        expected = dict(journal.agent_positions.get(agent_id, {}))
        for code, qty in agent_starts.get(agent_id, {}).items():
            expected[code] = expected.get(code, 0) + qty
        for code in sorted(set(book) | set(expected)):
            own, implied = book.get(code, 0), expected.get(code, 0)
            if own != implied:
                report.differences.append(Difference(
                    DiffClass.AGENT_BOOK_DIFFERENCE, Action.ALERT, f"{agent_id}/{code}",
                    f"agent {agent_id} books {own} shares of {code}, the ledger {implied}",
                    broker=None, oms=implied, data={"agent_id": agent_id, "code": code, "agent": own}))
