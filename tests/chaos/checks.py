"""What a chaos run must still hold: the exchange, the order manager's journal and the agents' books agree.

``ExchangeRecorder`` reads the exchange's own store (``exchange/exchange.sqlite``,
read-only) a few times a second and keeps each day's orders and fills, since
the exchange clears them at the overnight jump; it also tells the market's
date, session and time from the same file. ``Journal`` reads the order
manager's journal and the archive retention moves old days to
(``archive/<YYYYMMDD>/orders.parquet``, ``fills.parquet``) alike, so a day
checked after it was archived reads the same. ``ReconLog`` reads the
reconciler's reports (``recon_reports``) and ``AlertRecorder`` listens to
``sys.alert``. The checks compare a closed day (or the whole run) across the
records and answer ``Check`` values (name, passed, detail); they never stop at
the first failure.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow.parquet as pq
import zmq

from bus.pubsub import Subscriber
from core.krx import KST
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


@dataclass(frozen=True)
class MarketClock:
    """Where the paper market is: trading date (YYYYMMDD), engine session and KST time of day."""

    trading_date: str
    session: str
    hhmm: str

    def trading_after(self, hhmm: str) -> bool:
        """Whether continuous trading is on and the time is ``hhmm`` or later."""
        return self.session == "continuous" and self.hhmm >= hhmm


def read_market_clock(path: Path) -> MarketClock | None:
    """The trading date, session and market time a paper market's store (the exchange's, kis-sim's) last saved."""
    if not path.exists():
        return None
    try:
        meta = dict(_read(path, "SELECT key, value FROM meta WHERE key IN ('service', 'engine_header')"))
        service, header = json.loads(meta["service"]), json.loads(meta["engine_header"])
    except (sqlite3.Error, KeyError, ValueError):
        return None
    at = dt.datetime.fromtimestamp(int(service["market_ns"]) / 1e9, KST)
    date = (header.get("trading_date") or "").replace("-", "")
    return MarketClock(trading_date=date, session=str(header.get("session")), hhmm=at.strftime("%H:%M"))


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

    def clock(self) -> MarketClock | None:
        """The exchange's trading date, session and market time as last saved (None while unreadable)."""
        return read_market_clock(self.path)

    def account(self) -> tuple[int, dict[str, int]]:
        """The broker account's cash and holdings (non-zero), as stored now."""
        (cash,), = _read(self.path, "SELECT cash_won FROM accounts")
        held = {code: qty for code, qty in _read(self.path, "SELECT code, qty FROM positions") if qty}
        return int(cash), held


ORDER_COLUMNS = ("client_order_id", "status", "qty", "filled_qty", "broker_order_id", "reason_code", "agent_id",
                 "code", "side", "order_type", "price")
FILL_COLUMNS = ("exec_id", "client_order_id", "agent_id", "code", "side", "qty", "price", "fee_won", "tax_won")


class Journal:
    """Read-only queries of the order manager's journal and of the archive retention moved old days to."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "journal.sqlite"
        self.archive = run_dir / "archive"

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return _read(self.path, sql, *args)

    def table_exists(self, name: str) -> bool:
        return bool(self.rows("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", name))

    def archived_days(self) -> list[str]:
        """The dates with an archive folder."""
        return sorted(p.name for p in self.archive.glob("[0-9]" * 8) if p.is_dir()) if self.archive.is_dir() else []

    def _archived(self, date: str, file: str, columns: tuple[str, ...]) -> list[dict[str, Any]]:
        path = self.archive / date / file
        if not path.exists():
            return []
        table = pq.read_table(path)
        present = [c for c in columns if c in table.column_names]
        return [{c: row.get(c) for c in columns} for row in table.select(present).to_pylist()]

    def orders(self, date: str) -> dict[str, dict[str, Any]]:
        """A day's orders by client order id: the journal's rows, and the archive's for what is not there."""
        out = {r["client_order_id"]: r for r in self._archived(date, "orders.parquet", ORDER_COLUMNS)}
        out.update({r[0]: dict(zip(ORDER_COLUMNS, r)) for r in self.rows(
            f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders WHERE trading_date = ?", date)})
        return out

    def fills(self, date: str | None = None) -> list[dict[str, Any]]:
        """A day's fills (or every fill), journal and archive alike, one per execution id."""
        days = [date] if date else self.archived_days()
        by_exec = {f["exec_id"]: f for d in days for f in self._archived(d, "fills.parquet", FILL_COLUMNS)}
        sql = f"SELECT {', '.join(FILL_COLUMNS)} FROM fills" + (" WHERE trading_date = ?" if date else "")
        journal = [dict(zip(FILL_COLUMNS, r)) for r in self.rows(sql, *([date] if date else []))]
        seen = set()
        doubled = []
        for f in journal:  # a row twice in the journal itself must stay visible to the checks
            if f["exec_id"] in seen:
                doubled.append(f)
            seen.add(f["exec_id"])
        by_exec.update({f["exec_id"]: f for f in journal})
        return list(by_exec.values()) + doubled

    def adjustments(self) -> list[Adjustment] | None:
        """The ledger's adjustments (``ledger_adjustments``), or None when the journal has no ledger."""
        if not self.table_exists("ledger_adjustments"):
            return None
        return [Adjustment(a, c, int(q), int(w)) for a, c, q, w in self.rows(
            "SELECT agent_id, code, qty, cash_won FROM ledger_adjustments ORDER BY seq")]

    def counts(self, date: str) -> tuple[int, int]:
        """(orders, fills) of a day."""
        return len(self.orders(date)), len(self.fills(date))


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
    """The supervisor's daily report counts what the journal (or its archive) holds for the day."""
    rows = {r[0]: tuple(r[1:]) for r in journal.rows(
        "SELECT agent_id, orders, fills, fees_won, taxes_won FROM daily_reports WHERE trading_date = ?", date)}
    if not rows:
        return Check(f"{date} daily report matches the journal", False, "no daily report row")
    orders = list(journal.orders(date).values())
    fills = journal.fills(date)
    wrong = []
    for agent_id, got in rows.items():
        mine = (lambda r: True) if agent_id == "ACCOUNT" else (lambda r, a=agent_id: r["agent_id"] == a)
        day_fills = [f for f in fills if mine(f)]
        expected = (sum(1 for o in orders if mine(o)), len(day_fills), sum(int(f["fee_won"]) for f in day_fills),
                    sum(int(f["tax_won"]) for f in day_fills))
        if got != expected:
            wrong.append(f"{agent_id}: report {got}, journal {expected}")
    return Check(f"{date} daily report matches the journal", not wrong, "; ".join(wrong[:10]))


@dataclass(frozen=True)
class Adjustment:
    """A change of the account no fill explains, booked to an agent (``trader ledger adjust``)."""

    agent_id: str
    code: str
    qty: int
    cash_won: int


class VenueRecord(Protocol):
    """What the run reads of a venue's own record: the market's clock and the broker account (the exchange's
    store, or kis-sim's)."""

    def poll(self) -> None: ...

    def clock(self) -> MarketClock | None: ...

    def account(self) -> tuple[int, dict[str, int]]: ...


def account_differences(journal: Journal, exchange: VenueRecord, start_cash_won: int,
                        agent_books: dict[str, dict[str, Any] | None],
                        adjustments: Iterable[Adjustment] = (), *, skip_behind: bool = False) -> list[str]:
    """What differs between the broker account, the journal's fills plus adjustments and the agents' books
    (empty: all agree). The adjustments are the ledger's own when the journal has a ledger, else ``adjustments``.

    ``skip_behind``: an agent whose book has not applied its latest fill in the journal yet (the firm is
    trading while this looks) is left out of the comparison of books, not reported."""
    booked = journal.adjustments()
    adjustments = list(adjustments) if booked is None else booked
    implied = positions_from_fills(journal.fills())
    for adj in adjustments:
        agent = implied["agents"].setdefault(adj.agent_id, {"positions": {}, "cash_flow_won": 0})
        agent["cash_flow_won"] += adj.cash_won
        pos = agent["positions"].setdefault(adj.code, {"qty": 0})
        pos["qty"] = pos.get("qty", 0) + adj.qty
        implied["account"][adj.code] = implied["account"].get(adj.code, 0) + adj.qty
    cash, held = exchange.account()
    problems = []
    flow = sum(b["cash_flow_won"] for b in implied["agents"].values())
    if cash != start_cash_won + flow:
        problems.append(f"broker cash {cash} != start {start_cash_won} + journal cash flow {flow} (adjustments in)")
    journal_held = {c: q for c, q in implied["account"].items() if q}
    if held != journal_held:
        problems.append(f"broker holdings {held} != journal {journal_held}")
    book_held: Counter[str] = Counter()
    latest = dict(journal.rows("SELECT agent_id, exec_id FROM fills WHERE rowid IN "
                               "(SELECT max(rowid) FROM fills GROUP BY agent_id)")) if skip_behind else {}
    behind = [a for a, book in agent_books.items() if book is not None and a in latest
              and book.get("last_exec_id", latest[a]) != latest[a]]
    for agent_id, book in agent_books.items():
        if book is None:
            problems.append(f"agent {agent_id} did not show its book")
            continue
        if agent_id in behind:
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
    if not behind and {c: q for c, q in book_held.items() if q} != journal_held:
        problems.append(f"agents' books sum {dict(book_held)} != journal {journal_held}")
    return problems


def converge(probe: Callable[[], list[str]], wait: Callable[[float], None], tries: int, *,
             away: Callable[[], bool] = lambda: False, away_limit_s: float = 0.0) -> list[str]:
    """Ask ``probe`` until it finds nothing or ``tries`` run out (records settle in flight); the last answer.

    ``away``: whether a process the records wait on cannot get at them yet (the
    order manager while the broker does not give it the day's records); a look
    then does not count, for up to ``away_limit_s`` in all.
    """
    problems = probe()
    left, paused_until = tries - 1, time.monotonic() + away_limit_s
    while problems and left > 0:
        wait(1.0)
        if not (away() and time.monotonic() < paused_until):
            left -= 1
        problems = probe()
    return problems


# --- the reconciler's reports, the trading state, the alerts -----------------------------------

HEALING_ACTIONS = frozenset({"APPLY_MISSING_FILL", "RESOLVE_ORDER"})


def report_started_ns(report: dict[str, Any]) -> int:
    """When a reconciliation began: the time in its id (``recon-<ns>-...``), else its time stamp."""
    parts = str(report.get("report_id", "")).split("-")
    if len(parts) >= 2 and parts[1].isdigit():
        return int(parts[1])
    return int(report.get("ts_ns") or 0)


def breaks_of(report: dict[str, Any]) -> list[dict[str, Any]]:
    """A report's breaks: its ``breaks``, or (a report of before the ledger) the differences it did not heal."""
    if "breaks" in report:
        return list(report.get("breaks") or [])
    return [d for d in report.get("differences") or [] if d.get("action") not in HEALING_ACTIONS]


@dataclass
class ReconLog:
    """The reconciler's reports as journaled (``recon_reports`` of journal.sqlite), oldest first."""

    journal: Journal

    def reports(self, since_ns: int = 0) -> list[dict[str, Any]]:
        """Every report that began at or after ``since_ns``."""
        if not self.journal.path.exists() or not self.journal.table_exists("recon_reports"):
            return []
        out = []
        for (raw,) in self.journal.rows("SELECT report FROM recon_reports ORDER BY id"):
            try:
                report = json.loads(raw)
            except ValueError:
                continue
            if report_started_ns(report) >= since_ns:
                out.append(report)
        return out

    def counts(self) -> dict[str, int]:
        """Reports, clean, with breaks, with pending differences, that could not run, and halts."""
        reports = self.reports()
        return {
            "reports": len(reports),
            "clean": sum(1 for r in reports if not breaks_of(r) and not r.get("error") and r.get("clean", True)),
            "with breaks": sum(1 for r in reports if breaks_of(r)),
            "with pending": sum(1 for r in reports if r.get("pending")),
            "could not run": sum(1 for r in reports if r.get("error")),
            "halts": sum(1 for r in reports if r.get("halted")),
        }


def is_phantom_break(brk: dict[str, Any], code: str) -> bool:
    """Whether a break is about the injected phantom: the code's holding or the account's cash."""
    text = f"{brk.get('kind', '')} {brk.get('key', '')} {brk.get('text', '')}".lower()
    return code in text or "cash" in text


@dataclass(frozen=True)
class PhantomEpisode:
    """The injected phantom: what it changed, when (wall ns), and when the books were put right."""

    code: str
    qty: int
    cash_won: int
    injected_ns: int
    adjusted_ns: int = 0  # the adjustment booked (0: not booked)
    resumed_ns: int = 0  # trading resumed after it (0: not resumed)
    over_ns: int = 0  # the first report without its break began (0: never)


def check_recon_reports(log: ReconLog, phantom: PhantomEpisode | None, interval_s: float) -> list[Check]:
    """The phantom's break was caught within one cycle and went away once booked; no other break, ever."""
    reports = log.reports()
    checks = []
    others = []
    window = (phantom.injected_ns, phantom.over_ns or 2**63) if phantom else (0, 0)
    for r in reports:
        started = report_started_ns(r)
        for brk in breaks_of(r):
            if phantom and window[0] <= started < window[1] and is_phantom_break(brk, phantom.code):
                continue
            others.append(f"{brk.get('kind')} {brk.get('key')}: {brk.get('text', '')[:120]}")
    if phantom is not None:
        after = [r for r in reports if report_started_ns(r) > phantom.injected_ns]
        first = after[0] if after else None
        caught = first is not None and any(is_phantom_break(b, phantom.code) for b in breaks_of(first))
        detail = ("no report began after the injection" if first is None else
                  f"first report after it ({first.get('report_id')}): breaks {breaks_of(first)[:3]}, "
                  f"error {first.get('error')!r}")
        checks.append(Check(f"the phantom ({phantom.qty:+d} {phantom.code}, {phantom.cash_won:+,} won) was caught by "
                            f"the first reconciliation after it (one cycle, {interval_s:g} s)", caught,
                            "" if caught else detail))
        checks.append(Check("the phantom's break went away once booked as an adjustment", bool(phantom.over_ns),
                            "" if phantom.over_ns else "no report without it after the adjustment"))
    counts: Counter[str] = Counter(others)
    checks.append(Check("no break other than the injected one over the whole run", not others,
                        "; ".join(f"{t} (x{n})" for t, n in counts.most_common(8))))
    return checks


def check_trading_state(journal: Journal, phantom: PhantomEpisode | None, until_ns: int = 2**63) -> Check:
    """The firm was never halted or reduced except by the reconciler over the phantom, until it was resumed
    (``until_ns``: the run's own halt at its end, to compare the books at rest, is not counted)."""
    if not journal.table_exists("risk_state_changes"):
        return Check("the firm was never halted except over the phantom", True)
    wrong = []
    for ts_ns, state, reason, who in journal.rows("SELECT ts_ns, state, reason, who FROM risk_state_changes ORDER BY id"):
        if state == "ACTIVE" or ts_ns >= until_ns:
            continue
        in_window = phantom is not None and phantom.injected_ns <= ts_ns <= (phantom.resumed_ns or 2**63)
        if not (who == "reconciler" and in_window):
            wrong.append(f"{state} by {who}: {reason[:160]}")
    return Check("the firm was never halted except over the phantom", not wrong, "; ".join(wrong[:5]))


@dataclass
class AlertRecorder:
    """Every ``sys.alert`` the bus carries while the run polls it (kind, source, text, wall ns)."""

    endpoint: str
    ctx: zmq.Context = field(default_factory=zmq.Context)
    alerts: list[tuple[str, str, str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sub = Subscriber(self.ctx, self.endpoint, ["sys.alert"], linger_ms=0, heartbeats_from=[])

    def poll(self) -> None:
        for env in self.sub.drain():
            msg = env.msg
            self.alerts.append((str(getattr(msg, "kind", "")), str(getattr(msg, "source", "")),
                                str(getattr(msg, "text", "")), env.ts_ns))

    def kinds(self, prefix: str) -> list[tuple[str, str, str, int]]:
        return [a for a in self.alerts if a[0].startswith(prefix)]

    def away(self, source: str) -> bool:
        """Whether ``source``'s last broker connection alert left it short of connected (reconnecting, reconciling)."""
        said = [a[2] for a in self.alerts if a[0] == "broker_connection" and a[1] == source]
        return bool(said) and "-> connected" not in said[-1]

    def close(self) -> None:
        self.sub.close()
        self.ctx.destroy(linger=0)


def check_break_alerts(alerts: AlertRecorder, log: ReconLog, phantom: PhantomEpisode | None) -> Check:
    """Each break is alerted once (``recon_break*`` on sys.alert), not on every run."""
    sent = [a for a in alerts.kinds("recon_break") if a[0] == "recon_break"]  # not recon_break_resolved
    keys = {(b.get("kind"), b.get("key")) for r in log.reports() for b in breaks_of(r)}
    if phantom is None:
        return Check("every break alerted once", not sent, f"{len(sent)} recon_break alert(s) without a phantom")
    ok = 1 <= len(sent) <= max(1, len(keys))
    return Check("every break alerted once (recon_break on sys.alert)", ok,
                 "" if ok else f"{len(sent)} recon_break alert(s) for {len(keys)} break(s): "
                 f"{[a[2][:80] for a in sent[:4]]}")
