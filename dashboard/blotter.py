"""The firm-wide blotter: every order and fill of one trading day, filtered on the server, exported as CSV or XLSX.

A day's rows come from the order manager's journal (``<run_dir>/journal.sqlite``,
opened read-only per query) and, for days retention has moved out of it, from
its archive (``<run_dir>/archive/<YYYYMMDD>/orders.parquet`` and
``fills.parquet``, the journal's rows and columns). A row in both (a move cut
short by a crash) is shown once, the journal's, as the order manager itself
reads them.

- page ``/blotter``: a day picker, filters, the orders and fills grids, counts, export links;
- ``/api/blotter?date=YYYY-MM-DD&agent=&code=&side=&status=&reason=&sort=&desc=1``: the day's
  filtered rows as JSON, with the days that have rows (newest first) and the values each filter can take;
- ``/api/blotter.csv?table=orders|fills&...`` and ``/api/blotter.xlsx?...`` (a sheet per table):
  exactly the rows the same query shows.

Filters match whole values, case-insensitively: ``agent``, ``code`` and
``side`` the orders and the fills alike; ``status`` and ``reason`` (an order's
reason code) the orders, and the fills of the orders they keep. Bad input (a
date that is not one, an unknown parameter, side, status, table or sort
column) is answered 422 with the reason.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from core.messages import OrderStatus, Side
from dashboard.export import XLSX_MEDIA_TYPE
from dashboard.journal import JournalReader
from dashboard.pages import GRID_SCRIPTS, GRID_STYLES

KST = dt.timezone(dt.timedelta(hours=9))
ARCHIVE_DIR = "archive"  # the order manager's (services/order_manager/archive.py)
ARCHIVE_FILES = {"orders": "orders.parquet", "fills": "fills.parquet"}
KEYS = {"orders": "client_order_id", "fills": "exec_id"}

ORDER_COLUMNS = (
    ("time_kst", "time (KST)"),
    ("agent_id", "agent"),
    ("code", "code"),
    ("side", "side"),
    ("qty", "qty"),
    ("price", "price"),
    ("order_type", "order type"),
    ("status", "status"),
    ("filled_qty", "filled qty"),
    ("avg_fill_price", "avg fill price"),
    ("reason_code", "reason code"),
    ("reason_text", "reason text"),
    ("client_order_id", "client order id"),
)
FILL_COLUMNS = (
    ("time_kst", "time (KST)"),
    ("agent_id", "agent"),
    ("code", "code"),
    ("side", "side"),
    ("qty", "qty"),
    ("price", "price"),
    ("fee_won", "fee"),
    ("tax_won", "tax"),
    ("exec_id", "exec id"),
    ("client_order_id", "client order id"),
)
COLUMNS = {"orders": ORDER_COLUMNS, "fills": FILL_COLUMNS}
TIME_FIELD = {"orders": "created_ns", "fills": "ts_ns"}
FILTERS = {"agent": "agent_id", "code": "code", "side": "side", "status": "status", "reason": "reason_code"}
ORDER_ONLY_FILTERS = ("status", "reason")
PARAMS = frozenset({"date", *FILTERS, "sort", "desc", "table"})
SIDES = frozenset(s.value for s in Side)
STATUSES = frozenset(s.value for s in OrderStatus)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class BadQuery(ValueError):
    """A query the blotter cannot answer: ``param`` names what is wrong, the message says why."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class Blotter(JournalReader):
    """Reads a trading day's orders and fills from the journal and the archive of one run directory."""

    def __init__(self, run_path: Path) -> None:
        super().__init__(run_path / "journal.sqlite")
        self.archive_path = run_path / ARCHIVE_DIR

    def _journal_rows(self, table: str, day: str) -> list[dict[str, Any]]:
        conn = self._connect()
        if conn is None:
            return []
        try:
            return [dict(r) for r in conn.execute(f'SELECT * FROM "{table}" WHERE trading_date = ?', (day,))]
        except sqlite3.Error:  # no such table (yet): nothing journaled
            return []
        finally:
            conn.close()

    def _archive_rows(self, table: str, day: str, problems: list[str]) -> list[dict[str, Any]]:
        path = self.archive_path / day / ARCHIVE_FILES[table]
        if not path.is_file():
            return []
        import pyarrow as pa  # only once archived days are shown: the dashboard runs without it until then
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except (OSError, pa.ArrowException) as exc:  # a damaged file: say so, show the rest
            problems.append(f"{path} cannot be read: {exc}")
            return []

    def days(self) -> list[str]:
        """Trading dates (YYYY-MM-DD) with orders or fills in the journal or the archive, newest first."""
        found: set[str] = set()
        conn = self._connect()
        if conn is not None:
            try:
                for table in ARCHIVE_FILES:
                    try:
                        found.update(r[0] for r in conn.execute(f'SELECT DISTINCT trading_date FROM "{table}"'))
                    except sqlite3.Error:
                        continue
            finally:
                conn.close()
        if self.archive_path.is_dir():
            for folder in self.archive_path.iterdir():
                if folder.name.isdigit() and len(folder.name) == 8 and any(
                        (folder / name).is_file() for name in ARCHIVE_FILES.values()):
                    found.add(folder.name)
        return sorted((f"{d[:4]}-{d[4:6]}-{d[6:]}" for d in found if len(d) == 8 and d.isdigit()), reverse=True)

    def rows(self, table: str, date: str, problems: list[str]) -> list[dict[str, Any]]:
        """Every row of ``table`` (orders or fills) of trading date ``date`` (YYYY-MM-DD), oldest first.

        What cannot be read is named in ``problems`` and left out.
        """
        day = date.replace("-", "")
        key = KEYS[table]
        merged = {r[key]: r for r in self._archive_rows(table, day, problems)}
        merged.update((r[key], r) for r in self._journal_rows(table, day))  # the journal's row wins
        time_field = TIME_FIELD[table]
        out = sorted(merged.values(), key=lambda r: (r.get(time_field) or 0, str(r.get(key))))
        for r in out:
            r.pop("reply", None)  # the answer sent to the agent: not the blotter's business
            ts = r.get(time_field)
            r["time_kst"] = dt.datetime.fromtimestamp(int(ts) / 1e9, tz=KST).strftime("%Y-%m-%d %H:%M:%S") if ts else ""
        return out


# --- queries -------------------------------------------------------------------


def parse_query(params: Mapping[str, str], days: Sequence[str]) -> dict[str, Any]:
    """The checked query: date (the newest day with rows when not given), filters, sort; raises BadQuery."""
    unknown = sorted(set(params) - PARAMS)
    if unknown:
        raise BadQuery(unknown[0], f"unknown parameter {unknown[0]!r}; the blotter takes {', '.join(sorted(PARAMS))}")
    date = params.get("date", "").strip()
    if date:
        try:
            if not _DATE.match(date):
                raise ValueError
            dt.date.fromisoformat(date)
        except ValueError:
            raise BadQuery("date", f"date must be a day as YYYY-MM-DD, not {date[:40]!r}") from None
    else:
        date = days[0] if days else dt.datetime.now(KST).date().isoformat()
    filters = {k: params[k].strip().lower() for k in FILTERS if params.get(k, "").strip()}
    if "side" in filters and filters["side"] not in SIDES:
        raise BadQuery("side", f"side must be one of {', '.join(sorted(SIDES))}, not {filters['side'][:40]!r}")
    if "status" in filters and filters["status"] not in STATUSES:
        raise BadQuery("status", f"status must be one of {', '.join(sorted(STATUSES))}, not {filters['status'][:40]!r}")
    table = params.get("table", "orders").strip() or "orders"
    if table not in COLUMNS:
        raise BadQuery("table", f"table must be orders or fills, not {table[:40]!r}")
    sort = params.get("sort", "").strip()
    known = {k for k, _ in ORDER_COLUMNS} | {k for k, _ in FILL_COLUMNS}
    if sort and sort not in known:
        raise BadQuery("sort", f"unknown column {sort[:40]!r}; the columns are {', '.join(sorted(known))}")
    desc = params.get("desc", "").strip()
    if desc not in ("", "0", "1"):
        raise BadQuery("desc", f"desc must be 0 or 1, not {desc[:40]!r}")
    return {"date": date, "filters": filters, "table": table, "sort": sort, "desc": desc == "1"}


def _matches(row: Mapping[str, Any], filters: Mapping[str, str], names: Iterable[str]) -> bool:
    return all(str(row.get(FILTERS[n]) or "").lower() == filters[n] for n in names if n in filters)


def _sorted(rows: list[dict[str, Any]], sort: str, desc: bool) -> list[dict[str, Any]]:
    if not sort or not rows or sort not in rows[0]:
        return rows[::-1] if desc else rows
    numeric = all(isinstance(r.get(sort), (int, float)) or r.get(sort) is None for r in rows)
    key = (lambda r: r.get(sort) or 0) if numeric else (lambda r: str(r.get(sort) or ""))
    return sorted(rows, key=key, reverse=desc)


def select(orders: list[dict[str, Any]], fills: list[dict[str, Any]], query: Mapping[str, Any]
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The orders and fills the query's filters keep, in its sort order."""
    filters = query["filters"]
    kept_orders = [o for o in orders if _matches(o, filters, FILTERS)]
    kept_fills = [f for f in fills if _matches(f, filters, ("agent", "code", "side"))]
    if any(n in filters for n in ORDER_ONLY_FILTERS):
        ids = {o["client_order_id"] for o in kept_orders}
        kept_fills = [f for f in kept_fills if f.get("client_order_id") in ids]
    return _sorted(kept_orders, query["sort"], query["desc"]), _sorted(kept_fills, query["sort"], query["desc"])


def options(orders: Sequence[Mapping[str, Any]], fills: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """The values each filter can take on the day (for the page's pickers)."""
    out: dict[str, list[str]] = {}
    for name, column in FILTERS.items():
        rows = orders if name in ORDER_ONLY_FILTERS else [*orders, *fills]
        out[name] = sorted({str(r.get(column)) for r in rows if r.get(column)})
    return out


def view(blotter: Blotter, params: Mapping[str, str]) -> dict[str, Any]:
    """The whole answer of ``/api/blotter`` for ``params``; raises BadQuery."""
    days = blotter.days()
    query = parse_query(params, days)
    problems: list[str] = []
    orders, fills = blotter.rows("orders", query["date"], problems), blotter.rows("fills", query["date"], problems)
    shown_orders, shown_fills = select(orders, fills, query)
    return {
        "date": query["date"],
        "days": days,
        "filters": query["filters"],
        "options": options(orders, fills),
        "counts": {"orders": len(shown_orders), "fills": len(shown_fills),
                   "orders_of_day": len(orders), "fills_of_day": len(fills)},
        "columns": {t: [{"field": k, "title": label} for k, label in cols] for t, cols in COLUMNS.items()},
        "problems": problems,
        "orders": [_cells(o, "orders") for o in shown_orders],
        "fills": [_cells(f, "fills") for f in shown_fills],
    }


def _cells(row: Mapping[str, Any], table: str) -> dict[str, Any]:
    return {k: row.get(k) for k, _ in COLUMNS[table]}


# --- files ---------------------------------------------------------------------


def to_csv(rows: Sequence[Mapping[str, Any]], table: str) -> str:
    """The rows as CSV with a header line of column keys."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    keys = [k for k, _ in COLUMNS[table]]
    writer.writerow(keys)
    for row in rows:
        writer.writerow(["" if row.get(k) is None else row.get(k) for k in keys])
    return buf.getvalue()


def to_xlsx(tables: Mapping[str, Sequence[Mapping[str, Any]]]) -> bytes:
    """A workbook with a sheet per table (headers the column labels; numbers stay numbers)."""
    from openpyxl import Workbook  # only for a download (it loads numpy when installed)

    wb = Workbook(write_only=True)
    for table, rows in tables.items():
        ws = wb.create_sheet(table)
        ws.append([label for _, label in COLUMNS[table]])
        for row in rows:
            ws.append([row.get(k) for k, _ in COLUMNS[table]])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


# --- the page and the routes ---------------------------------------------------------


def page_body(blotter: Blotter) -> str:
    """The blotter's controls and grids, filled in by ``static/blotter.js`` from ``/api/blotter``."""
    filters = "".join(
        f'<label>{name} <select id="blotter-{name}" data-filter="{name}"><option value="">all</option></select></label>'
        for name in FILTERS
    )
    return f"""
<div class="toolbar blotter-controls"><label>day <select id="blotter-date"></select></label>
{filters}<button id="blotter-clear" type="button">clear filters</button>
<button id="blotter-refresh" type="button">refresh</button></div>
<p id="blotter-error" class="warn" hidden></p>
<p class="muted blotter-source">From the journal ({blotter.path}) and, for older days, its archive ({blotter.archive_path}).</p>
<h2>Orders <span id="blotter-orders-count" class="muted"></span></h2>
<div class="toolbar"><a id="blotter-orders-csv" href="/api/blotter.csv?table=orders">orders CSV</a>
<a id="blotter-fills-csv" href="/api/blotter.csv?table=fills">fills CSV</a>
<a id="blotter-xlsx" href="/api/blotter.xlsx">XLSX (orders and fills)</a></div>
<div id="blotter-orders" class="blotter-grid"></div>
<h2>Fills <span id="blotter-fills-count" class="muted"></span></h2>
<div id="blotter-fills" class="blotter-grid"></div>
"""


def _file_name(data: Mapping[str, Any], suffix: str) -> str:
    return f"blotter-{data['date']}{suffix}"


def router(app: FastAPI, run_path: Path) -> APIRouter:
    """The blotter's page and API over the journal and archive of ``run_path``."""
    blotter = Blotter(run_path)
    api = APIRouter()

    async def answer(request: Request) -> dict[str, Any]:
        """The view of the request's query, or ``{"error", "param", "reason"}`` when it is bad."""
        try:
            return await run_in_threadpool(view, blotter, dict(request.query_params))
        except BadQuery as exc:
            return {"error": "BAD_QUERY", "param": exc.param, "reason": str(exc)}

    @api.get("/blotter", response_class=HTMLResponse)
    async def blotter_page(request: Request) -> Response:
        data = await answer(request)
        return app.state.render("blotter", "Blotter", page_body(blotter), {"blotter": data}, sections=("venue",),
                                scripts=(*GRID_SCRIPTS, "blotter.js"), styles=GRID_STYLES)

    @api.get("/api/blotter")
    async def api_blotter(request: Request) -> Response:
        data = await answer(request)
        return JSONResponse(data, status_code=422 if "error" in data else 200)

    @api.get("/api/blotter.csv")
    async def api_blotter_csv(request: Request) -> Response:
        data = await answer(request)
        if "error" in data:
            return JSONResponse(data, status_code=422)
        table = request.query_params.get("table", "orders").strip() or "orders"
        return Response(to_csv(data[table], table), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{_file_name(data, f"-{table}.csv")}"'})

    @api.get("/api/blotter.xlsx")
    async def api_blotter_xlsx(request: Request) -> Response:
        data = await answer(request)
        if "error" in data:
            return JSONResponse(data, status_code=422)
        body = await run_in_threadpool(to_xlsx, {"orders": data["orders"], "fills": data["fills"]})
        return Response(body, media_type=XLSX_MEDIA_TYPE,
                        headers={"Content-Disposition": f'attachment; filename="{_file_name(data, ".xlsx")}"'})

    return api


def install(app: FastAPI, run_path: Path) -> None:
    """Add the blotter's routes to the dashboard ``app``."""
    app.include_router(router(app, run_path))
