"""What a chaos run must still hold: the exchange, the order manager's journal and the agents' books agree.

``ExchangeRecorder`` reads the exchange's own store (``exchange/exchange.sqlite``,
read-only) a few times a second and keeps each day's orders and fills, since
the exchange clears them at the overnight jump. The checks compare a closed
day (or the whole run) across the three records and answer ``Check`` values
(name, passed, detail); they never stop at the first failure.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.order_manager.positions import positions_from_fills

TERMINAL = frozenset({"filled", "canceled", "rejected", "expired"})
OPEN_AT_EXCHANGE = frozenset({"accepted", "partially_filled"})


@dataclass(frozen=True)
class Check:
    """One assertion of the run: its name, whether it held, and what was seen when it did not."""

    name: str
    passed: bool
    detail: str = ""


def _date_of(client_order_id: str) -> str:
    parts = client_order_id.rsplit("-", 2)
    return parts[1] if len(parts) == 3 and len(parts[1]) == 8 and parts[1].isdigit() else ""


def _read(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


class ExchangeRecorder:
    """Every order and fill the exchange held, by trading date, read from its store."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "exchange" / "exchange.sqlite"
        self.orders: dict[str, dict[str, dict[str, Any]]] = {}  # date -> client order id -> row
        self.fills: dict[str, dict[str, dict[str, Any]]] = {}  # date -> exec id -> row
        self.reads = 0

    def poll(self) -> None:
        """Read the store once (skipped while it does not exist or is busy)."""
        if not self.path.exists():
            return
        try:
            orders = _read(self.path, "SELECT client_order_id, broker_order_id, status, qty, filled_qty, "
                                      "canceled_qty, agent_id, code, side FROM orders")
            fills = _read(self.path, "SELECT exec_id, client_order_id, agent_id, code, side, qty, price, fee_won, "
                                     "tax_won FROM fills")
        except sqlite3.Error:
            return
        self.reads += 1
        for coid, boid, status, qty, filled, canceled, agent, code, side in orders:
            self.orders.setdefault(_date_of(coid), {})[coid] = {
                "broker_order_id": boid, "status": status, "qty": qty, "filled_qty": filled,
                "canceled_qty": canceled, "agent_id": agent, "code": code, "side": side}
        for exec_id, coid, agent, code, side, qty, price, fee, tax in fills:
            self.fills.setdefault(_date_of(coid), {})[exec_id] = {
                "exec_id": exec_id, "client_order_id": coid, "agent_id": agent, "code": code, "side": side,
                "qty": qty, "price": price, "fee_won": fee, "tax_won": tax}

    def account(self) -> tuple[int, dict[str, int]]:
        """The broker account's cash and holdings (non-zero), as stored now."""
        (cash,), = _read(self.path, "SELECT cash_won FROM accounts")
        held = {code: qty for code, qty in _read(self.path, "SELECT code, qty FROM positions") if qty}
        return int(cash), held


class Journal:
    """Read-only queries of the order manager's journal."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "journal.sqlite"

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return _read(self.path, sql, *args)

    def orders(self, date: str) -> dict[str, dict[str, Any]]:
        cols = ("client_order_id", "status", "qty", "filled_qty", "broker_order_id", "reason_code", "agent_id")
        return {r[0]: dict(zip(cols, r)) for r in self.rows(
            f"SELECT {', '.join(cols)} FROM orders WHERE trading_date = ?", date)}

    def fills(self, date: str | None = None) -> list[dict[str, Any]]:
        cols = ("exec_id", "client_order_id", "agent_id", "code", "side", "qty", "price", "fee_won", "tax_won")
        sql = f"SELECT {', '.join(cols)} FROM fills" + (" WHERE trading_date = ?" if date else "")
        return [dict(zip(cols, r)) for r in self.rows(sql, *([date] if date else []))]


def check_orders_match_exchange(date: str, journal: Journal, exchange: ExchangeRecorder) -> list[Check]:
    """Every order accepted is terminal and in the exchange's state; no order at the exchange is unknown."""
    mine = journal.orders(date)
    theirs = exchange.orders.get(date, {})
    still_open = sorted(c for c, o in mine.items() if o["status"] not in TERMINAL)
    mismatched, lost = [], []
    for coid, o in mine.items():
        ex = theirs.get(coid)
        if not o["broker_order_id"]:
            if ex is not None:  # refused or never sent by us, yet the exchange has it: a lost order
                lost.append(f"{coid} journal {o['status']}/{o['reason_code']} but at the exchange {ex['status']}")
            continue
        if ex is None:
            lost.append(f"{coid} accepted ({o['broker_order_id']}) but unknown to the exchange")
            continue
        same_status = o["status"] == ex["status"] or (o["status"] == "expired" and ex["status"] in OPEN_AT_EXCHANGE)
        if not same_status or o["filled_qty"] != ex["filled_qty"]:
            mismatched.append(f"{coid}: journal {o['status']} {o['filled_qty']}, exchange {ex['status']} "
                              f"{ex['filled_qty']}")
    unknown = sorted(set(theirs) - set(mine))
    return [
        Check(f"{date} no order left open after the close", not still_open, ", ".join(still_open[:10])),
        Check(f"{date} every accepted order's terminal state matches the exchange", not mismatched,
              "; ".join(mismatched[:10])),
        Check(f"{date} no order lost (journal and exchange hold the same orders)", not lost and not unknown,
              "; ".join(lost[:10] + [f"{c} at the exchange only" for c in unknown[:10]])),
    ]


def check_fills_match_exchange(date: str, journal: Journal, exchange: ExchangeRecorder) -> list[Check]:
    """The journal's fills are the exchange's, one for one; no order's fills add up past its filled quantity."""
    key = ("exec_id", "client_order_id", "qty", "price", "fee_won", "tax_won")
    mine = journal.fills(date)
    theirs = list(exchange.fills.get(date, {}).values())
    mine_set = {tuple(f[k] for k in key) for f in mine}
    theirs_set = {tuple(f[k] for k in key) for f in theirs}
    counts = Counter(f["exec_id"] for f in mine)
    doubled = [e for e, n in counts.items() if n > 1]
    filled: Counter[str] = Counter()
    for f in mine:
        filled[f["client_order_id"]] += f["qty"]
    orders = journal.orders(date)
    over = [f"{c}: fills {q}, order filled_qty {orders[c]['filled_qty']}" for c, q in filled.items()
            if c in orders and q != orders[c]["filled_qty"]]
    ex_filled: Counter[str] = Counter()
    for f in theirs:
        ex_filled[f["client_order_id"]] += f["qty"]
    ex_over = [f"{c}: exchange fills {q}, exchange filled_qty {exchange.orders[date][c]['filled_qty']}"
               for c, q in ex_filled.items()
               if c in exchange.orders.get(date, {}) and q != exchange.orders[date][c]["filled_qty"]]
    diff = [f"journal only {t[0]}" for t in sorted(mine_set - theirs_set)[:5]] + \
           [f"exchange only {t[0]}" for t in sorted(theirs_set - mine_set)[:5]]
    return [
        Check(f"{date} journal fills equal the exchange's ({len(mine)} fills)", not diff, "; ".join(diff)),
        Check(f"{date} no execution applied twice (journal and exchange)", not doubled and not over and not ex_over,
              "; ".join(doubled[:5] + over[:5] + ex_over[:5])),
    ]


def check_daily_report(date: str, journal: Journal) -> Check:
    """The supervisor's daily report counts what the journal holds for the day."""
    rows = {r[0]: tuple(r[1:]) for r in journal.rows(
        "SELECT agent_id, orders, fills, fees_won, taxes_won FROM daily_reports WHERE trading_date = ?", date)}
    if not rows:
        return Check(f"{date} daily report matches the journal", False, "no daily report row")
    wrong = []
    for agent_id, got in rows.items():
        if agent_id == "ACCOUNT":
            want_orders = journal.rows("SELECT count(*) FROM orders WHERE trading_date = ?", date)[0][0]
            want = journal.rows("SELECT count(*), coalesce(sum(fee_won), 0), coalesce(sum(tax_won), 0) "
                                "FROM fills WHERE trading_date = ?", date)[0]
        else:
            want_orders = journal.rows("SELECT count(*) FROM orders WHERE trading_date = ? AND agent_id = ?",
                                       date, agent_id)[0][0]
            want = journal.rows("SELECT count(*), coalesce(sum(fee_won), 0), coalesce(sum(tax_won), 0) "
                                "FROM fills WHERE trading_date = ? AND agent_id = ?", date, agent_id)[0]
        expected = (want_orders, *want)
        if got != expected:
            wrong.append(f"{agent_id}: report {got}, journal {expected}")
    return Check(f"{date} daily report matches the journal", not wrong, "; ".join(wrong[:10]))


def account_differences(journal: Journal, exchange: ExchangeRecorder, start_cash_won: int,
                        agent_books: dict[str, dict[str, Any] | None]) -> list[str]:
    """What differs between the broker account, the journal's fills and the agents' books (empty: all agree)."""
    implied = positions_from_fills(journal.fills())
    cash, held = exchange.account()
    problems = []
    flow = sum(b["cash_flow_won"] for b in implied["agents"].values())
    if cash != start_cash_won + flow:
        problems.append(f"broker cash {cash} != start {start_cash_won} + journal cash flow {flow}")
    journal_held = {c: q for c, q in implied["account"].items() if q}
    if held != journal_held:
        problems.append(f"broker holdings {held} != journal {journal_held}")
    book_held: Counter[str] = Counter()
    for agent_id, book in agent_books.items():
        if book is None:
            problems.append(f"agent {agent_id} did not show its book")
            continue
        mine = implied["agents"].get(agent_id, {"positions": {}, "cash_flow_won": 0})
        want_cash = int(book["allocation_won"]) + mine["cash_flow_won"]
        if int(book["cash_won"]) != want_cash:
            problems.append(f"agent {agent_id} cash {book['cash_won']} != allocation + journal flow {want_cash}")
        for code, pos in book.get("positions", {}).items():
            traded = int(pos["qty"]) - int(pos.get("start_qty", 0))
            book_held[code] += traded
            want = mine["positions"].get(code, {}).get("qty", 0)
            if traded != want:
                problems.append(f"agent {agent_id} {code}: book {traded} traded shares, journal {want}")
    if {c: q for c, q in book_held.items() if q} != journal_held:
        problems.append(f"agents' books sum {dict(book_held)} != journal {journal_held}")
    return problems


def converge(probe: Callable[[], list[str]], wait: Callable[[float], None], tries: int) -> list[str]:
    """Ask ``probe`` until it finds nothing or ``tries`` run out (records settle in flight); the last answer."""
    problems = probe()
    for _ in range(tries - 1):
        if not problems:
            break
        wait(1.0)
        problems = probe()
    return problems
