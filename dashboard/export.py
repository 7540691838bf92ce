"""The agent grid as a file: the same sort and filter as the page, written as CSV or XLSX."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

# The agent grid's columns as exported: (row key, header).
AGENT_COLUMNS = (
    ("id", "id"),
    ("code", "code"),
    ("strategy", "strategy"),
    ("state", "state"),
    ("cash_won", "cash"),
    ("holding", "holding"),
    ("avg_price", "avg price"),
    ("last_price", "last"),
    ("realized_pnl_won", "realised PnL"),
    ("unrealized_pnl_won", "unrealised PnL"),
    ("return_pct", "return %"),
    ("open_orders", "open orders"),
    ("warnings_1h", "warnings 1h"),
    ("errors_1h", "errors 1h"),
    ("refusals_total", "refusals"),
    ("refusals_text", "refusals by reason"),
    ("last_error", "last error"),
    ("heartbeat_age_s", "hb age s"),
    ("liveness", "liveness"),  # new columns go last: scripts read the file by position too
)

XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def select_rows(
    rows: Sequence[Mapping[str, Any]],
    *,
    q: str = "",
    filters: Mapping[str, str] | None = None,
    sort: str = "id",
    desc: bool = False,
) -> list[Mapping[str, Any]]:
    """The rows whose text matches ``q`` (any column) and each column filter, sorted by ``sort``."""
    keys = [k for k, _ in AGENT_COLUMNS]
    rows = [with_refusals_text(r) for r in rows]
    needle = q.strip().lower()
    col_filters = {k: v.strip().lower() for k, v in (filters or {}).items() if k in keys and v.strip()}
    out = []
    for row in rows:
        texts = {k: "" if row.get(k) is None else str(row.get(k)).lower() for k in keys}
        if needle and not any(needle in t for t in texts.values()):
            continue
        if any(f not in texts[k] for k, f in col_filters.items()):
            continue
        out.append(row)
    if sort in keys:
        numeric = [r.get(sort) for r in out if isinstance(r.get(sort), (int, float))]
        if numeric:
            out.sort(key=lambda r: (r.get(sort) is None, r.get(sort) if isinstance(r.get(sort), (int, float)) else 0))
        else:
            out.sort(key=lambda r: str(r.get(sort) or ""))
        if desc:
            out.reverse()
    return out


def with_refusals_text(row: Mapping[str, Any]) -> Mapping[str, Any]:
    """The row with ``refusals_text`` ("REASON n, ...") made from its ``refusals`` counts, for filters and files."""
    if "refusals_text" in row:
        return row
    refusals = row.get("refusals") or {}
    return {**row, "refusals_text": ", ".join(f"{k} {v}" for k, v in refusals.items())}


def grid_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The grid as CSV text with a header line of column keys."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    keys = [k for k, _ in AGENT_COLUMNS]
    writer.writerow(keys)
    for row in rows:
        writer.writerow(["" if row.get(k) is None else row.get(k) for k in keys])
    return buf.getvalue()


def grid_xlsx(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """The grid as an XLSX workbook (numbers stay numbers)."""
    from openpyxl import Workbook  # only for a download (it loads numpy when installed)

    wb = Workbook()
    ws = wb.active
    ws.title = "agents"
    keys = [k for k, _ in AGENT_COLUMNS]
    ws.append([label for _, label in AGENT_COLUMNS])
    for row in rows:
        ws.append([row.get(k) for k in keys])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
