"""A close the supervisor missed (it was down at the closed event) is rolled on the next trading day."""

from __future__ import annotations

from pathlib import Path

import zmq

from bus.rpc import RpcClient
from core.messages import AlertLevel, Side
from core.orders import OrderBook
from services.order_manager.journal import Journal
from services.supervisor import dayroll
from services.supervisor.journal import DayJournal

AGENT = "sma-samsung"


def journal_one_expired_order(run_dir: Path, trading_date: str) -> None:
    """What the order manager leaves after a day: one order, expired at its own day roll."""
    book = OrderBook()
    journal = Journal(run_dir / "journal.sqlite")
    coid = f"{AGENT}-{trading_date}-1"
    outs = [book.submit(coid, AGENT, "005930", Side.BUY, 10, 70_000, 1)]
    outs.append(book.ack(coid, "B1", 2))
    outs.append(book.expire_open(3))
    journal.write(outs, book.orders, trading_date)
    journal.close()


def test_a_day_with_orders_and_no_report_is_found_and_rolled_late_without_touching_today(tmp_path: Path) -> None:
    journal_one_expired_order(tmp_path, "20260303")
    day_journal = DayJournal(tmp_path)
    assert day_journal.unreported_days(before="20260304") == ["20260303"]
    assert day_journal.unreported_days(before="20260303") == []
    ctx = zmq.Context()
    alerts: list[tuple[AlertLevel, str, str]] = []
    # nothing listens on these: a late roll must not need the order manager, and prices may be missing
    oms = RpcClient(ctx, f"ipc://{tmp_path}/nobody-oms.sock", timeout_ms=200, retries=0)
    md = RpcClient(ctx, f"ipc://{tmp_path}/nobody-md.sock", timeout_ms=200, retries=0)
    try:
        summary = dayroll.run_day_roll("20260303", tmp_path, day_journal, oms, md, {}, 30,
                                       lambda *a: alerts.append(a), late=True)
    finally:
        oms.close()
        md.close()
        ctx.destroy(linger=0)
    assert summary["left_open"] == {} and summary["still_open"] == 0
    assert not [a for a in alerts if a[1] == "orders_unchecked"]  # no cancel of today's orders was attempted
    assert (tmp_path / "reports" / "20260303.csv").exists()
    assert day_journal.unreported_days(before="20260304") == []
