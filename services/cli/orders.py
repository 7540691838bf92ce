"""``trader orders`` and ``trader positions``: the order manager's book from a terminal.

Wire (RPC on ``order_manager_rpc``)::

    Command(name="orders", args={"agent_id"?: str, "open"?: bool, "date"?: YYYYMMDD, "since"?: YYYYMMDD})
        -> CommandResult(result=[order rows, journal and archive alike])
    Command(name="positions") -> CommandResult(result={"agents": {...}, "account": {code: qty}, "account_book": {...}})

Usage::

    trader orders [--agent ID] [--open] [--date YYYYMMDD | --since YYYYMMDD] [--json]
    trader positions [--json]

When the order manager is down the command says so, says how to start it, and exits 1.
"""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console

from services.cli.service_call import call
from services.cli.tables import Col, FitTable, wide_option

console = Console()
err = Console(stderr=True)


ORDER_COLUMNS = (Col("date"), Col("client order id", essential=True), Col("agent"), Col("code", essential=True),
                 Col("side", essential=True), Col("qty", essential=True, numeric=True),
                 Col("price", essential=True, numeric=True), Col("status", essential=True),
                 Col("filled", numeric=True), Col("avg", numeric=True), Col("reason"))


def _ask(name: str, args: dict[str, Any] | None = None) -> Any:
    """Run one order-manager command; exit 1 with a clear message when it cannot answer."""
    return call("order_manager_rpc", name, args, timeout_ms=2000, retries=0)

def _date(value: str | None, option: str) -> str | None:
    if value is None:
        return None
    text = value.replace("-", "")
    if len(text) != 8 or not text.isdigit():
        err.print(f"[bold red]error:[/] {option} takes a date as YYYYMMDD (or YYYY-MM-DD), not {value!r}")
        raise typer.Exit(2)
    return text


def orders(
    agent: str = typer.Option(None, "--agent", help="Only this agent's orders."),
    open_only: bool = typer.Option(False, "--open", help="Only orders still working."),
    date: str = typer.Option(None, "--date", help="The orders of one trading date (YYYYMMDD), archived or not."),
    since: str = typer.Option(None, "--since", help="Every order from this trading date (YYYYMMDD) on, archived or not."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
    wide: bool = wide_option(),
) -> None:
    """List orders from the order manager's journal and its archive (today's unless --date or --since).

    Columns the terminal has no room for are left out and named under the
    table (client order id, code, side, qty, price and status always show);
    --wide shows them all.

    Examples: `trader orders --open`, `trader orders --agent sma-a --since 20260301 --wide`
    """
    args: dict[str, Any] = {"open": open_only}
    if agent:
        args["agent_id"] = agent
    if date is not None and since is not None:
        err.print("[bold red]error:[/] give --date or --since, not both")
        raise typer.Exit(2)
    if date is not None:
        args["date"] = _date(date, "--date")
    if since is not None:
        args["since"] = _date(since, "--since")
    rows = _ask("orders", args)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = FitTable(f"orders ({len(rows)})", ORDER_COLUMNS)
    for o in rows:
        table.add_row(o.get("trading_date", ""), o["client_order_id"], o["agent_id"], o["code"], o["side"], f"{o['qty']:,}", f"{o['price']:,}",
                      o["status"], f"{o['filled_qty']:,}", f"{o['avg_fill_price']:,}", o["reason_code"])
    table.show(console, wide)


def positions(
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
    wide: bool = wide_option(),
) -> None:
    """Holdings and cash in the ledger (the book of record), per agent and for the account.

    Columns the terminal has no room for are named under the table; --wide shows them all.
    Example: `trader positions`, `trader positions --json`
    """
    data = _ask("positions")
    if as_json:
        print(json.dumps(data, indent=2))
        return
    table = FitTable(f"positions (the ledger, open on {data.get('ledger_date') or '-'})",
                     (Col("agent", essential=True), Col("code", essential=True), Col("qty", essential=True, numeric=True),
                      Col("avg price", essential=True, numeric=True), Col("cost (won)", numeric=True),
                      Col("realised (won)", numeric=True), Col("cash (won)", essential=True, numeric=True)))
    for agent_id, book in sorted(data["agents"].items()):
        rows = sorted(book["positions"].items()) or [("-", None)]
        for code, pos in rows:
            table.add_row(agent_id, code, f"{pos['qty']:,}" if pos else "", f"{pos['avg_price']:,}" if pos else "",
                          f"{pos['cost_won']:,}" if pos else "", f"{book['realized_pnl_won']:,}", f"{book['cash_won']:,}")
    table.show(console, wide)
    account = ", ".join(f"{code} {qty:,}" for code, qty in sorted(data["account"].items())) or "nothing"
    cash = (data.get("account_book") or {}).get("cash_won")
    console.print(f"account: {account}" + (f"; cash {cash:,} won" if isinstance(cash, int) else ""))
    adjustments = (data.get("account_book") or {}).get("adjustments") or []
    if adjustments:
        console.print(f"{len(adjustments)} adjustment(s) booked; see `trader ledger show`")
