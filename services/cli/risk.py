"""``trader halt``, ``trader resume``, ``trader reduce`` and ``trader recon``: the kill switch and reconciliation.

Wire and usage:

* ``trader halt --why TEXT``  -> risk guard ``Command(name="halt", args={"who", "why"})``: no new orders
* ``trader reduce --why TEXT`` -> ``Command(name="reduce", ...)``: only orders that reduce exposure
* ``trader resume``           -> ``Command(name="resume", ...)``: back to ACTIVE
* ``trader recon [--json]``   -> reconciler ``Command(name="run")``: reconcile now and print the
  breaks (differences nothing in flight explains) and what is pending; exit 1 while a break
  remains (or when it could not run), 0 otherwise

A service that is down is named with how to start it (exit 1).
"""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console

from services.cli.service_call import call, who
from services.cli.tables import Col, FitTable, wide_option

console = Console()
err = Console(stderr=True)

RECON_TIMEOUT_MS = 15_000  # a run gathers from three sources and may wait to confirm a difference


def _call(endpoint_name: str, name: str, args: dict[str, Any], timeout_ms: int | None = None) -> Any:
    return call(endpoint_name, name, args, timeout_ms=timeout_ms, retries=0 if timeout_ms else 1)

def _state_command(name: str, why: str) -> None:
    status = _call("risk_guard_rpc", name, {"who": who(), "why": why})
    console.print(f"trading state: [bold]{status.get('state')}[/] ({status.get('reason') or name}, by {status.get('who')})")


def halt(why: str = typer.Option(..., "--why", help="Why trading stops (journaled and shown on the dashboard).")) -> None:
    """Stop all new orders now (kill switch); cancels still pass."""
    _state_command("halt", why)


def reduce(why: str = typer.Option("reduce exposure", "--why", help="Why only reducing orders are allowed.")) -> None:
    """Allow only orders that reduce exposure (sells within holdings)."""
    _state_command("reduce", why)


def resume(why: str = typer.Option("resume", "--why", help="Why trading resumes.")) -> None:
    """Return to ACTIVE trading after a halt or reduce."""
    _state_command("resume", why)


def recon(
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON for scripts."),
    wide: bool = wide_option(),
) -> None:
    """Reconcile the broker with the ledger and the agents' books now; exit 1 while a break remains.

    A break stays until it is gone or booked with `trader ledger adjust`; a
    difference something in flight explains is shown as pending. Columns the
    terminal has no room for are named under the table; --wide shows them all.

    Example: `trader recon`, `trader recon --json`
    """
    report = _call("reconciler_rpc", "run", {}, timeout_ms=RECON_TIMEOUT_MS) or {}
    if as_json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_report(report, wide)
    if report.get("error") or report.get("breaks"):
        raise typer.Exit(1)


def _print_report(report: dict[str, Any], wide: bool = False) -> None:
    if report.get("error"):
        err.print(f"[bold red]reconciliation could not run:[/] {report['error']}")
        return
    for healed in report.get("healed") or []:
        console.print(f"healed {healed.get('kind')} {healed.get('key')} with {healed.get('command')}"
                      + (f" [red](failed: {healed['error']})[/]" if healed.get("error") else ""))
    breaks, pending = report.get("breaks") or [], report.get("pending") or []
    if not breaks and not pending and not report.get("differences"):
        console.print("[green]clean:[/] the broker, the ledger and the agents' books agree")
    for title, rows in ((f"[bold red]{len(breaks)} break(s)[/]", breaks), (f"{len(pending)} pending", pending)):
        if not rows:
            continue
        table = FitTable(title, (Col("class", essential=True), Col("action"), Col("key", essential=True),
                                 Col("what", essential=True, wrap=True)))
        for d in rows:
            table.add_row(d.get("kind", ""), d.get("action", ""), d.get("key", ""), d.get("text", ""))
        table.show(console, wide)
    if breaks:
        console.print("a break stays until it is gone or booked with `trader ledger adjust AGENT CODE --qty N "
                      "--cash-won W --reason TEXT`")
    if report.get("halted"):
        console.print("[bold red]trading was halted[/] (resume with `trader resume` once resolved)")
    for skipped in report.get("skipped") or []:
        console.print(f"[dim]not checked: {skipped}[/]")
    unreachable = (report.get("sources") or {}).get("agents_unreachable") or []
    if unreachable:
        console.print(f"[dim]agents not reachable (books not compared): {', '.join(unreachable)}[/]")
