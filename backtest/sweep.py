"""Parameter sweeps and walk-forward splits: one strategy over a grid of params, across processes.

``run_sweep`` runs one back-test per parameter set in a ``ProcessPoolExecutor``
(spawn context: no state inherited across fork); each worker receives the
market data once, at start-up, and then only the params. Results come back as
``SweepRow``s sorted by the chosen metric (best first); a parameter set the
strategy refuses, or a run that stops on a strategy error, is reported in its
row's ``error`` and sorted last.

``walk_forward`` shows overfitting honestly: the grid is run on the in-sample
days, the best set there is then run on the out-of-sample days it never saw,
and both figures are reported side by side (with the rank the in-sample
winner reaches out of sample among all sets).
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from backtest.data import MarketData
from backtest.engine import AgentSpec, BacktestError, run_backtest
from backtest.fills import DEFAULT_FILL_MODEL, FillModel
from backtest.metrics import Metrics, agent_metrics

LOWER_IS_BETTER = frozenset({"max_drawdown", "max_drawdown_days", "volatility", "fees_won", "taxes_won"})


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
class WalkForward:
    """In-sample winner and its out-of-sample figures."""

    metric: str
    in_sample: list[SweepRow]
    out_of_sample: list[SweepRow]
    best_params: dict[str, Any] = field(default_factory=dict)
    best_in_sample: float | None = None
    best_out_of_sample: float | None = None
    out_of_sample_rank: int = 0  # 1 = the in-sample winner was also best out of sample


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


def _init_worker(data: MarketData, base: AgentSpec, fill_model: str) -> None:
    _WORKER.update(data=data, base=base, fill_model=fill_model)


def _run_one(params: dict[str, Any]) -> SweepRow:
    data: MarketData = _WORKER["data"]
    base: AgentSpec = _WORKER["base"]
    return run_params(data, base, params, _WORKER["fill_model"])


def run_params(data: MarketData, base: AgentSpec, params: Mapping[str, Any], fill_model: FillModel | str) -> SweepRow:
    """One back-test of ``base`` with ``params`` laid over its own; errors become the row's ``error``."""
    merged = {**base.params, **params}
    spec = AgentSpec(base.agent_id, base.strategy, base.codes, merged, base.cash_won, base.start_qty, base.start_avg_price)
    try:
        result = run_backtest(data, [spec], fill_model=fill_model)
    except BacktestError as exc:
        return SweepRow(dict(params), None, str(exc))
    if result.failure is not None:
        return SweepRow(dict(params), None, str(result.failure))
    return SweepRow(dict(params), agent_metrics(result.agents[spec.agent_id]))


def run_sweep(
    data: MarketData,
    base: AgentSpec,
    grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
    *,
    metric: str = "sharpe",
    workers: int = 2,
    fill_model: FillModel | str = DEFAULT_FILL_MODEL,
    progress: Callable[[int, int], None] | None = None,
) -> list[SweepRow]:
    """Run every parameter set (a grid or an explicit list) and return the rows sorted by ``metric``."""
    check_metric(metric)
    sets = expand_grid(grid) if isinstance(grid, Mapping) else [dict(p) for p in grid]
    rows: list[SweepRow] = []
    if workers <= 1:
        for k, params in enumerate(sets):
            rows.append(run_params(data, base, params, fill_model))
            if progress:
                progress(k + 1, len(sets))
        return sort_rows(rows, metric)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(data, base, str(FillModel(fill_model)))) as pool:
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
    in_sample_share: float = 0.7,
    metric: str = "sharpe",
    workers: int = 2,
    fill_model: FillModel | str = DEFAULT_FILL_MODEL,
    progress: Callable[[int, int], None] | None = None,
) -> WalkForward:
    """Pick the best set on the first ``in_sample_share`` of the days, then test it on the rest."""
    check_metric(metric)
    n = len(data.days)
    split = int(round(n * in_sample_share))
    if not 0 < split < n:
        raise BacktestError("walk-forward", "in_sample_share", f"{in_sample_share} of {n} day(s) leaves no in-sample or no out-of-sample day")
    ins = run_sweep(data.select_days(0, split), base, grid, metric=metric, workers=workers, fill_model=fill_model, progress=progress)
    oos = run_sweep(data.select_days(split, n), base, grid, metric=metric, workers=workers, fill_model=fill_model, progress=progress)
    out = WalkForward(metric, ins, oos)
    if ins and ins[0].metrics is not None:
        out.best_params = ins[0].params
        out.best_in_sample = ins[0].value(metric)
        for rank, row in enumerate(oos, start=1):
            if row.params == out.best_params:
                out.best_out_of_sample = row.value(metric)
                out.out_of_sample_rank = rank
                break
    return out
