"""Parameter sweeps and rolling walk-forward: one strategy over a grid of params, across processes.

``run_sweep`` runs one back-test per parameter set in a ``ProcessPoolExecutor``
(spawn context: no state inherited across fork); each worker receives the
market data once, at start-up, and then only the params. Results come back as
``SweepRow``s sorted by the chosen metric (best first); a parameter set the
strategy refuses, or a run that stops on a strategy error, is reported in its
row's ``error`` and sorted last.

``walk_forward`` shows overfitting honestly, on rolling windows: the days are
cut into ``windows + 1`` consecutive blocks of (nearly) equal length; window
*i* fits the grid on block *i* and tests its best set on block *i + 1*, days
it never saw. Each window reports the winner's in-sample and out-of-sample
figures and the rank it reaches out of sample among all sets (every block's
grid is run once: it is one window's test and the next one's fit). The
out-of-sample runs are then joined into one record: the equity curves end to
end, each run's gains added to what the runs before it had made (every run
starts with the same capital, as if gains were taken out and losses made
good between windows), and all their fills, each run's positions kept apart
(a run starts flat and its strategy warms up again on its own block).
"""

from __future__ import annotations

import datetime as dt
import itertools
import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from backtest.data import MarketData
from backtest.engine import AgentResult, AgentSpec, BacktestError, Trade, run_backtest
from backtest.fills import DEFAULT_FILL_MODEL, FillModel
from backtest.metrics import Metrics, agent_metrics, compute
from core.costs import DEFAULT_COSTS, CostModel
from core.matching import MatchingParams

LOWER_IS_BETTER = frozenset({"max_drawdown", "max_drawdown_days", "volatility", "fees_won", "taxes_won", "cost_share"})


@dataclass(slots=True)
class SweepRow:
    """One parameter set and what it did (or why it could not run)."""

    params: dict[str, Any]
    metrics: Metrics | None = None
    error: str = ""

    def value(self, metric: str) -> float | None:
        """The chosen metric of this row, None if it did not run."""
        if self.metrics is None:
            return None
        v = getattr(self.metrics, metric)
        return None if v is None else float(v)


@dataclass(slots=True)
class WalkForwardWindow:
    """One rolling window: the grid fitted on its in-sample days, the winner tested on the days after."""

    in_sample_days: tuple[dt.date, dt.date]  # first and last day
    out_of_sample_days: tuple[dt.date, dt.date]
    in_sample: list[SweepRow]  # the grid on the in-sample days, best first
    out_of_sample: list[SweepRow]  # the grid on the out-of-sample days, best first
    best_params: dict[str, Any] = field(default_factory=dict)  # empty when no set ran in sample
    best_in_sample: float | None = None
    best_out_of_sample: float | None = None
    out_of_sample_rank: int = 0  # 1 = the in-sample winner was also best out of sample; 0 = not run


@dataclass(slots=True)
class WalkForward:
    """Every window and the out-of-sample runs of their winners joined into one record."""

    metric: str
    windows: list[WalkForwardWindow]
    joined: Metrics | None = None  # the joined out-of-sample record (None when no window had a winner)
    joined_dates: list[dt.date] = field(default_factory=list)
    joined_equity: list[int] = field(default_factory=list)  # won, at each out-of-sample close


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, keys in the given order."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(list(grid[k]) for k in keys))]


def check_metric(metric: str) -> None:
    """Raise BacktestError unless ``metric`` is a field of ``Metrics``."""
    if metric not in Metrics.__dataclass_fields__:
        raise BacktestError("sweep", "metric", f"unknown metric {metric!r}; one of {', '.join(Metrics.__dataclass_fields__)}")


def sort_rows(rows: list[SweepRow], metric: str) -> list[SweepRow]:
    """Best first by ``metric``; rows that did not run last."""
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0

    def key(row: SweepRow) -> tuple[int, float]:
        v = row.value(metric)
        return (1, 0.0) if v is None else (0, sign * v)

    return sorted(rows, key=key)


# --- the worker side -------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(data: MarketData, base: AgentSpec, fill_model: str, costs: CostModel, sessions: bool,
                 matching_params: MatchingParams) -> None:
    _WORKER.update(data=data, base=base, fill_model=fill_model, costs=costs, sessions=sessions, matching_params=matching_params)


def _run_one(params: dict[str, Any]) -> SweepRow:
    data: MarketData = _WORKER["data"]
    base: AgentSpec = _WORKER["base"]
    return run_params(data, base, params, _WORKER["fill_model"], costs=_WORKER["costs"], sessions=_WORKER["sessions"],
                      matching_params=_WORKER["matching_params"])


def _run_agent(data: MarketData, base: AgentSpec, params: Mapping[str, Any], fill_model: FillModel | str,
               costs: CostModel, sessions: bool, matching_params: MatchingParams) -> AgentResult | str:
    """One back-test of ``base`` with ``params`` laid over its own: the agent's result, or why it did not run."""
    merged = {**base.params, **params}
    spec = AgentSpec(base.agent_id, base.strategy, base.codes, merged, base.cash_won, base.start_qty, base.start_avg_price)
    try:
        result = run_backtest(data, [spec], fill_model=fill_model, costs=costs, sessions=sessions, matching_params=matching_params)
    except BacktestError as exc:
        return str(exc)
    if result.failure is not None:
        return str(result.failure)
    return result.agents[spec.agent_id]


def run_params(data: MarketData, base: AgentSpec, params: Mapping[str, Any], fill_model: FillModel | str, *,
               costs: CostModel = DEFAULT_COSTS, sessions: bool = True,
               matching_params: MatchingParams = MatchingParams()) -> SweepRow:
    """One back-test of ``base`` with ``params`` laid over its own; errors become the row's ``error``."""
    got = _run_agent(data, base, params, fill_model, costs, sessions, matching_params)
    if isinstance(got, str):
        return SweepRow(dict(params), None, got)
    return SweepRow(dict(params), agent_metrics(got))


def run_sweep(
    data: MarketData,
    base: AgentSpec,
    grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
    *,
    metric: str = "sharpe",
    workers: int = 2,
    fill_model: FillModel | str = DEFAULT_FILL_MODEL,
    costs: CostModel = DEFAULT_COSTS,
    sessions: bool = True,
    matching_params: MatchingParams = MatchingParams(),
    progress: Callable[[int, int], None] | None = None,
) -> list[SweepRow]:
    """Run every parameter set (a grid or an explicit list) and return the rows sorted by ``metric``."""
    check_metric(metric)
    sets = expand_grid(grid) if isinstance(grid, Mapping) else [dict(p) for p in grid]
    rows: list[SweepRow] = []
    if workers <= 1:
        for k, params in enumerate(sets):
            rows.append(run_params(data, base, params, fill_model, costs=costs, sessions=sessions, matching_params=matching_params))
            if progress:
                progress(k + 1, len(sets))
        return sort_rows(rows, metric)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(data, base, str(FillModel(fill_model)), costs, sessions, matching_params)) as pool:
        futures = [pool.submit(_run_one, params) for params in sets]
        for k, fut in enumerate(as_completed(futures)):
            rows.append(fut.result())
            if progress:
                progress(k + 1, len(sets))
    # as_completed order varies; the sort is made total by the params' text so the table is stable
    rows.sort(key=lambda r: repr(sorted(r.params.items())))
    return sort_rows(rows, metric)


def walk_forward(
    data: MarketData,
    base: AgentSpec,
    grid: Mapping[str, Sequence[Any]],
    *,
    windows: int = 3,
    metric: str = "sharpe",
    workers: int = 2,
    fill_model: FillModel | str = DEFAULT_FILL_MODEL,
    costs: CostModel = DEFAULT_COSTS,
    sessions: bool = True,
    matching_params: MatchingParams = MatchingParams(),
    progress: Callable[[int, int], None] | None = None,
) -> WalkForward:
    """Fit the grid on each of ``windows`` rolling blocks of days, test the winner on the next, join the tests."""
    check_metric(metric)
    days = data.days
    blocks = walk_forward_blocks(len(days), windows)
    sweeps = [run_sweep(data.select_days(lo, hi), base, grid, metric=metric, workers=workers, fill_model=fill_model,
                        costs=costs, sessions=sessions, matching_params=matching_params, progress=progress) for lo, hi in blocks]
    out = WalkForward(metric, [])
    tested: list[AgentResult] = []
    for k in range(windows):
        (ilo, ihi), (olo, ohi) = blocks[k], blocks[k + 1]
        ins, oos = sweeps[k], sweeps[k + 1]
        window = WalkForwardWindow((days[ilo], days[ihi - 1]), (days[olo], days[ohi - 1]), ins, oos)
        out.windows.append(window)
        if not ins or ins[0].metrics is None:
            continue
        window.best_params = ins[0].params
        window.best_in_sample = ins[0].value(metric)
        for rank, row in enumerate(oos, start=1):
            if row.params == window.best_params:
                window.best_out_of_sample = row.value(metric)
                window.out_of_sample_rank = rank if row.metrics is not None else 0
                break
        got = _run_agent(data.select_days(olo, ohi), base, window.best_params, fill_model, costs, sessions, matching_params)
        if not isinstance(got, str):
            tested.append(got)
        if progress:
            progress(0, 0)
    if tested:
        out.joined_dates, out.joined_equity, out.joined = join_out_of_sample(tested)
    return out


def walk_forward_blocks(days: int, windows: int) -> list[tuple[int, int]]:
    """``windows + 1`` consecutive (first, end) day ranges of nearly equal length covering ``days`` days."""
    if windows < 1:
        raise BacktestError("walk-forward", "windows", f"at least one window is needed, not {windows}")
    if days < windows + 1:
        raise BacktestError("walk-forward", "windows", f"{windows} window(s) need at least {windows + 1} days, the data has {days}")
    cuts = [round(days * j / (windows + 1)) for j in range(windows + 2)]
    return list(zip(cuts[:-1], cuts[1:]))


def join_out_of_sample(runs: Sequence[AgentResult]) -> tuple[list[dt.date], list[int], Metrics]:
    """The runs end to end: dates, equity (each run's gains added to the earlier runs') and the metrics of the whole."""
    capital = runs[0].capital_won
    dates: list[dt.date] = []
    equity: list[int] = []
    trades: list[Trade] = []
    carried = 0
    bars = exposed = 0
    for n, run in enumerate(runs):
        dates += [d.date for d in run.days]
        equity += [carried + d.equity_won - run.capital_won + capital for d in run.days]
        if run.days:
            carried += run.days[-1].equity_won - run.capital_won
        # each run starts flat: its fills are kept apart from the other runs' positions
        trades += [t._replace(agent_id=f"{t.agent_id}#{n}") for t in run.trades]
        bars += run.bars_seen
        exposed += run.exposed_bars
    return dates, equity, compute(equity, capital, trades, bars=bars, exposed_bars=exposed)
