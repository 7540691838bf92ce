"""``trader agents`` (the roster and its check) and ``trader agent ID`` (one agent's live book).

    trader agents [--json] [--export FILE.csv|FILE.xlsx]
    trader agent ID [--json]

``agents`` reads the roster file (``roster_file`` in the stack settings), runs
the roster checker and prints one row per entry, valid or not, with its
problems. ``agent`` asks the agent's own status page (GET
``http://127.0.0.1:<dp>/status``); an agent that does not answer is reported as
not running, with the command that starts it.
"""

from __future__ import annotations

import csv
import json
import tomllib
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from agents.settings import check_roster
from core.config import PROJECT_ROOT, ConfigError, StackSettings, load_stack
from core.instruments import InstrumentError, load_instruments
from services.cli.tables import Col, FitTable, wide_option

console = Console()
err = Console(stderr=True)
STATUS_TIMEOUT_S = 2.0
COLUMNS = ("id", "codes", "strategy", "dp", "cash", "enabled", "ok", "problems")
AGENT_COLUMNS = (Col("id", essential=True), Col("codes", essential=True), Col("strategy", essential=True),
                 Col("dp", numeric=True), Col("cash", numeric=True), Col("enabled"), Col("ok", essential=True),
                 Col("problems", essential=True, wrap=True))


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _project_path(p: str) -> Path:
    path = Path(p)
    return path if path.is_absolute() else PROJECT_ROOT / path


def _settings() -> StackSettings:
    try:
        return load_stack()
    except ConfigError as exc:
        _fail(str(exc), 2)
        raise  # unreachable: _fail exits


def roster_rows(settings: StackSettings) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per roster entry (id, codes, strategy, dp, cash, enabled, ok, problems) and file-level problems."""
    path = _project_path(settings.roster_file)
    try:
        instruments = load_instruments(_project_path(settings.market.instruments_file))
    except (OSError, InstrumentError) as exc:
        return [], [f"instrument master: {exc}"]
    report = check_roster(path, instruments, settings)
    try:
        with open(path, "rb") as f:
            entries = tomllib.load(f).get("agents")
    except (OSError, tomllib.TOMLDecodeError):
        entries = None
    by_agent: dict[str, list[str]] = {}
    general: list[str] = []
    for p in report.problems:
        if p.agent_id == "-":
            general.append(f"{p.file}: {p.key}: {p.reason}")
        else:
            by_agent.setdefault(p.agent_id, []).append(f"{p.key}: {p.reason}")
    rows = []
    for index, raw in enumerate(entries if isinstance(entries, list) else []):
        raw = raw if isinstance(raw, Mapping) else {}
        label = raw["id"] if isinstance(raw.get("id"), str) and raw["id"] else f"#{index + 1}"
        codes = raw.get("codes") if raw.get("codes") is not None else [raw.get("code")]
        problems = by_agent.pop(label, [])
        rows.append(
            {
                "id": label,
                "codes": [str(c) for c in codes if c is not None] if isinstance(codes, list) else [str(codes)],
                "strategy": str(raw.get("strategy", "")),
                "dp": raw.get("dp"),
                "cash": raw.get("cash"),
                "enabled": raw.get("enabled", True),
                "ok": not problems,
                "problems": problems,
            }
        )
    for label, problems in by_agent.items():  # problems of an id that appears twice land on its first row
        row = next((r for r in rows if r["id"] == label), None)
        if row is not None:
            row["problems"] += problems
            row["ok"] = False
    return rows, general


def _export(rows: list[dict[str, Any]], target: Path) -> None:
    flat = [{**r, "codes": " ".join(r["codes"]), "problems": "; ".join(r["problems"])} for r in rows]
    suffix = target.suffix.lower()
    if suffix == ".csv":
        with open(target, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(flat)
    elif suffix == ".xlsx":
        try:
            from openpyxl import Workbook
        except ImportError:
            _fail("XLSX export needs openpyxl (pip install openpyxl); export to .csv instead")
        wb = Workbook()
        ws = wb.active
        ws.title = "agents"
        ws.append(list(COLUMNS))
        for r in flat:
            ws.append([r[c] for c in COLUMNS])
        wb.save(target)
    else:
        _fail(f"cannot export to {target.name}: use a .csv or .xlsx file name")


def agents(
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
    export: Path | None = typer.Option(None, "--export", help="Also write the table to FILE.csv or FILE.xlsx."),
    wide: bool = wide_option(),
) -> None:
    """List the agent roster with the checker's verdict on every entry; exit 1 when an entry has a problem.

    --export FILE.csv or FILE.xlsx also writes every column of every entry to
    that file (a name ending otherwise is refused, exit 1). Columns the terminal
    has no room for are named under the table; --wide shows them all.

    Examples: `trader agents`, `trader agents --export roster.xlsx`, `trader agents --json`
    """
    settings = _settings()
    rows, general = roster_rows(settings)
    if export is not None:
        _export(rows, export)
    if as_json:
        print(json.dumps({"agents": rows, "problems": general}, indent=2))
    else:
        table = FitTable(f"agents ({settings.roster_file})", AGENT_COLUMNS)
        for r in rows:
            table.add_row(
                r["id"],
                " ".join(r["codes"]),
                r["strategy"],
                str(r["dp"]),
                f"{r['cash']:,}" if isinstance(r["cash"], int) else str(r["cash"]),
                "yes" if r["enabled"] else "no",
                "[green]ok[/]" if r["ok"] else "[red]problems[/]",
                "\n".join(r["problems"]),
            )
        table.show(console, wide)
        for line in general:
            err.print(f"[red]{line}[/]")
        if export is not None:
            console.print(f"written to {export}")
    if general or any(not r["ok"] for r in rows):
        raise typer.Exit(1)


def fetch_status(dp: int, timeout_s: float = STATUS_TIMEOUT_S) -> dict[str, Any] | None:
    """An agent's status document from its page on 127.0.0.1:<dp>, or None if nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{dp}/status", timeout=timeout_s) as resp:
            data = json.loads(resp.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def agent(
    agent_id: str = typer.Argument(..., help="The agent's id in the roster."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
    wide: bool = wide_option(),
) -> None:
    """Show one agent's live book, open orders and sync state from its status page.

    Columns the terminal has no room for are named under each table; --wide shows them all.
    Example: `trader agent sma-a`, `trader agent sma-a --json`
    """
    settings = _settings()
    rows, _ = roster_rows(settings)
    row = next((r for r in rows if r["id"] == agent_id), None)
    if row is None:
        _fail(f"no agent {agent_id!r} in {settings.roster_file}; `trader agents` lists the roster")
    assert row is not None
    dp = row["dp"]
    status = fetch_status(dp) if isinstance(dp, int) else None
    if status is None or status.get("agent_id") != agent_id:
        _fail(
            f"agent {agent_id} is not running (nothing answers on 127.0.0.1:{dp}); "
            f"start it with `trader spawn {agent_id}` or `python -m agents.runtime --id {agent_id}`"
        )
    assert status is not None
    if as_json:
        print(json.dumps(status, indent=2))
        return
    book = status.get("book") or {}
    sync = status.get("sync") or {}
    head = FitTable(f"agent {agent_id} ({status.get('strategy')}, pid {status.get('pid')}, dp {dp})",
                    (Col("key", essential=True), Col("value", essential=True, numeric=True)), show_header=False)
    for key in ("trading", "phase", "trading_date"):
        head.add_row(key, str(status.get(key, "")))
    head.add_row("sync", f"{sync.get('state')} ({sync.get('orders')} orders, {sync.get('fills')} fills)")
    head.add_row("strategy errors", str(status.get("errors_total", 0)))
    for key in ("cash_won", "cash_on_hold_won", "cash_available_won", "holdings_value_won", "equity_won",
                "realized_pnl_won", "unrealized_pnl_won", "fees_won", "taxes_won"):
        value = book.get(key)
        head.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    head.show(console, wide)
    positions = FitTable("positions", (
        Col("code", essential=True), Col("qty", essential=True, numeric=True), Col("avg price", essential=True, numeric=True),
        Col("last", essential=True, numeric=True), Col("break-even", numeric=True), Col("realised", numeric=True),
        Col("unrealised", essential=True, numeric=True), Col("pending buy", numeric=True), Col("pending sell", numeric=True)))
    for code, p in (book.get("positions") or {}).items():
        positions.add_row(
            code, str(p.get("qty")), str(p.get("avg_price")), str(p.get("last_price")), str(p.get("break_even_price")),
            f"{p.get('realized_pnl_won', 0):,}", f"{p.get('unrealized_pnl_won', 0):,}",
            str(p.get("pending_buy_qty")), str(p.get("pending_sell_qty")),
        )
    positions.show(console, wide)
    orders = FitTable("open orders", (
        Col("client order id", essential=True), Col("code", essential=True), Col("side", essential=True),
        Col("qty", essential=True, numeric=True), Col("price", essential=True, numeric=True), Col("filled", numeric=True),
        Col("status", essential=True)))
    for o in status.get("open_orders") or []:
        orders.add_row(o["client_order_id"], o["code"], o["side"], str(o["qty"]), str(o["price"]), str(o["filled_qty"]), o["status"])
    orders.show(console, wide)
