"""The blotter over a real journal (written by the order manager's book and journal) and its archive.

Three trading days: 2026-02-27 moved to the archive by the order manager's own
archive code, 2026-03-03 and 2026-03-04 still in the journal.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook

from core.config import load_stack
from core.messages import Side
from core.orders import OrderBook
from dashboard.app import create_app
from services.order_manager import archive
from services.order_manager.journal import Journal

KST = dt.timezone(dt.timedelta(hours=9))
OLD, DAY1, DAY2 = "20260227", "20260303", "20260304"
SAMSUNG, PAIR = "sma-samsung", "pair-samsung"


def at(day: str, hhmmss: str) -> int:
    """The nanosecond stamp of a KST time of day."""
    return int(dt.datetime.strptime(day + hhmmss, "%Y%m%d%H%M%S").replace(tzinfo=KST).timestamp() * 1e9)


class Desk:
    """The order manager's order book and journal, stepped as the real one steps them."""

    def __init__(self, run_dir: Path) -> None:
        self.book = OrderBook()
        self.journal = Journal(run_dir / "journal.sqlite")
        self.n = 0

    def order(self, day: str, agent: str, code: str, side: Side, qty: int, price: int, when: str, *,
              fills: tuple[int, ...] = (), reject: tuple[str, str] | None = None) -> str:
        self.n += 1
        coid, t = f"{agent}-{day}-{self.n}", at(day, when)
        outs = [self.book.submit(coid, agent, code, side, qty, price, t)]
        if reject is not None:
            outs.append(self.book.reject(coid, reject[0], reject[1], t + 1))
        else:
            outs.append(self.book.ack(coid, f"B{self.n}", t + 1))
            for i, q in enumerate(fills):
                outs.append(self.book.apply_fill(f"E{self.n}-{i}", q, price, t + 2 + i * 1_000_000_000, coid, f"B{self.n}",
                                                 fee_won=q * 10, tax_won=q * 100 if side is Side.SELL else 0))
        self.journal.write(outs, self.book.orders, day)
        return coid


def write_firm_journal(run_dir: Path) -> None:
    """Orders and fills of three days; the oldest archived as retention moves it."""
    desk = Desk(run_dir)
    try:
        desk.order(OLD, SAMSUNG, "005930", Side.BUY, 3, 69_000, "100000", fills=(3,))
        desk.order(OLD, PAIR, "005935", Side.SELL, 2, 57_000, "100500", fills=(2,))
        desk.order(DAY1, SAMSUNG, "005930", Side.BUY, 10, 70_000, "090105", fills=(4, 6))
        desk.order(DAY1, PAIR, "005935", Side.SELL, 5, 58_000, "091000",
                   reject=("RISK_POSITION_LIMIT", "the position limit of 005935 would be passed"))
        desk.order(DAY1, PAIR, "005930", Side.BUY, 7, 69_900, "093000")  # accepted, still open
        desk.order(DAY1, SAMSUNG, "005930", Side.SELL, 4, 70_500, "140000", fills=(4,))
        desk.order(DAY2, SAMSUNG, "005930", Side.BUY, 1, 71_000, "090001", fills=(1,))
        moved = archive.archive_day(desk.journal.db, run_dir, OLD)
        assert moved == {"orders": 2, "records": 6, "fills": 2}
    finally:
        desk.journal.close()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    write_firm_journal(tmp_path)
    with TestClient(create_app(load_stack(run_dir=str(tmp_path)), start_feed=False), base_url="http://127.0.0.1:8000") as c:
        yield c


def test_the_days_with_rows_are_listed_newest_first_and_the_newest_is_shown_by_default(client: TestClient) -> None:
    data = client.get("/api/blotter").json()
    assert data["days"] == ["2026-03-04", "2026-03-03", "2026-02-27"]
    assert data["date"] == "2026-03-04"
    assert [o["client_order_id"] for o in data["orders"]] == [f"{SAMSUNG}-{DAY2}-7"]
    assert data["fills"][0]["time_kst"] == "2026-03-04 09:00:01" and data["fills"][0]["exec_id"] == "E7-0"


def test_a_day_of_the_journal_has_every_order_and_fill_with_the_blotter_columns(client: TestClient) -> None:
    data = client.get("/api/blotter", params={"date": "2026-03-03"}).json()
    assert data["counts"] == {"orders": 4, "fills": 3, "orders_of_day": 4, "fills_of_day": 3}
    first = data["orders"][0]
    assert first == {"time_kst": "2026-03-03 09:01:05", "agent_id": SAMSUNG, "code": "005930", "side": "buy", "qty": 10,
                     "price": 70_000, "order_type": "limit", "status": "filled", "filled_qty": 10,
                     "avg_fill_price": 70_000, "reason_code": "", "reason_text": "", "client_order_id": f"{SAMSUNG}-{DAY1}-3"}
    rejected = data["orders"][1]
    assert rejected["status"] == "rejected" and rejected["reason_code"] == "RISK_POSITION_LIMIT"
    assert [f["qty"] for f in data["fills"]] == [4, 6, 4]
    sell = data["fills"][2]
    assert (sell["side"], sell["fee_won"], sell["tax_won"], sell["client_order_id"]) == ("sell", 40, 400, f"{SAMSUNG}-{DAY1}-6")
    assert data["options"]["agent"] == [PAIR, SAMSUNG] and data["options"]["status"] == ["accepted", "filled", "rejected"]


def test_an_archived_day_is_read_from_the_archive(client: TestClient, tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        assert db.execute("SELECT count(*) FROM orders WHERE trading_date = ?", (OLD,)).fetchone() == (0,)
    data = client.get("/api/blotter", params={"date": "2026-02-27"}).json()
    assert [(o["agent_id"], o["side"], o["status"]) for o in data["orders"]] == [(SAMSUNG, "buy", "filled"), (PAIR, "sell", "filled")]
    assert [(f["code"], f["qty"], f["tax_won"]) for f in data["fills"]] == [("005930", 3, 0), ("005935", 2, 200)]


def test_filters_keep_matching_orders_and_the_fills_of_them(client: TestClient) -> None:
    def ids(**params: str) -> tuple[list[str], list[str]]:
        data = client.get("/api/blotter", params={"date": "2026-03-03", **params}).json()
        return [o["client_order_id"] for o in data["orders"]], [f["exec_id"] for f in data["fills"]]

    assert ids(agent=PAIR) == ([f"{PAIR}-{DAY1}-4", f"{PAIR}-{DAY1}-5"], [])
    assert ids(agent=SAMSUNG, side="sell") == ([f"{SAMSUNG}-{DAY1}-6"], ["E6-0"])
    assert ids(code="005935") == ([f"{PAIR}-{DAY1}-4"], [])
    assert ids(status="filled", side="buy") == ([f"{SAMSUNG}-{DAY1}-3"], ["E3-0", "E3-1"])
    assert ids(reason="risk_position_limit") == ([f"{PAIR}-{DAY1}-4"], [])
    assert ids(agent="nobody") == ([], [])
    assert ids(sort="price", desc="1")[0] == [f"{SAMSUNG}-{DAY1}-6", f"{SAMSUNG}-{DAY1}-3", f"{PAIR}-{DAY1}-5", f"{PAIR}-{DAY1}-4"]


def test_csv_and_xlsx_exports_hold_exactly_the_filtered_rows(client: TestClient) -> None:
    query = {"date": "2026-03-03", "agent": SAMSUNG}
    shown = client.get("/api/blotter", params=query).json()
    res = client.get("/api/blotter.csv", params={**query, "table": "orders"})
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/csv")
    assert 'filename="blotter-2026-03-03-orders.csv"' in res.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(res.text)))
    assert [r["client_order_id"] for r in rows] == [o["client_order_id"] for o in shown["orders"]]
    assert rows[0]["time_kst"] == "2026-03-03 09:01:05" and rows[0]["avg_fill_price"] == "70000"
    fills = list(csv.DictReader(io.StringIO(client.get("/api/blotter.csv", params={**query, "table": "fills"}).text)))
    assert [f["exec_id"] for f in fills] == ["E3-0", "E3-1", "E6-0"] and fills[2]["tax_won"] == "400"

    book = load_workbook(io.BytesIO(client.get("/api/blotter.xlsx", params=query).content))
    assert book.sheetnames == ["orders", "fills"]
    orders = list(book["orders"].iter_rows(values_only=True))
    assert orders[0][:3] == ("time (KST)", "agent", "code") and len(orders) == 1 + len(shown["orders"])
    assert orders[1][4:6] == (10, 70_000)  # numbers stay numbers
    assert [r[8] for r in book["fills"].iter_rows(min_row=2, values_only=True)] == ["E3-0", "E3-1", "E6-0"]


BAD_QUERIES = (
    ({"date": "2026-13-01"}, "date"),
    ({"date": "20260303"}, "date"),
    ({"date": "yesterday"}, "date"),
    ({"sort": "password"}, "sort"),
    ({"agnt": SAMSUNG}, "agnt"),
    ({"side": "hold"}, "side"),
    ({"status": "lost"}, "status"),
    ({"table": "alerts"}, "table"),
)


def test_bad_input_gets_a_422_naming_the_parameter(client: TestClient) -> None:
    for params, param in BAD_QUERIES:
        for url in ("/api/blotter", "/api/blotter.csv", "/api/blotter.xlsx"):
            res = client.get(url, params=params)
            assert res.status_code == 422, (url, params)
            body = res.json()
            assert body["error"] == "BAD_QUERY" and body["param"] == param and body["reason"], (url, params)


def test_no_journal_yet_is_an_empty_blotter_and_the_page_renders(tmp_path: Path) -> None:
    with TestClient(create_app(load_stack(run_dir=str(tmp_path)), start_feed=False), base_url="http://127.0.0.1:8000") as c:
        data = c.get("/api/blotter", params={"date": "2026-03-03"}).json()
        assert data["days"] == [] and data["orders"] == [] and data["fills"] == []
        page = c.get("/blotter")
        assert page.status_code == 200 and 'id="blotter-orders"' in page.text and "/static/blotter.js" in page.text


def test_a_damaged_archive_file_is_named_and_the_rest_of_the_day_shown(client: TestClient, tmp_path: Path) -> None:
    (tmp_path / "archive" / OLD / "fills.parquet").write_bytes(b"not parquet at all")
    data = client.get("/api/blotter", params={"date": "2026-02-27"}).json()
    assert len(data["orders"]) == 2 and data["fills"] == []
    (problem,) = data["problems"]
    assert "fills.parquet cannot be read" in problem
