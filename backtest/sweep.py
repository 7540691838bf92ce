"""Parameter sweeps and rolling walk-forward: one strategy over a grid of params, across processes.

``run_sweep`` runs one back-test per parameter set in a ``ProcessPoolExecutor``
(spawn context: no state inherited across fork); each worker receives the
market data once, at start-up, and then only the params. With ``cluster`` (a
Ray address) the back-tests run as tasks on that Ray cluster instead
(``backtest.cluster``); the rows are the same either way. Results come back as
``SweepRow``s sorted by the chosen metric (best first), ties in the params'
order; a parameter set the strategy refuses as a whole (``fast`` not below
``slow``), or a run that stops on a strategy error, is reported in its row's
``error`` and sorted last. A parameter the strategy does not have, or a value
it refuses on its own, stops the sweep before any back-test starts
(``check_sets``).

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from agents.strategy import UnknownStrategy, get_strategy
from backtest.data import MarketData
from backtest.engine import AgentResult, AgentSpec, BacktestError, Trade, run_backtest
from backtest.fills import DEFAULT_FILL_MODEL, FillModel
from backtest.metrics import Metrics, agent_metrics, compute
from core.costs import DEFAULT_COSTS, CostModel
from core.matching import MatchingParams

DEFAULT_MATCHING = MatchingParams()
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


def check_sets(base: AgentSpec, sets: Sequence[Mapping[str, Any]]) -> None:
    """Raise BacktestError naming the first parameter the strategy does not have or whose value it refuses.

    Every set is laid over ``base``'s params and validated by the strategy's
    params model; a refusal of the set as a whole (a model validator: no field
    named) is left to the set's back-test, which reports it in its row.
    """
    try:
        cls = get_strategy(base.strategy)
    except UnknownStrategy as exc:
        raise BacktestError("sweep", "strategy", str(exc.args[0])) from None
    for params in sets:
        _, problems = cls.check_params({**base.params, **params})
        named = [(key, reason) for key, reason in problems if key != "-"]
        if named:
            key, reason = named[0]
            value = f" = {params[key]!r}" if key in params else ""
            raise BacktestError("sweep", f"params.{key}", f"{key}{value}: {reason} (set {dict(params)})")


def sort_rows(rows: list[SweepRow], metric: str) -> list[SweepRow]:
    """Best first by ``metric``, ties by the params' text (the same order however the rows arrived); rows that did not run last."""
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0

    def key(row: SweepRow) -> tuple[int, float, str]:
        v = row.value(metric)
        text = repr(sorted(row.params.items()))
        return (1, 0.0, text) if v is None else (0, sign * v, text)

    return sorted(rows, key=key)


@dataclass(frozen=True, slots=True)
class SweepJob:
    """What every back-test of a sweep shares but the data: the agent and the market's switches."""

    base: AgentSpec
    fill_model: str = DEFAULT_FILL_MODEL.value
    costs: CostModel = DEFAULT_COSTS
    sessions: bool = True
    matching_params: MatchingParams = DEFAULT_MATCHING

    def run(self, data: MarketData, params: Mapping[str, Any]) -> SweepRow:
        """One back-test with ``params``; any exception becomes the row's ``error`` (a sweep never stops on one set)."""
        try:
            return run_params(data, self.base, params, self.fill_model, costs=self.costs, sessions=self.sessions,
                              matching_params=self.matching_params)
        except Exception as exc:  # noqa: BLE001 - a bug in a strategy or the engine: the set's row says so, the other sets run
            return SweepRow(dict(params), None, f"{type(exc).__name__}: {exc}")


class SetRunner(Protocol):
    """Runs parameter sets on some data and returns their rows in the sets' order."""

    def run(self, data: MarketData, sets: Sequence[Mapping[str, Any]],
            progress: Callable[[int, int], None] | None = None) -> list[SweepRow]: ...


# --- the local pool ----------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(data: MarketData, job: SweepJob) -> None:
    _WORKER.update(data=data, job=job)


def _run_one(params: dict[str, Any]) -> SweepRow:
    return _WORKER["job"].run(_WORKER["data"], params)


class LocalRunner:
    """Parameter sets in this process (one worker) or a spawned process pool that gets each data once."""

    def __init__(self, job: SweepJob, workers: int) -> None:
        self.job, self.workers = job, workers
        self._pool: ProcessPoolExecutor | None = None
        self._pool_data: MarketData | None = None

    def _pool_for(self, data: MarketData) -> ProcessPoolExecutor:
        # the workers hold one data, sent at start-up: new data, new pool
        if self._pool is None or self._pool_data is not data:
            self.close()
            ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=_init_worker,
                                             initargs=(data, self.job))
            self._pool_data = data
        return self._pool

    def run(self, data: MarketData, sets: Sequence[Mapping[str, Any]],
            progress: Callable[[int, int], None] | None = None) -> list[SweepRow]:
        """The rows of ``sets``, in their order."""
        rows: list[SweepRow | None] = [None] * len(sets)
        if self.workers <= 1:
            for k, params in enumerate(sets):
                rows[k] = self.job.run(data, params)
                if progress:
                    progress(k + 1, len(sets))
        else:
            pool = self._pool_for(data)
            futures = {pool.submit(_run_one, dict(params)): k for k, params in enumerate(sets)}
            for n, fut in enumerate(as_completed(futures)):
                rows[futures[fut]] = fut.result()
                if progress:
                    progress(n + 1, len(sets))
        return [r for r in rows if r is not None]

    def close(self) -> None:
        """Stop the pool's processes."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool, self._pool_data = None, None


@contextmanager
def set_runner(job: SweepJob, workers: int = 2, cluster: str | None = None) -> Iterator[SetRunner]:
    """The local pool of ``workers`` processes, or the Ray cluster at ``cluster``; closed (disconnected) on exit."""
    if cluster:
        from backtest.cluster import ClusterRunner

        with ClusterRunner(job, cluster, workers) as remote:
            yield remote
        return
    local = LocalRunner(job, workers)
    try:
        yield local
    finally:
        local.close()


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
               matching_params: MatchingParams = DEFAULT_MATCHING) -> SweepRow:
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
    matching_params: MatchingParams = DEFAULT_MATCHING,
    progress: Callable[[int, int], None] | None = None,
    cluster: str | None = None,
    runner: SetRunner | None = None,
) -> list[SweepRow]:
    """Run every parameter set (a grid or an explicit list) and return the rows sorted by ``metric``.

    The sets run in ``workers`` local processes, or as tasks on the Ray cluster
    at ``cluster``, or on an open ``runner`` (what ``set_runner`` gives).
    """
    check_metric(metric)
    sets = expand_grid(grid) if isinstance(grid, Mapping) else [dict(p) for p in grid]
    check_sets(base, sets)
    if runner is not None:
        return sort_rows(runner.run(data, sets, progress), metric)
    job = sweep_job(base, fill_model, costs, sessions, matching_params)
    with set_runner(job, workers, cluster) as opened:
        return sort_rows(opened.run(data, sets, progress), metric)


def sweep_job(base: AgentSpec, fill_model: FillModel | str = DEFAULT_FILL_MODEL, costs: CostModel = DEFAULT_COSTS,
              sessions: bool = True, matching_params: MatchingParams = DEFAULT_MATCHING) -> SweepJob:
    """The job of a sweep; raises BacktestError on an unknown fill model."""
    try:
        fill = FillModel(fill_model).value
    except ValueError:
        raise BacktestError("fill", "model", f"unknown fill model {fill_model!r}; one of {', '.join(m.value for m in FillModel)}") from None
    return SweepJob(base, fill, costs, sessions, matching_params)


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
    matching_params: MatchingParams = DEFAULT_MATCHING,
    progress: Callable[[int, int], None] | None = None,
    cluster: str | None = None,
) -> WalkForward:
    """Fit the grid on each of ``windows`` rolling blocks of days, test the winner on the next, join the tests.

    The grids run in ``workers`` local processes or on the Ray cluster at
    ``cluster`` (one connection for all blocks); the winners' test runs, one
    per window, run here.
    """
    check_metric(metric)
    days = data.days
    blocks = walk_forward_blocks(len(days), windows)
    check_sets(base, expand_grid(grid))
    job = sweep_job(base, fill_model, costs, sessions, matching_params)
    with set_runner(job, workers, cluster) as runner:
        sweeps = [run_sweep(data.select_days(lo, hi), base, grid, metric=metric, progress=progress, runner=runner)
                  for lo, hi in blocks]
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
    return list(itertools.pairwise(cuts))


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
