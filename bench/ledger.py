"""The book of record under a long history: does anything cost more with more days behind it?

Builds a real journal (``journal.sqlite``, the order manager's schema and its
ledger) with ``--agents`` agents and ``--days`` trading days of history,
``--fills`` fills per agent per day, every day rolled by the ledger itself;
then measures, on that file:

* ``sync_ms``: an agent's sync, from the request to the book rebuilt (the
  order manager's answer, msgpack there and back, ``Portfolio.rebuild``);
* ``sync_5d_ms``: the same sync on a journal of 5 days, to show the cost does
  not grow with history;
* ``risk_start_ms``: the risk guard's start-up view (``journal_state`` and
  ``RiskGuard.load_journal``);
* ``recon_ms``: one reconciliation (``journal_state``, the broker's account
  as the ledger has it, ``core.reconcile.reconcile``);
* ``roll_ms``: the day roll of today for every agent;
* ``archive_ms``: moving the oldest day to its archive files.

Each figure is the median of ``--repeat`` runs. Last line, one JSON object::

    {"bench": "ledger", "agents": 100, "days": 250, "sync_ms": ..., "sync_5d_ms": ..., "risk_start_ms": ...,
     "recon_ms": ..., "roll_ms": ..., "archive_ms": ...}

Goals: ``sync_ms`` <= 50 and <= 1.5 x ``sync_5d_ms``, ``risk_start_ms`` <= 500,
``recon_ms`` <= 300, ``roll_ms`` <= 1000.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
from rich.progress import Progress

from core import krx
from core.config import load_stack
from core.instruments import Instrument
from core.ledger import ACCOUNT
from core.messages import Fill, OrderEvent
from core.portfolio import Portfolio
from core.reconcile import broker_state_from_plain, journal_state_from_plain, reconcile
from core.risk import RiskLimits
from services.order_manager import archive
from services.order_manager.bookkeeper import Bookkeeper, BookStart, next_trading_date
from services.order_manager.journal import Journal
from services.risk_guard.guard import AgentAllocation, RiskGuard

CODES = [f"{100000 + 10 * i:06d}" for i in range(10)]
FIRST_DAY = "20250102"
ALLOCATION = 10_000_000_000


def _days(n: int) -> list[str]:
    out = [FIRST_DAY]
    while len(out) < n:
        out.append(next_trading_date(out[-1]))
    return out


def build(path: Path, agents: int, days: int, fills: int, progress: Progress | None = None) -> tuple[Journal, Bookkeeper, list[str]]:
    """A journal of ``days`` rolled days (the last one open, its fills in) for ``agents`` agents."""
    journal = Journal(path / "journal.sqlite")
    names = [f"agent-{i:03d}" for i in range(agents)]
    books = Bookkeeper(journal, path, {a: BookStart(ALLOCATION, {}) for a in names}, ALLOCATION * agents,
                       set(CODES), 10_000)
    dates = _days(days)
    books.open_day(dates[0], 1)
    task = progress.add_task(f"building {days} day(s)", total=days) if progress else None
    exec_n = 0
    db = journal.db
    for d, date in enumerate(dates):
        order_rows, fill_rows = [], []
        for a, agent in enumerate(names):
            for i in range(fills):
                exec_n += 1
                code = CODES[(a + i) % len(CODES)]
                side = "buy" if i % 2 == 0 else "sell"
                price = 10_000 + 10 * ((a * 7 + i * 13 + d) % 500)
                qty = 10 if side == "buy" else 9
                coid = f"{agent}-{date}-{i + 1}"
                ts = (d * 1_000_000 + a * 1_000 + i) * 1_000
                order_rows.append((coid, agent, date, code, side, "limit", qty, price, "filled", qty, 0, price, 15, 0,
                                   f"B{exec_n}", "", "", ts, ts))
                fill_rows.append((f"X{exec_n:010d}", coid, agent, date, code, side, qty, price, 15,
                                  20 if side == "sell" else 0, f"B{exec_n}", ts, date))
        db.execute("BEGIN")
        db.executemany("INSERT INTO orders (client_order_id, agent_id, trading_date, code, side, order_type, qty, price, "
                       "status, filled_qty, remaining_qty, avg_fill_price, fees_won, taxes_won, broker_order_id, "
                       "reason_code, reason_text, created_ns, updated_ns) VALUES "
                       "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", order_rows)
        db.executemany("INSERT INTO fills (exec_id, client_order_id, agent_id, trading_date, code, side, qty, price, "
                       "fee_won, tax_won, broker_order_id, ts_ns, ledger_date) VALUES "
                       "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", fill_rows)
        db.execute("COMMIT")
        if d < len(dates) - 1:
            journal.ledger.roll(date, dates[d + 1], 2)
        if progress is not None and task is not None:
            progress.advance(task)
    return journal, books, dates


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``fn`` in milliseconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)


def sync_once(books: Bookkeeper, agent: str) -> Portfolio:
    """The order manager's answer to ``sync``, through msgpack as on the wire, into the agent's rebuilt book."""
    raw = msgpack.unpackb(msgpack.packb(books.sync(agent)))
    orders = [OrderEvent.model_validate(o) for o in raw["orders"]]
    fills = [Fill.model_validate(f) for f in raw["fills"]]
    return Portfolio.rebuild(ALLOCATION, {}, orders, fills, opening=raw["opening"], adjustments=raw["adjustments"])


def risk_start(books: Bookkeeper, agents: list[str], instruments: dict[str, Instrument]) -> RiskGuard:
    guard = RiskGuard(RiskLimits(), instruments, [AgentAllocation(a, ALLOCATION, {}) for a in agents])
    guard.load_journal(msgpack.unpackb(msgpack.packb(books.journal_state(books.open_date))), time.time_ns())
    return guard


def recon_once(books: Bookkeeper) -> object:
    state = msgpack.unpackb(msgpack.packb(books.journal_state(books.open_date)))
    account = state["ledger"][ACCOUNT]
    broker = broker_state_from_plain({"cash_won": account["cash_won"]},
                                     {c: h["qty"] for c, h in account["positions"].items()}, [], state["fills"])
    report = reconcile(broker, journal_state_from_plain(state), None, None, None)
    assert report.clean, report.to_plain()
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--days", type=int, default=250)
    ap.add_argument("--fills", type=int, default=100, help="fills per agent per day")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    load_stack()  # the calendar range and settings load as in the stack
    krx.is_trading_day(krx.kst_date(time.time_ns()))
    instruments = {c: Instrument(code=c, name=c, market="KOSPI", sector="-", shares_outstanding=10**8, eps=1_000,
                                 bps=10_000, dividend=0, last_close=10_000) for c in CODES}
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp, Progress(transient=True) as progress:
        long_dir, short_dir = Path(tmp) / "long", Path(tmp) / "short"
        long_dir.mkdir()
        short_dir.mkdir()
        t0 = time.perf_counter()
        journal, books, dates = build(long_dir, args.agents, args.days, args.fills, progress)
        built_s = time.perf_counter() - t0
        short, short_books, _ = build(short_dir, args.agents, 5, args.fills, progress)
        agent = "agent-042" if args.agents > 42 else "agent-000"
        names = [f"agent-{i:03d}" for i in range(args.agents)]
        book = sync_once(books, agent)
        assert book.cash_won == journal.ledger.current(agent)[agent].cash_won
        sync_ms = timed(lambda: sync_once(books, agent), args.repeat)
        sync_5d_ms = timed(lambda: sync_once(short_books, agent), args.repeat)
        risk_ms = timed(lambda: risk_start(books, names, instruments), args.repeat)
        recon_ms = timed(lambda: recon_once(books), args.repeat)
        today, tomorrow = dates[-1], next_trading_date(dates[-1])
        t0 = time.perf_counter()
        journal.ledger.roll(today, tomorrow, 3)
        roll_ms = round((time.perf_counter() - t0) * 1000, 2)
        t0 = time.perf_counter()
        moved = archive.archive_day(journal.db, long_dir, dates[0])
        archive_ms = round((time.perf_counter() - t0) * 1000, 2)
        rows = journal.db.execute("SELECT count(*) FROM fills").fetchone()[0]
        journal.close()
        short.close()
    print(f"journal: {args.agents} agents x {args.days} days x {args.fills} fills ({rows:,} fills left after the "
          f"archive of {moved.get('fills', 0):,}), built in {built_s:.0f} s")
    print(f"sync {sync_ms} ms (5 days of history: {sync_5d_ms} ms, ratio {sync_ms / sync_5d_ms:.2f}); risk guard start "
          f"{risk_ms} ms; reconciliation {recon_ms} ms; roll of {args.agents} agents {roll_ms} ms; archive of a day "
          f"{archive_ms} ms")
    print(json.dumps({"bench": "ledger", "agents": args.agents, "days": args.days, "sync_ms": sync_ms,
                      "sync_5d_ms": sync_5d_ms, "risk_start_ms": risk_ms, "recon_ms": recon_ms, "roll_ms": roll_ms,
                      "archive_ms": archive_ms}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
