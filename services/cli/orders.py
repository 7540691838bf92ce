"""``trader orders`` and ``trader positions``: the order manager's book from a terminal.

Wire (RPC on ``order_manager_rpc``)::

    Command(name="orders", args={"agent_id"?: str, "open"?: bool}) -> CommandResult(result=[order rows])
    Command(name="positions") -> CommandResult(result={"agents": {...}, "account": {code: qty}})

Usage::

    trader orders [--agent ID] [--open] [--json]
    trader positions [--json]

When the order manager is down the command says so, says how to start it, and exits 1.
"""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from services.cli.service_call import call

console = Console()
err = Console(stderr=True)


def _ask(name: str, args: dict[str, Any] | None = None) -> Any:
    """Run one order-manager command; exit 1 with a clear message when it cannot answer."""
    return call("order_manager_rpc", name, args, timeout_ms=2000, retries=0)

def orders(
    agent: str = typer.Option(None, "--agent", help="Only this agent's orders."),
    open_only: bool = typer.Option(False, "--open", help="Only orders still working."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """List today's orders from the order manager's journal."""
    args: dict[str, Any] = {"open": open_only}
    if agent:
        args["agent_id"] = agent
    rows = _ask("orders", args)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"orders ({len(rows)})")
    for col in ("client order id", "agent", "code", "side", "qty", "price", "status", "filled", "avg", "reason"):
        table.add_column(col, justify="right" if col in ("qty", "price", "filled", "avg") else "left")
    for o in rows:
        table.add_row(o["client_order_id"], o["agent_id"], o["code"], o["side"], f"{o['qty']:,}", f"{o['price']:,}",
                      o["status"], f"{o['filled_qty']:,}", f"{o['avg_fill_price']:,}", o["reason_code"])
    console.print(table)


def positions(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """Holdings implied by the journal's fills, per agent and for the account."""
    data = _ask("positions")
    if as_json:
        print(json.dumps(data, indent=2))
        return
    table = Table(title="positions (from the order manager's fills)")
    for col in ("agent", "code", "qty", "avg price", "cash flow (won)", "fees", "taxes"):
        table.add_column(col, justify="left" if col in ("agent", "code") else "right")
    for agent_id, book in sorted(data["agents"].items()):
        for code, pos in sorted(book["positions"].items()):
            table.add_row(agent_id, code, f"{pos['qty']:,}", f"{pos['avg_price']:,}", f"{book['cash_flow_won']:,}",
                          f"{book['fees_won']:,}", f"{book['taxes_won']:,}")
    console.print(table)
    account = ", ".join(f"{code} {qty:,}" for code, qty in sorted(data["account"].items())) or "nothing"
    console.print(f"account: {account}")
