"""``trader backtest`` and ``trader sweep``: run strategies over simulated or recorded bars, in one process.

``trader backtest --strategy sma_cross --codes 005930 --days 20 --seed 7 --params fast=10 --params slow=30 --report out/``
back-tests one agent; ``trader backtest --roster configs/agents.toml --days 20 --report out/``
back-tests every enabled agent of the roster together. ``--data PATH`` reads a
recorded bar folder (``<dir>/<YYYYMMDD>/<code>.parquet``) or a CSV/parquet file
instead of simulating. ``--fill close|next_open|intrabar`` states the fill
assumption (default ``close``; the report says which was used).

``trader sweep --strategy sma_cross --codes 005930 --days 60 --grid fast=5,10,20 --grid slow=30,60 --metric sharpe``
runs the grid across processes and prints the results best first;
``--walk-forward 0.7`` picks the best set on the first 70% of the days and
shows what it did on the rest.

Exit codes: 0 done; 1 the run stopped on a strategy error (the report still
holds what it had); 2 bad input (data, codes, params, roster, options).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.config import PROJECT_ROOT, ConfigError, StackSettings, load_stack
from core.instruments import Instrument, InstrumentError, load_instruments

console = Console()
err = Console(stderr=True)

EXIT_OK, EXIT_RUN_STOPPED, EXIT_BAD_INPUT = 0, 1, 2


def _bad(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(EXIT_BAD_INPUT)


def _path(p: str) -> Path:
    path = Path(p)
    return path if path.is_absolute() else PROJECT_ROOT / path


def _setup() -> tuple[StackSettings, dict[str, Instrument]]:
    try:
        settings = load_stack()
        master = load_instruments(_path(settings.market.instruments_file))
    except (ConfigError, InstrumentError, OSError) as exc:
        raise _bad(str(exc)) from None
    return settings, master


def parse_value(text: str) -> Any:
    """A command-line value as int, float, bool or text (``10`` -> 10, ``0.5`` -> 0.5, ``true`` -> True)."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["fast=10", "slow=30"]`` -> ``{"fast": 10, "slow": 30}``; raises typer.Exit(2) on a malformed item."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise _bad(f"--params expects key=value, not {item!r}")
        out[key.strip()] = parse_value(value)
    return out


def _load_data(master: dict[str, Instrument], codes: list[str], days: int, seed: int, data: Path | None) -> Any:
    from backtest.data import DataError, from_simulator, load

    try:
        if data is not None:
            return load(data, master, codes or None)
        return from_simulator(codes, days, seed, master)
    except DataError as exc:
        raise _bad(str(exc)) from None


def _codes(codes: str) -> list[str]:
    return [c.strip() for c in codes.split(",") if c.strip()]


def backtest(
    strategy: str = typer.Option("", "--strategy", help="Strategy name (see configs/agents.toml for the list)."),
    codes: str = typer.Option("", "--codes", help="Comma-separated codes the strategy trades."),
    days: int = typer.Option(20, "--days", min=1, help="Trading days to simulate (ignored with --data)."),
    seed: int = typer.Option(7, "--seed", help="Simulator seed: the same seed gives the same bars and fills."),
    data: Path | None = typer.Option(None, "--data", help="Recorded bar folder or a CSV/parquet file instead of the simulator."),
    params: list[str] = typer.Option([], "--params", "-p", help="Strategy parameter key=value (repeatable)."),
    fill: str = typer.Option("close", "--fill", help="Fill model: close (default), next_open or intrabar."),
    report: Path | None = typer.Option(None, "--report", help="Folder for report.html, trades.csv, equity.csv, metrics.json."),
    roster: Path | None = typer.Option(None, "--roster", help="Back-test every enabled agent of a roster file."),
    cash: int = typer.Option(100_000_000, "--cash", min=0, help="Cash of a single agent in won."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Back-test a strategy (or a whole roster) on simulated or recorded bars."""
    from agents.settings import check_roster
    from backtest.engine import AgentSpec, BacktestError, run_backtest
    from backtest.fills import FillModel
    from backtest.metrics import all_metrics
    from backtest.report import write_report
    from core.risk import load_risk_limits

    settings, master = _setup()
    if fill not in {m.value for m in FillModel}:
        raise _bad(f"--fill must be one of {', '.join(m.value for m in FillModel)}, not {fill!r}")
    if roster is not None:
        checked = check_roster(roster, master, settings)
        if not checked.ok:
            raise _bad("roster problems:\n" + "\n".join(f"  {p}" for p in checked.problems))
        specs = [AgentSpec.from_settings(a) for a in checked.enabled_agents]
        if not specs:
            raise _bad(f"{roster}: no enabled agent")
        wanted = sorted({c for s in specs for c in s.codes})
    else:
        if not strategy:
            raise _bad("give --strategy NAME (and --codes), or --roster FILE")
        wanted = _codes(codes)
        if not wanted:
            raise _bad("--codes names no code")
        specs = [AgentSpec(strategy.replace("_", "-"), strategy, tuple(wanted), parse_params(params), cash)]
    market_data = _load_data(master, wanted, days, seed, data)
    risk_path = _path(settings.risk_file)
    try:
        limits = load_risk_limits(risk_path) if risk_path.exists() else None
    except ConfigError as exc:
        raise _bad(str(exc)) from None
    try:
        result = run_backtest(market_data, specs, fill_model=fill, risk_limits=limits)
    except BacktestError as exc:
        raise _bad(str(exc)) from None
    metrics = all_metrics(result)
    if report is not None:
        paths = write_report(result, report)
        err.print(f"report: {paths['report.html']}")
    if as_json:
        print(json.dumps({"fill_model": result.fill_model.value, "failure": str(result.failure) if result.failure else None,
                          "metrics": {k: m.as_dict() for k, m in metrics.items()}}, indent=2))
    else:
        keys = ("total_return", "annual_return", "sharpe", "max_drawdown", "trades", "win_rate", "fees_won", "taxes_won", "exposure")
        table = Table(title=f"back-test: {result.source}, fill model {result.fill_model.value}")
        table.add_column("agent")
        for key in keys:
            table.add_column(key, justify="right")
        for name, m in metrics.items():
            table.add_row(name, *(_cell(getattr(m, key)) for key in keys))
        console.print(table)
    if result.failure is not None:
        err.print(f"[bold red]stopped:[/] {result.failure}")
        raise typer.Exit(EXIT_RUN_STOPPED)


def _cell(v: Any) -> str:
    if v is None:
        return "n/a"
    return f"{v:,}" if isinstance(v, int) else f"{v:.4f}"


def sweep(
    strategy: str = typer.Option(..., "--strategy", help="Strategy name."),
    codes: str = typer.Option(..., "--codes", help="Comma-separated codes the strategy trades."),
    days: int = typer.Option(20, "--days", min=1, help="Trading days to simulate (ignored with --data)."),
    seed: int = typer.Option(7, "--seed", help="Simulator seed."),
    data: Path | None = typer.Option(None, "--data", help="Recorded bar folder or a CSV/parquet file."),
    params: list[str] = typer.Option([], "--params", "-p", help="Fixed parameter key=value (repeatable)."),
    grid: list[str] = typer.Option(..., "--grid", "-g", help="A swept parameter: key=v1,v2,... (repeatable)."),
    metric: str = typer.Option("sharpe", "--metric", help="Metric to sort by (e.g. sharpe, total_return, max_drawdown)."),
    workers: int = typer.Option(2, "--workers", min=1, help="Processes to run in parallel."),
    fill: str = typer.Option("close", "--fill", help="Fill model: close, next_open or intrabar."),
    walk_forward: float = typer.Option(0.0, "--walk-forward", help="In-sample share of the days (e.g. 0.7) for a walk-forward check; 0 = off."),
    top: int = typer.Option(20, "--top", min=1, help="Rows to print."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
) -> None:
    """Run a strategy over a grid of params across processes; results sorted by a metric."""
    from backtest.engine import AgentSpec, BacktestError
    from backtest.fills import FillModel
    from backtest.sweep import check_metric, expand_grid, run_sweep
    from backtest.sweep import walk_forward as run_walk_forward

    _, master = _setup()
    if fill not in {m.value for m in FillModel}:
        raise _bad(f"--fill must be one of {', '.join(m.value for m in FillModel)}, not {fill!r}")
    try:
        check_metric(metric)
    except BacktestError as exc:
        raise _bad(str(exc)) from None
    axes: dict[str, list[Any]] = {}
    for item in grid:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise _bad(f"--grid expects key=v1,v2,..., not {item!r}")
        axes[key.strip()] = [parse_value(v) for v in values.split(",") if v.strip()]
    wanted = _codes(codes)
    market_data = _load_data(master, wanted, days, seed, data)
    base = AgentSpec(strategy.replace("_", "-"), strategy, tuple(wanted), parse_params(params))
    total = len(expand_grid(axes)) * (2 if walk_forward else 1)
    with Progress(TextColumn("[bold]sweep[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err) as progress:
        task = progress.add_task("", total=total)
        done = [0]

        def tick(_: int, __: int) -> None:
            done[0] += 1
            progress.update(task, completed=done[0])

        try:
            if walk_forward:
                wf = run_walk_forward(market_data, base, axes, in_sample_share=walk_forward, metric=metric,
                                      workers=workers, fill_model=fill, progress=tick)
                rows = wf.in_sample
            else:
                wf = None
                rows = run_sweep(market_data, base, axes, metric=metric, workers=workers, fill_model=fill, progress=tick)
        except BacktestError as exc:
            raise _bad(str(exc)) from None
    if as_json:
        out: dict[str, Any] = {"metric": metric, "fill_model": fill,
                               "rows": [{"params": r.params, "metrics": r.metrics.as_dict() if r.metrics else None, "error": r.error} for r in rows]}
        if wf is not None:
            out["walk_forward"] = {"best_params": wf.best_params, "in_sample": wf.best_in_sample,
                                   "out_of_sample": wf.best_out_of_sample, "out_of_sample_rank": wf.out_of_sample_rank}
        print(json.dumps(out, indent=2))
    else:
        title = f"sweep of {strategy} on {market_data.source}, sorted by {metric}" + (" (in-sample)" if wf else "")
        table = Table(title=title)
        for col in ("params", metric, "total_return", "max_drawdown", "trades", "error"):
            table.add_column(col)
        for r in rows[:top]:
            m = r.metrics
            table.add_row(json.dumps(r.params), _cell(r.value(metric)), _cell(m.total_return if m else None),
                          _cell(m.max_drawdown if m else None), _cell(m.trades if m else None), r.error)
        console.print(table)
        if wf is not None:
            console.print(f"walk-forward: best in-sample {json.dumps(wf.best_params)} {metric} {_cell(wf.best_in_sample)}; "
                          f"out of sample {_cell(wf.best_out_of_sample)} (rank {wf.out_of_sample_rank} of {len(wf.out_of_sample)})")
    if rows and all(r.metrics is None for r in rows):
        err.print(f"[bold red]error:[/] no parameter set ran; first problem: {rows[0].error}")
        raise typer.Exit(EXIT_BAD_INPUT)
