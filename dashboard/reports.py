"""Back-test reports in the dashboard: the folders ``trader backtest --save`` writes, listed and opened.

A report is a folder ``<run_dir>/backtests/<name>/`` as ``backtest.report.write_report``
leaves it: ``report.html`` (self-contained: inline SVG charts, no scripts),
``trades.csv``, ``equity.csv`` and ``metrics.json`` (the machine-readable
summary). ``trader backtest ... --save`` names the folder
``<YYYYMMDD-HHMMSS>-<strategy or roster>``; ``--report <run_dir>/backtests/NAME``
puts one there by hand.

- page ``/reports``: every report, newest first: name, when written, strategies,
  period, fill model and the combined metrics;
- page ``/reports/{name}``: the report's page in a frame, its metrics and its files;
- ``/api/reports`` and ``/api/reports/{name}``: the same as JSON;
- ``/reports/{name}/files/{path}``: a file of the report, with its media type.

Only files inside a report's folder are served: a name is one path segment of
safe characters, and a file's resolved path (symlinks followed) must lie in
the folder, so ``..``, an absolute path or a link out of it gets 404. The
report's HTML is served with a sandboxing content security policy (no
script runs, nothing is fetched from elsewhere).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import mimetypes
import re
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

KST = dt.timezone(dt.timedelta(hours=9))
REPORTS_DIR = "backtests"  # services/cli/backtest.py SAVED_REPORTS_DIR: where --save writes
MARKERS = ("metrics.json", "report.html")  # a folder with either is a report
KEY_METRICS = (
    ("total_return", "total return", "pct"),
    ("sharpe", "Sharpe", "num"),
    ("max_drawdown", "max drawdown", "pct"),
    ("trades", "fills", "int"),
    ("win_rate", "win rate", "pct"),
    ("end_equity_won", "end equity (won)", "int"),
)
MEDIA_TYPES = {".csv": "text/csv", ".json": "application/json", ".md": "text/markdown", ".svg": "image/svg+xml",
               ".png": "image/png", ".html": "text/html"}
REPORT_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class _AgentsTable(HTMLParser):
    """The strategy and codes of each agent from the report page's "Agents" table."""

    def __init__(self) -> None:
        super().__init__()
        self.in_h2 = False
        self.h2 = ""
        self.table = False
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "h2":
            self.in_h2, self.h2 = True, ""
        elif tag == "table" and self.h2.strip() == "Agents" and not self.rows:
            self.table = True
        elif self.table and tag == "tr":
            self.rows.append([])
        elif self.table and tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2":
            self.in_h2 = False
        elif tag == "table":
            self.table = False
            self.h2 = ""
        elif self.table and tag in ("td", "th") and self.cell is not None and self.rows:
            self.rows[-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.in_h2:
            self.h2 += data
        elif self.cell is not None:
            self.cell.append(data)

    def agents(self) -> list[dict[str, str]]:
        if not self.rows:
            return []
        head, *body = self.rows
        return [dict(zip(head, row)) for row in body if len(row) == len(head)]


def _agents(html_path: Path) -> list[dict[str, str]]:
    if not html_path.is_file():
        return []
    parser = _AgentsTable()
    parser.feed(html_path.read_text(encoding="utf-8", errors="replace"))
    return parser.agents()


def _period(equity_path: Path) -> tuple[str, str]:
    if not equity_path.is_file():
        return "", ""
    with open(equity_path, newline="", encoding="utf-8") as f:
        dates = sorted({row["date"] for row in csv.DictReader(f) if row.get("date")})
    return (dates[0], dates[-1]) if dates else ("", "")


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "pct":
        return f"{float(value) * 100:.2f}%"
    if kind == "num":
        return f"{float(value):.3f}"
    return f"{round(value):,}"


class ReportShelf:
    """The report folders under one directory, read on demand (a report's summary kept until its files change)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, tuple[tuple[float, ...], dict[str, Any]]] = {}

    def folder(self, name: str) -> Path | None:
        """The folder of report ``name``, or None when the name is not a safe one or no such report exists."""
        if not _NAME.match(name):
            return None
        folder = self.root / name
        try:
            inside = folder.resolve().is_relative_to(self.root.resolve())
        except OSError:
            return None
        if not inside or not folder.is_dir() or not any((folder / m).is_file() for m in MARKERS):
            return None
        return folder

    def summary(self, name: str) -> dict[str, Any] | None:
        """What the list shows of one report, or None when there is none of that name."""
        folder = self.folder(name)
        if folder is None:
            return None
        files = [folder / n for n in ("metrics.json", "report.html", "equity.csv")]
        stamp = tuple(p.stat().st_mtime if p.exists() else 0.0 for p in files)
        cached = self._cache.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        info = self._read(name, folder, max(stamp))
        self._cache[name] = (stamp, info)
        return info

    def _read(self, name: str, folder: Path, written: float) -> dict[str, Any]:
        problem = ""
        meta: dict[str, Any] = {}
        try:
            meta = json.loads((folder / "metrics.json").read_text(encoding="utf-8")) if (folder / "metrics.json").is_file() else {}
            if not isinstance(meta, dict):
                meta, problem = {}, "metrics.json holds no summary"
        except (OSError, ValueError) as exc:
            problem = f"metrics.json unreadable: {exc}"
        try:
            agents = _agents(folder / "report.html")
            start, end = _period(folder / "equity.csv")
        except (OSError, csv.Error, UnicodeDecodeError) as exc:
            agents, (start, end) = [], ("", "")
            problem = problem or f"report files unreadable: {exc}"
        all_metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
        combined = all_metrics.get("combined") or (next(iter(all_metrics.values())) if len(all_metrics) == 1 else {})
        return {
            "name": name,
            "written_ns": int(written * 1e9),
            "written": dt.datetime.fromtimestamp(written, KST).strftime("%Y-%m-%d %H:%M:%S") if written else "",
            "strategies": sorted({a.get("strategy", "") for a in agents if a.get("strategy")}),
            "agents": [a.get("agent", "") for a in agents],
            "codes": sorted({c.strip() for a in agents for c in a.get("codes", "").split(",") if c.strip()}),
            "period": {"start": start, "end": end, "days": meta.get("days")},
            "source": meta.get("source", ""),
            "fill_model": meta.get("fill_model", ""),
            "failure": meta.get("failure"),
            "warnings": meta.get("warnings") or [],
            "metrics": {k: combined.get(k) for k, _, _ in KEY_METRICS} if isinstance(combined, dict) else {},
            "problem": problem,
            "files": sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")),
        }

    def list(self) -> list[dict[str, Any]]:
        """Every report under the root, newest written first."""
        if not self.root.is_dir():
            return []
        found = [s for p in self.root.iterdir() if p.is_dir() and (s := self.summary(p.name)) is not None]
        return sorted(found, key=lambda s: (s["written_ns"], s["name"]), reverse=True)

    def file(self, name: str, path: str) -> Path | None:
        """A file of report ``name`` at ``path`` inside its folder, or None (outside it, hidden, missing)."""
        folder = self.folder(name)
        if folder is None or not path or "\x00" in path:
            return None
        parts = Path(path).parts
        if Path(path).is_absolute() or any(p in ("..", ".") or p.startswith(".") for p in parts):
            return None
        target = folder / path
        try:
            resolved = target.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not resolved.is_relative_to(folder.resolve()) or not resolved.is_file():
            return None
        return resolved


# --- pages -----------------------------------------------------------------------


def _metric_cells(metrics: dict[str, Any]) -> str:
    return "".join(f'<td data-k="{k}">{escape(_fmt(metrics.get(k), kind))}</td>' for k, _, kind in KEY_METRICS)


def list_body(shelf: ReportShelf, reports: list[dict[str, Any]]) -> str:
    """The table of reports, newest first, and where they are read from."""
    heads = "".join(f"<th>{escape(label)}</th>" for _, label, _ in KEY_METRICS)
    rows = "".join(
        f'<tr data-name="{escape(r["name"])}"><td><a href="/reports/{escape(r["name"])}">{escape(r["name"])}</a></td>'
        f'<td>{escape(r["written"])}</td><td>{escape(", ".join(r["strategies"]) or "-")}</td>'
        f'<td>{escape(", ".join(r["codes"]) or "-")}</td>'
        f'<td>{escape(r["period"]["start"] or "-")} to {escape(r["period"]["end"] or "-")}</td>'
        f'<td>{escape(r["fill_model"] or "-")}</td>{_metric_cells(r["metrics"])}'
        f'<td class="report-note">{escape(r["problem"] or ("stopped: " + str(r["failure"]) if r["failure"] else "") or "; ".join(r["warnings"]))}</td></tr>'
        for r in reports
    )
    empty = f'<tr><td colspan="{7 + len(KEY_METRICS)}" class="muted">no report yet</td></tr>'
    return f"""
<p class="muted" id="reports-where">Reports are read from <code>{escape(str(shelf.root))}</code>: written there by
<code>trader backtest ... --save</code> (a folder per run), or by <code>--report {escape(str(shelf.root))}/NAME</code>.</p>
<table id="reports" class="grid"><thead><tr><th>report</th><th>written (KST)</th><th>strategy</th><th>codes</th>
<th>period</th><th>fill model</th>{heads}<th>notes</th></tr></thead><tbody>{rows or empty}</tbody></table>
"""


def report_body(info: dict[str, Any]) -> str:
    """One report: its facts and metrics, links to its files and its own page in a frame."""
    name = escape(info["name"])
    files = " ".join(f'<a href="/reports/{name}/files/{escape(f)}">{escape(f)}</a>' for f in info["files"])
    images = "".join(f'<img class="report-image" alt="{escape(f)}" src="/reports/{name}/files/{escape(f)}">'
                     for f in info["files"] if Path(f).suffix in (".png", ".svg"))
    heads = "".join(f"<th>{escape(label)}</th>" for _, label, _ in KEY_METRICS)
    frame = (f'<iframe id="report-frame" class="report-frame" sandbox src="/reports/{name}/files/report.html" '
             f'title="report {name}"></iframe>' if "report.html" in info["files"] else
             '<p class="muted">this report has no report.html</p>')
    period = info["period"]
    return f"""
<p><a href="/reports">all reports</a></p>
<table class="kv" id="report-facts"><tr><th>written (KST)</th><td>{escape(info["written"])}</td></tr>
<tr><th>strategy</th><td>{escape(", ".join(info["strategies"]) or "-")}</td></tr>
<tr><th>agents</th><td>{escape(", ".join(info["agents"]) or "-")}</td></tr>
<tr><th>codes</th><td>{escape(", ".join(info["codes"]) or "-")}</td></tr>
<tr><th>period</th><td>{escape(period["start"] or "-")} to {escape(period["end"] or "-")} ({escape(str(period["days"] or "-"))} day(s))</td></tr>
<tr><th>data</th><td>{escape(str(info["source"]) or "-")}</td></tr>
<tr><th>fill model</th><td>{escape(info["fill_model"] or "-")}</td></tr></table>
<table class="grid" id="report-metrics"><thead><tr>{heads}</tr></thead><tbody><tr>{_metric_cells(info["metrics"])}</tr></tbody></table>
<p class="report-files">files: {files}</p>
{images}
{frame}
"""


def router(app: FastAPI, run_path: Path) -> APIRouter:
    """The reports' pages, API and files for the reports under ``<run_path>/backtests``."""
    shelf = ReportShelf(run_path / REPORTS_DIR)
    api = APIRouter()

    def not_found(name: str) -> JSONResponse:
        return JSONResponse({"error": "NO_SUCH_REPORT", "name": name[:128],
                             "reason": f"no report {name[:128]!r} in {shelf.root}"}, status_code=404)

    @api.get("/reports", response_class=HTMLResponse)
    async def reports_page() -> Response:
        reports = await run_in_threadpool(shelf.list)
        return app.state.render("reports", "Back-test reports", list_body(shelf, reports), {"reports": reports},
                                sections=("venue",))

    @api.get("/reports/{name}", response_class=HTMLResponse)
    async def report_page(name: str) -> Response:
        info = await run_in_threadpool(shelf.summary, name)
        if info is None:
            return HTMLResponse(f"<h1>no report {escape(name[:128])}</h1><p>reports are read from {escape(str(shelf.root))}</p>",
                                status_code=404)
        return app.state.render("reports", f"Report {name}", report_body(info), {"report": info}, sections=("venue",))

    @api.get("/api/reports")
    async def api_reports() -> JSONResponse:
        return JSONResponse({"root": str(shelf.root), "reports": await run_in_threadpool(shelf.list)})

    @api.get("/api/reports/{name}")
    async def api_report(name: str) -> JSONResponse:
        info = await run_in_threadpool(shelf.summary, name)
        return JSONResponse(info) if info is not None else not_found(name)

    @api.get("/reports/{name}/files/{path:path}")
    async def report_file(name: str, path: str) -> Response:
        target = await run_in_threadpool(shelf.file, name, path)
        if target is None:
            return JSONResponse({"error": "NO_SUCH_FILE", "reason": f"no file {path[:200]!r} in report {name[:128]!r}"},
                                status_code=404)
        media = MEDIA_TYPES.get(target.suffix.lower()) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
        if media == "text/html":
            headers["Content-Security-Policy"] = REPORT_CSP
        return FileResponse(target, media_type=media, headers=headers)

    return api


def install(app: FastAPI, run_path: Path) -> None:
    """Add the reports' routes to the dashboard ``app``."""
    app.include_router(router(app, run_path))
