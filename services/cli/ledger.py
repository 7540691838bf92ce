"""``trader ledger``: the book of record (the ledger in the order journal) from a terminal.

Wire (RPC on ``order_manager_rpc``)::

    Command(name="ledger_adjust", args={"agent_id", "code", "qty", "cash_won", "cost_won"?, "reason", "who",
                                        "adjustment_id"}) -> CommandResult(result={the booked adjustment})
    Command(name="positions") -> the books now, with every adjustment booked
    Command(name="ledger_day", args={"date": YYYYMMDD}) -> that date's openings and closings

Usage::

    trader ledger adjust AGENT CODE --qty N --cash-won W --reason TEXT [--cost-won C] [--json]
    trader ledger show [--agent ID] [--json]
    trader ledger day YYYYMMDD [--json]

An adjustment is the only way to change the books other than a fill: a
dividend in shares, a split, a transfer, a trade made outside the firm. It is
journaled with who (``cli:$USER``) and why, moves the agent's book and the
account's, is shown in the agent's book, the reports and the dashboard, and
settles a reconciliation break it explains. One that names an unknown agent or
code, would leave a holding negative, or has no reason is refused (exit 1) and
changes nothing.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import typer
from rich.console import Console

from services.cli.service_call import call, who
from services.cli.tables import Col, FitTable, wide_option

console = Console()
err = Console(stderr=True)
ledger_app = typer.Typer(help="The book of record: positions and cash per agent and day, and adjustments.",
                         no_args_is_help=True)


def _ask(name: str, args: dict[str, Any] | None = None) -> Any:
    return call("order_manager_rpc", name, args, timeout_ms=3000, retries=0)


@ledger_app.command("adjust")
def adjust(
    agent: str = typer.Argument(..., help="The agent whose book changes."),
    code: str = typer.Argument(..., help="The instrument code (6 characters, e.g. 005930)."),
    qty: int = typer.Option(0, "--qty", help="Shares in (+) or out (-)."),
    cash_won: int = typer.Option(0, "--cash-won", help="Cash in (+) or out (-), in won."),
    cost_won: int = typer.Option(0, "--cost-won", help="Book cost of shares coming in (default 0: a gift, a dividend)."),
    reason: str = typer.Option(..., "--reason", help="Why (journaled with who; shown wherever the adjustment is)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Book a change no fill explains (shares or cash) in an agent's book and the account's."""
    if not reason.strip():
        err.print("[bold red]error:[/] --reason must say why")
        raise typer.Exit(2)
    booked = _ask("ledger_adjust", {"agent_id": agent, "code": code, "qty": qty, "cash_won": cash_won,
                                    "cost_won": cost_won, "reason": reason, "who": who(),
                                    "adjustment_id": f"adj-{uuid.uuid4().hex[:16]}"})
    if as_json:
        print(json.dumps(booked, indent=2))
        return
    console.print(f"booked {booked['adjustment_id']} on {booked['ledger_date']}: {booked['agent_id']} {booked['code']} "
                  f"{booked['qty']:+,} shares, {booked['cash_won']:+,} won ({booked['reason']}, by {booked['who']})")


@ledger_app.command("show")
def show(
    agent: str = typer.Option(None, "--agent", help="Only this agent's book."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
    wide: bool = wide_option(),
) -> None:
    """The books now (the latest opening plus what followed) and every adjustment booked.

    Columns the terminal has no room for are named under the table; --wide shows them all.
    Example: `trader ledger show --agent sma-a`
    """
    data = _ask("positions")
    if agent is not None:
        if agent not in data["agents"]:
            err.print(f"[bold red]error:[/] the ledger has no book for {agent!r}")
            raise typer.Exit(1)
        data = {**data, "agents": {agent: data["agents"][agent]}}
    if as_json:
        print(json.dumps(data, indent=2))
        return
    table = FitTable(f"the ledger, open on {data.get('ledger_date') or '-'}",
                     (Col("book", essential=True), Col("cash (won)", essential=True, numeric=True),
                      Col("holdings", essential=True, wrap=True), Col("realised (won)", numeric=True),
                      Col("fees", numeric=True), Col("taxes", numeric=True), Col("adjustments", numeric=True)))
    books = dict(data["agents"])
    if agent is None:
        books["ACCOUNT"] = data["account_book"]
    for name, book in books.items():
        held = ", ".join(f"{c} {p['qty']:,}" for c, p in book["positions"].items()) or "-"
        table.add_row(name, f"{book['cash_won']:,}", held, f"{book['realized_pnl_won']:,}", f"{book['fees_won']:,}",
                      f"{book['taxes_won']:,}", str(len(book["adjustments"])))
    table.show(console, wide)
    adjustments = (data["agents"][agent] if agent else data["account_book"])["adjustments"]
    if adjustments:
        adj = FitTable("adjustments", (Col("id", essential=True), Col("agent", essential=True), Col("code", essential=True),
                                       Col("qty", essential=True, numeric=True), Col("cash (won)", essential=True, numeric=True),
                                       Col("reason", wrap=True), Col("who")))
        for a in adjustments:
            adj.add_row(a["adjustment_id"], a["agent_id"], a["code"], f"{a['qty']:+,}", f"{a['cash_won']:+,}",
                        a["reason"], a["who"])
        adj.show(console, wide)


@ledger_app.command("day")
def day(
    date: str = typer.Argument(..., help="The ledger date (YYYYMMDD)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
    wide: bool = wide_option(),
) -> None:
    """One date's openings and closings per book (closing = opening + fills + adjustments).

    Columns the terminal has no room for are named under the table; --wide shows them all.
    Example: `trader ledger day 20260303`
    """
    data = _ask("ledger_day", {"date": date.replace("-", "")})
    if as_json:
        print(json.dumps(data, indent=2))
        return
    if not data["opening"]:
        err.print(f"[bold red]error:[/] the ledger has no opening on {date}")
        raise typer.Exit(1)
    table = FitTable(f"ledger {data['ledger_date']}" + (f" (rolled into {data['rolled']['next_date']})"
                                                         if data.get("rolled") else " (not rolled yet)"),
                     (Col("book", essential=True), Col("opening cash", numeric=True),
                      Col("closing cash", essential=True, numeric=True), Col("opening holdings", wrap=True),
                      Col("closing holdings", essential=True, wrap=True), Col("realised today", essential=True, numeric=True)))
    for book in sorted(data["opening"]):
        o, c = data["opening"][book], data["closing"].get(book, {})

        def held(b: dict[str, Any]) -> str:
            return ", ".join(f"{k} {h['qty']:,}" for k, h in (b.get("positions") or {}).items() if h["qty"]) or "-"

        table.add_row(book, f"{o['cash_won']:,}", f"{c.get('cash_won', 0):,}", held(o), held(c),
                      f"{c.get('realized_pnl_won', 0) - o['realized_pnl_won']:,}")
    table.show(console, wide)
