"""``trader backtest`` and ``trader sweep``: run strategies over simulated or recorded bars, in one process.

``trader backtest --strategy sma_cross --codes 005930 --days 20 --seed 7 --params fast=10 --params slow=30 --report out/``
back-tests one agent; ``trader backtest --roster configs/agents.toml --days 20 --report out/``
back-tests every enabled agent of the roster together; ``--save`` writes the report to
``<run_dir>/backtests/<YYYYMMDD-HHMMSS>-<strategy or roster>/`` as well, where
the dashboard's Reports page lists it. ``--data PATH`` reads a
recorded bar folder (``<dir>/<YYYYMMDD>/<code>.parquet``) or a CSV/parquet file
instead of simulating (``--world null`` simulates the null world: the same
volatility and volume, none of the market's effects). ``--fill
close|next_open|intrabar`` states the fill assumption (default ``next_open``;
the report says which was used, and warns that ``close`` is optimistic).
``--costs none`` charges no commission and no sell tax; ``--sessions none``
drops the session rules (every bar continuous, no closing auction, no cancel
at closing); ``--book off`` trades at the last print with no spread or depth
of an order book: the three together are what back-testers without them
assume.

``trader sweep --strategy sma_cross --codes 005930 --days 60 --grid fast=5,10,20 --grid slow=30,60 --metric sharpe``
runs the grid across processes and prints the results best first;
``--walk-forward 4`` is a rolling walk-forward of four windows: the days cut
into five blocks, the grid fitted on each block and its best set tested on the
next, and the four out-of-sample runs joined into one record. ``--cluster
HOST:PORT`` (or ``TRADER_CLUSTER``) runs the back-tests on a Ray cluster
instead of local processes, with the same results; ``--search optuna --trials
50 --study out/study.db`` lets Optuna choose 50 sets from the grid's axes (or
``key=lo..hi`` ranges) instead of running them all, resumably (see
docs/scaling.md).

Exit codes: 0 done; 1 the run stopped on a strategy error (the report still
holds what it had); 2 bad input (data, codes, params, roster, options).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from backtest.fills import DEFAULT_FILL_MODEL, FillModel
from core import krx
from core.config import PROJECT_ROOT, ConfigError, StackSettings, load_stack
from core.instruments import Instrument, InstrumentError, load_instruments
from services.cli.tables import Col, FitTable, wide_option

console = Console()
err = Console(stderr=True)

EXIT_OK, EXIT_RUN_STOPPED, EXIT_BAD_INPUT = 0, 1, 2
SAVED_REPORTS_DIR = "backtests"  # <run_dir>/backtests/<name>/: where --save writes, what the dashboard's Reports page lists


def _bad(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)  # a path in it stays whole for copying
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


def _load_data(master: dict[str, Instrument], codes: list[str], days: int, seed: int, data: Path | None,
               world: str = "sim") -> Any:
    from backtest.data import DataError, from_simulator, load

    try:
        if data is not None:
            return load(data, master, codes or None)
        return from_simulator(codes, days, seed, master, world=world)
    except DataError as exc:
        raise _bad(str(exc)) from None


COSTS = ("paper", "none")
SESSIONS = ("krx", "none")
BOOK = ("on", "off")
FILL_HELP = f"Fill model: {', '.join(m.value for m in FillModel)} (default {DEFAULT_FILL_MODEL.value})."


def _switches(fill: str, costs: str, sessions: str, book: str) -> tuple[Any, bool, Any]:
    """The cost model, session-rules switch and matching params the options name; raises typer.Exit(2) on a bad one."""
    from core.costs import DEFAULT_COSTS, CostModel
    from core.matching import MatchingParams

    if fill not in {m.value for m in FillModel}:
        raise _bad(f"--fill must be one of {', '.join(m.value for m in FillModel)}, not {fill!r}")
    for option, value, allowed in (("--costs", costs, COSTS), ("--sessions", sessions, SESSIONS), ("--book", book, BOOK)):
        if value not in allowed:
            raise _bad(f"{option} must be one of {', '.join(allowed)}, not {value!r}")
    return (DEFAULT_COSTS if costs == "paper" else CostModel.none()), sessions == "krx", MatchingParams(book=book == "on")


def _with_announcements(market_data: Any, path: Path, master: dict[str, Instrument]) -> Any:
    """The data with a user's announcements; each refused row is named on stderr, a file that cannot be read exits 2."""
    from core.fundamentals import FundamentalsError, load_announcements

    try:
        rows, refused = load_announcements(path, master)
    except FundamentalsError as exc:
        raise _bad(str(exc)) from None
    for r in refused:
        err.print(f"[bold yellow]skipped:[/] {r}", soft_wrap=True)
    kept = market_data.with_announcements(rows)
    err.print(f"fundamentals: {len(kept.fundamentals)} announcement(s) of the back-test's codes from {path}"
              f"{f', {len(refused)} row(s) skipped' if refused else ''}", soft_wrap=True)
    return kept


def _codes(codes: str) -> list[str]:
    return [c.strip() for c in codes.split(",") if c.strip()]


def backtest(
    strategy: str = typer.Option("", "--strategy", help="Strategy name (see configs/agents.toml for the list)."),
    codes: str = typer.Option("", "--codes", help="Comma-separated codes the strategy trades."),
    days: int = typer.Option(20, "--days", min=1, help="Trading days to simulate (ignored with --data)."),
    seed: int = typer.Option(7, "--seed", help="Simulator seed: the same seed gives the same bars and fills."),
    data: Path | None = typer.Option(None, "--data", help="Recorded bar folder or a CSV/parquet file instead of the simulator."),
    params: list[str] = typer.Option([], "--params", "-p", help="Strategy parameter key=value (repeatable)."),
    fill: str = typer.Option(DEFAULT_FILL_MODEL.value, "--fill", help=FILL_HELP),
    costs: str = typer.Option("paper", "--costs", help="Costs: paper (the paper broker's commission and the dated sell tax) or none."),
    sessions: str = typer.Option("krx", "--sessions", help="Session rules: krx (auctions, closing cancel) or none (every bar continuous)."),
    book: str = typer.Option("on", "--book", help="Order book: on (spread, depth, impact) or off (the touch at the last print)."),
    world: str = typer.Option("sim", "--world", help="Simulated world: sim (with the market's effects) or null (without them)."),
    fundamentals: Path | None = typer.Option(None, "--fundamentals", help="CSV of earnings announcements (code, date, eps, bps, dps) the agents hear instead of the data's own; bad rows are listed and skipped."),
    report: Path | None = typer.Option(None, "--report", help="Folder for report.html, trades.csv, equity.csv, metrics.json."),
    save: bool = typer.Option(False, "--save", help="Write the report to <run_dir>/backtests/<time>-<strategy>/ too (the dashboard's Reports page lists it)."),
    roster: Path | None = typer.Option(None, "--roster", help="Back-test every enabled agent of a roster file."),
    cash: int = typer.Option(100_000_000, "--cash", min=0, help="Cash of a single agent in won."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
    wide: bool = wide_option(),
) -> None:
    """Back-test a strategy (or a whole roster) on simulated or recorded bars.

    Metrics the terminal has no room for are named under the table (agent,
    total_return, sharpe, max_drawdown and trades always show); --wide shows them all.

    Examples: `trader backtest --strategy sma_cross --codes 005930 --days 20 -p fast=5 -p slow=20`,
    `trader backtest --roster configs/agents.toml --report out/`
    """
    from agents.settings import check_roster
    from backtest.engine import AgentSpec, BacktestError, run_backtest
    from backtest.metrics import all_metrics
    from backtest.report import warnings, write_report
    from core.risk import load_risk_limits

    settings, master = _setup()
    cost_model, session_rules, matching = _switches(fill, costs, sessions, book)
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
    market_data = _load_data(master, wanted, days, seed, data, world)
    if fundamentals is not None:
        market_data = _with_announcements(market_data, fundamentals, master)
    risk_path = _path(settings.risk_file)
    try:
        limits = load_risk_limits(risk_path) if risk_path.exists() else None
    except ConfigError as exc:
        raise _bad(str(exc)) from None
    try:
        result = run_backtest(market_data, specs, fill_model=fill, risk_limits=limits, costs=cost_model, sessions=session_rules,
                              matching_params=matching)
    except BacktestError as exc:
        raise _bad(str(exc)) from None
    metrics = all_metrics(result)
    for line in warnings(result):
        err.print(f"[bold yellow]warning:[/] {line}")
    if report is not None:
        paths = write_report(result, report)
        err.print(f"report: {paths['report.html']}")
    if save:
        paths = write_report(result, _saved_report_folder(settings, roster.stem if roster is not None else strategy))
        err.print(f"report: {paths['report.html']}")
    if as_json:
        print(json.dumps({"fill_model": result.fill_model.value, "costs": result.costs.describe, "sessions": result.sessions,
                          "warnings": warnings(result), "failure": str(result.failure) if result.failure else None,
                          "metrics": {k: m.as_dict() for k, m in metrics.items()}}, indent=2))
    else:
        keys = ("total_return", "sharpe", "calmar", "max_drawdown", "max_drawdown_days", "trades", "win_rate",
                "expectancy_won", "cost_share", "exposure")
        essential = ("total_return", "sharpe", "max_drawdown", "trades")
        table = FitTable(f"back-test: {result.source}, fill model {result.fill_model.value}",
                         (Col("agent", essential=True), *(Col(k, essential=k in essential, numeric=True) for k in keys)))
        for name, m in metrics.items():
            table.add_row(name, *(_cell(getattr(m, key)) for key in keys))
        table.show(console, wide)
    if result.failure is not None:
        err.print(f"[bold red]stopped:[/] {result.failure}")
        raise typer.Exit(EXIT_RUN_STOPPED)


def _saved_report_folder(settings: StackSettings, what: str) -> Path:
    """A new folder ``<run_dir>/backtests/<YYYYMMDD-HHMMSS>-<what>`` (``-2``, ``-3``... when taken)."""
    stamp = dt.datetime.now(krx.KST).strftime("%Y%m%d-%H%M%S")
    base = settings.run_path / SAVED_REPORTS_DIR / f"{stamp}-{re.sub(r'[^A-Za-z0-9._-]+', '-', what).strip('-.') or 'backtest'}"
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


def _cell(v: Any) -> str:
    if v is None:
        return "n/a"
    return f"{v:,}" if isinstance(v, int) else f"{v:.4f}"


CLUSTER_HELP = ("Run the back-tests on the Ray cluster at HOST:PORT (the head's GCS port); 'auto' = the cluster "
                "`ray start` began on this machine, 'local' = a throw-away Ray in this process. Unset: local processes. "
                "Results are the same either way. Env: TRADER_CLUSTER.")


def _axis(item: str) -> tuple[str, Any]:
    """``key=v1,v2,...`` -> (key, [v1, v2, ...]); ``key=lo..hi`` -> (key, Range(lo, hi)); raises typer.Exit(2)."""
    from backtest.search import Range

    key, sep, values = item.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise _bad(f"--grid expects key=v1,v2,... or key=lo..hi, not {item!r}")
    lo, dots, hi = values.partition("..")
    if dots and "," not in values:
        ends = parse_value(lo), parse_value(hi)
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in ends):
            raise _bad(f"--grid {key.strip()}: a range lo..hi takes two numbers, not {values!r}")
        return key.strip(), Range(*ends)
    return key.strip(), [parse_value(v) for v in values.split(",") if v.strip()]


def sweep(
    strategy: str = typer.Option(..., "--strategy", help="Strategy name."),
    codes: str = typer.Option(..., "--codes", help="Comma-separated codes the strategy trades."),
    days: int = typer.Option(20, "--days", min=1, help="Trading days to simulate (ignored with --data)."),
    seed: int = typer.Option(7, "--seed", help="Simulator seed."),
    data: Path | None = typer.Option(None, "--data", help="Recorded bar folder or a CSV/parquet file."),
    params: list[str] = typer.Option([], "--params", "-p", help="Fixed parameter key=value (repeatable)."),
    grid: list[str] = typer.Option(..., "--grid", "-g",
                                   help="A swept parameter: key=v1,v2,... (repeatable); key=lo..hi with --search optuna."),
    metric: str = typer.Option("sharpe", "--metric", help="Metric to sort by (e.g. sharpe, total_return, max_drawdown)."),
    workers: int = typer.Option(2, "--workers", min=1, help="Processes to run in parallel (with --search: trials per batch)."),
    cluster: str | None = typer.Option(None, "--cluster", envvar="TRADER_CLUSTER", help=CLUSTER_HELP),
    search: str = typer.Option("", "--search", help="optuna: let Optuna's seeded TPE sampler choose --trials sets from the axes."),
    trials: int = typer.Option(20, "--trials", min=1, help="With --search: finished trials the study should hold."),
    study: Path | None = typer.Option(None, "--study", help="With --search: the SQLite file of the study (resumed when it exists)."),
    search_seed: int = typer.Option(0, "--search-seed", help="With --search: the sampler's seed."),
    fill: str = typer.Option(DEFAULT_FILL_MODEL.value, "--fill", help=FILL_HELP),
    costs: str = typer.Option("paper", "--costs", help="Costs: paper or none."),
    sessions: str = typer.Option("krx", "--sessions", help="Session rules: krx or none."),
    book: str = typer.Option("on", "--book", help="Order book: on or off."),
    world: str = typer.Option("sim", "--world", help="Simulated world: sim or null."),
    walk_forward: int = typer.Option(0, "--walk-forward", min=0,
                                     help="Rolling walk-forward windows (fit on one block of days, test on the next); 0 = off."),
    top: int = typer.Option(20, "--top", min=1, help="Rows to print."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
    wide: bool = wide_option(),
) -> None:
    """Run a strategy over a grid of params across processes; results sorted by a metric, best first.

    Every --grid key=v1,v2,... is one axis; every combination runs (in --workers
    processes, or on a Ray cluster with --cluster) with the fixed --params. A
    parameter the strategy does not have, or a value it refuses, is named before
    anything runs. --walk-forward N fits the grid on one block of days and tests
    the winner on the next, N times. --search optuna --trials N --study FILE runs
    N sets chosen by Optuna instead of the whole grid, kept in FILE: run again,
    it resumes. Columns the terminal has no room for are named under the table;
    --wide shows them all. Exit 2 on bad input, an unreachable cluster, or when
    no parameter set ran.

    Examples: `trader sweep --strategy sma_cross --codes 005930 --days 60 -g fast=5,10 -g slow=30,60`,
    `trader sweep --strategy sma_cross --codes 005930 -g fast=5,10 -g slow=30 --walk-forward 4 --json`,
    `trader sweep --strategy sma_cross --codes 005930 -g fast=2..20 -g slow=30,60 --search optuna --trials 40 --study s.db`,
    `trader sweep --strategy sma_cross --codes 005930 -g fast=5,10 -g slow=30,60 --cluster 10.0.0.5:6379`
    """
    from backtest.engine import AgentSpec, BacktestError
    from backtest.search import SEARCHES, Range, check_space
    from backtest.sweep import check_metric, check_sets, expand_grid

    _, master = _setup()
    cost_model, session_rules, matching = _switches(fill, costs, sessions, book)
    try:
        check_metric(metric)
    except BacktestError as exc:
        raise _bad(str(exc)) from None
    axes = dict(_axis(item) for item in grid)
    if search and search not in SEARCHES:
        raise _bad(f"--search must be one of {', '.join(SEARCHES)}, not {search!r}")
    if search and study is None:
        raise _bad("--search optuna needs --study FILE (the SQLite file that keeps the trials)")
    if search and walk_forward:
        raise _bad("--search and --walk-forward do not go together")
    ranged = [k for k, a in axes.items() if isinstance(a, Range)]
    if ranged and not search:
        raise _bad(f"--grid {ranged[0]}: a range lo..hi needs --search optuna (a grid lists its values)")
    wanted = _codes(codes)
    market_data = _load_data(master, wanted, days, seed, data, world)
    base = AgentSpec(strategy.replace("_", "-"), strategy, tuple(wanted), parse_params(params))
    try:  # a parameter the strategy refuses is named before anything starts
        check_space(base, axes) if search else check_sets(base, expand_grid(axes))
    except BacktestError as exc:
        raise _bad(str(exc)) from None
    run = {"metric": metric, "workers": workers, "fill_model": fill, "costs": cost_model, "sessions": session_rules,
           "matching_params": matching, "cluster": cluster or None}
    with Progress(TextColumn("[bold]sweep[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=err) as progress:
        task = progress.add_task("", total=None)
        rows, wf, found = _run_sweep(market_data, base, axes, run, search, trials, study, search_seed, walk_forward,
                                     progress, task, expand_grid)
    if found is not None:
        err.print(f"study {found.study_name} in {study}: {found.before} trial(s) were done, {found.ran} run now", soft_wrap=True)
    if as_json:
        out: dict[str, Any] = {"metric": metric, "fill_model": fill,
                               "rows": [{"params": r.params, "metrics": r.metrics.as_dict() if r.metrics else None, "error": r.error} for r in rows]}
        if found is not None:
            out["study"] = {"name": found.study_name, "file": str(study), "trials": len(rows), "ran": found.ran}
        if wf is not None:
            out["walk_forward"] = {
                "windows": [{"in_sample_days": [str(d) for d in w.in_sample_days],
                             "out_of_sample_days": [str(d) for d in w.out_of_sample_days],
                             "best_params": w.best_params, "in_sample": w.best_in_sample, "out_of_sample": w.best_out_of_sample,
                             "out_of_sample_rank": w.out_of_sample_rank, "sets": len(w.out_of_sample)} for w in wf.windows],
                "joined": wf.joined.as_dict() if wf.joined else None,
            }
            del out["rows"]
        print(json.dumps(out, indent=2))
    elif wf is not None:
        _print_walk_forward(wf, strategy, market_data.source, wide)
    else:
        what = f"optuna search ({len(rows)} trials)" if found is not None else "sweep"
        title = f"{what} of {strategy} on {market_data.source}, sorted by {metric}"
        table = FitTable(title, (Col("params", essential=True, wrap=True), Col(metric, essential=True, numeric=True),
                                 *(Col(k, essential=k == "trades", numeric=True)
                                   for k in ("total_return", "max_drawdown", "trades") if k != metric),
                                 Col("error", essential=True, wrap=True)))
        for r in rows[:top]:
            m = r.metrics
            table.add_row(json.dumps(r.params), _cell(r.value(metric)),
                          *(_cell(getattr(m, k) if m else None) for k in ("total_return", "max_drawdown", "trades")
                            if k != metric), r.error)
        table.show(console, wide)
    if rows and all(r.metrics is None for r in rows):
        err.print(f"[bold red]error:[/] no parameter set ran; first problem: {rows[0].error}")
        raise typer.Exit(EXIT_BAD_INPUT)


def _run_sweep(market_data: Any, base: Any, axes: dict[str, Any], run: dict[str, Any], search: str, trials: int,
               study: Path | None, search_seed: int, walk_forward: int, progress: Progress, task: Any,
               expand_grid: Any) -> tuple[list[Any], Any, Any]:
    """The sweep, walk-forward or search the options ask for, ticking ``progress``: (rows, walk-forward, search result)."""
    from backtest.cluster import ClusterError
    from backtest.engine import BacktestError
    from backtest.search import run_search
    from backtest.sweep import run_sweep
    from backtest.sweep import walk_forward as run_walk_forward

    done = [0]

    def tick(_: int, __: int) -> None:
        done[0] += 1
        progress.update(task, completed=done[0])

    def absolute(n: int, total: int) -> None:
        progress.update(task, completed=n, total=total)

    try:
        if search:
            assert study is not None
            found = run_search(market_data, base, axes, trials=trials, study_path=study, seed=search_seed, progress=absolute, **run)
            return found.rows, None, found
        sets = len(expand_grid(axes))
        if walk_forward:
            progress.update(task, total=sets * (walk_forward + 1) + walk_forward)
            wf = run_walk_forward(market_data, base, axes, windows=walk_forward, progress=tick, **run)
            return [r for w in wf.windows for r in w.in_sample], wf, None
        progress.update(task, total=sets)
        return run_sweep(market_data, base, axes, progress=tick, **run), None, None
    except (BacktestError, ClusterError) as exc:
        raise _bad(str(exc)) from None


def _print_walk_forward(wf: Any, strategy: str, source: str, wide: bool = False) -> None:
    """One row per window (fit, test, the winner and its figures), then the joined out-of-sample record."""
    metric = wf.metric
    table = FitTable(f"rolling walk-forward of {strategy} on {source}, fitted on {metric}",
                     (Col("window", essential=True, numeric=True), Col("fitted on"), Col("tested on", essential=True),
                      Col("best params", essential=True, wrap=True), Col(f"{metric} in", numeric=True),
                      Col(f"{metric} out", essential=True, numeric=True), Col("rank out")))
    for n, w in enumerate(wf.windows, start=1):
        rank = f"{w.out_of_sample_rank} of {len(w.out_of_sample)}" if w.out_of_sample_rank else "-"
        table.add_row(str(n), f"{w.in_sample_days[0]}..{w.in_sample_days[1]}", f"{w.out_of_sample_days[0]}..{w.out_of_sample_days[1]}",
                      json.dumps(w.best_params) if w.best_params else (w.in_sample[0].error if w.in_sample else "-"),
                      _cell(w.best_in_sample), _cell(w.best_out_of_sample), rank)
    table.show(console, wide)
    j = wf.joined
    if j is None:
        console.print("joined out of sample: no window had a set that ran")
        return
    shown = [(metric, getattr(j, metric))] + [(k, getattr(j, k)) for k in ("total_return", "max_drawdown", "trades", "expectancy_won")
                                              if k != metric]
    console.print(f"joined out of sample ({len(wf.joined_dates)} days): " + ", ".join(f"{k} {_cell(v)}" for k, v in shown))
