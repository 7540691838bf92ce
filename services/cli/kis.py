"""``trader kis``: the KIS gateway from a terminal (the venue when ``broker.kind = "kis"``).

Wire (RPC on ``exchange_rpc``, where the gateway binds)::

    Command(name="status") -> {env, live, account (masked), ready, stream: {state, streamed, polled, ...},
                               orders_in_doubt, reduce_only_codes, counters, rest}
    Command(name="adopt", args={"client_order_id", "odno"}) -> the order, now KIS order ``odno``

Usage::

    trader kis status [--json]
    trader kis adopt CLIENT_ORDER_ID ODNO

An order whose reply never came and that two or more of KIS's daily orders
match is flagged (alert ``kis_order_ambiguous``) and its code is reduce-only.
``adopt`` is how a person settles it after looking at the account (HTS or
KIS's daily orders): it names the KIS order number that is this order.
"""

from __future__ import annotations

import json

import typer
from rich.console import Console

from services.cli.service_call import call, load_settings
from services.cli.tables import Col, FitTable

console = Console()
err = Console(stderr=True)
kis_app = typer.Typer(help="The KIS gateway: its connection, streamed and polled codes, orders of unknown fate.",
                      no_args_is_help=True)


def _gateway_settings():  # noqa: ANN202 - StackSettings
    settings = load_settings()
    if settings.broker.kind != "kis":
        err.print("[bold red]error:[/] broker.kind is \"paper\": this stack trades on the paper exchange, not "
                  "through the KIS gateway (set TRADER_BROKER__KIND=kis)", soft_wrap=True)
        raise typer.Exit(2)
    return settings


@kis_app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """The gateway's connection, which codes stream and which are polled, and orders of unknown fate."""
    settings = _gateway_settings()
    result = call("exchange_rpc", "status", timeout_ms=3000, retries=0, settings=settings)
    if as_json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return
    stream = result.get("stream") or {}
    table = FitTable(f"KIS {result.get('env')} gateway, account {result.get('account')}"
                     + ("  [bold red]LIVE: real money[/]" if result.get("live") else ""),
                     (Col("what", essential=True), Col("value", essential=True, wrap=True)))
    table.add_row("orders go out", "yes" if result.get("ready") else "no (connecting or catching up)")
    table.add_row("stream", f"{stream.get('state')} ({stream.get('attempts', 0)} connection attempt(s))")
    table.add_row("streamed codes", ", ".join(stream.get("streamed") or []) or "-")
    table.add_row("polled codes", ", ".join(stream.get("polled") or []) or "-")
    table.add_row("orders of unknown fate", ", ".join(result.get("orders_in_doubt") or []) or "-")
    table.add_row("reduce-only codes", ", ".join(result.get("reduce_only_codes") or []) or "-")
    table.show(console)


@kis_app.command("adopt")
def adopt(
    client_order_id: str = typer.Argument(..., help="The firm's order of unknown fate."),
    odno: str = typer.Argument(..., help="KIS's order number that is this order (from HTS or the daily orders)."),
) -> None:
    """Settle an order the gateway could not tell apart: name the KIS order it is."""
    settings = _gateway_settings()
    event = call("exchange_rpc", "adopt", {"client_order_id": client_order_id, "odno": odno}, timeout_ms=3000,
                 retries=0, settings=settings)
    console.print(f"{client_order_id} is KIS order {event.get('broker_order_id')}: {event.get('status')}")
