"""The ``trader`` command line: operate the stack from a terminal.

Every listing takes ``--json`` for scripts; a command that fails exits non-zero,
and a command that needs a service that is down says which one and how to start it.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version

import typer
from rich.console import Console

from core.config import ConfigError, load_stack

app = typer.Typer(
    name="trader",
    help="Operate the trader stack: a trading firm of agents and a back office on a ZeroMQ bus.\n\n"
    "Start everything with `trader up` (or `make run`), watch it with `trader ps`, stop it with `trader down`.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=False,
)
config_app = typer.Typer(help="Show and check the configuration (configs/*.toml with TRADER_* overrides).", no_args_is_help=True)
app.add_typer(config_app, name="config")

console = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@app.command()
def version() -> None:
    """Print the installed version of trader."""
    try:
        v = dist_version("trader")
    except PackageNotFoundError:
        v = "unknown (not installed)"
    console.print(f"trader {v}")


@config_app.command("show")
def config_show(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """Print the effective stack configuration, secrets masked."""
    try:
        settings = load_stack()
    except ConfigError as exc:
        _fail(str(exc), 2)
    data = settings.masked()
    if as_json:
        print(json.dumps(data, indent=2))
        return
    from services.cli.tables import Col, FitTable

    table = FitTable("effective configuration", (Col("key", essential=True), Col("value", essential=True, wrap=True)))

    def walk(prefix: str, d: dict) -> None:
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict):
                walk(key, v)
            else:
                table.add_row(key, str(v))

    walk("", data)
    table.show(console)


from services.cli import stack as _stack  # noqa: E402

app.command()(_stack.up)
app.command()(_stack.down)

from services.cli import market as _market  # noqa: E402

app.command()(_market.sim)
app.command()(_market.market)

from services.cli import agents as _agents  # noqa: E402

app.command()(_agents.agents)
app.command()(_agents.agent)

from services.cli import risk as _risk  # noqa: E402

app.command()(_risk.halt)
app.command()(_risk.reduce)
app.command()(_risk.resume)
app.command()(_risk.recon)


from services.cli import orders as _orders  # noqa: E402

app.command()(_orders.orders)
app.command()(_orders.positions)

from services.cli.ledger import ledger_app  # noqa: E402

app.add_typer(ledger_app, name="ledger")

from services.cli import backtest as _backtest  # noqa: E402

app.command()(_backtest.backtest)
app.command()(_backtest.sweep)


from services.cli import kis_sim as _kis_sim  # noqa: E402

app.add_typer(_kis_sim.app, name="kis-sim")

from services.cli.kis import kis_app  # noqa: E402

app.add_typer(kis_app, name="kis")

from services.cli import ops as _ops  # noqa: E402

app.command()(_ops.ps)
app.command()(_ops.spawn)
app.command()(_ops.kill)
app.command()(_ops.restart)
app.command()(_ops.reload)
app.command()(_ops.logs)
app.command()(_ops.profile)
config_app.command("check")(_ops.config_check)


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
