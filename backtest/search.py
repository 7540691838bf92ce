"""A parameter search with Optuna instead of the whole grid: N trials chosen by a seeded sampler, kept in SQLite.

``run_search`` turns each axis into the search space (the listed values as a
categorical choice, ``Range(lo, hi)`` as an int or float interval) and runs
``trials`` back-tests in batches of ``workers``: the sampler proposes a batch
(``study.ask``), the batch runs on the local pool or the Ray cluster (the same
runners as a sweep), and each result is told back (``study.tell``) with the
run's metrics kept on the trial. The study lives in the SQLite file
``study_path`` under a name made of the strategy, the metric and a digest of
everything the figures depend on (data, fixed params, space, fill, costs), so
an interrupted search started again with the same arguments resumes: the
trials already finished count towards ``trials`` and are not run again, and
several machines given the same file share one study. A trial left running by
a process that died (no heartbeat for ``GRACE_S``) is marked failed and run
again as a new trial.

A set the sampler proposes again is told the figures its earlier trial got
rather than run again (a back-test is deterministic). The sampler is
``TPESampler`` seeded with ``seed`` plus the number of trials
the study holds, set afresh for each batch: the same arguments give the same
trials, also across an interruption between batches. The result is the
study's finished trials as sweep rows, sorted like a sweep.
"""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from backtest.data import MarketData
from backtest.engine import AgentSpec, BacktestError
from backtest.fills import DEFAULT_FILL_MODEL, FillModel
from backtest.metrics import Metrics
from backtest.sweep import (
    DEFAULT_MATCHING,
    LOWER_IS_BETTER,
    SweepRow,
    check_metric,
    check_sets,
    set_runner,
    sort_rows,
    sweep_job,
)
from core.costs import DEFAULT_COSTS, CostModel
from core.matching import MatchingParams

SEARCHES = ("optuna",)
HEARTBEAT_S = 5  # a running trial's heartbeat into the study
GRACE_S = 60  # a running trial without a heartbeat this long belongs to a process that died
ROW_ATTR = "row"  # the trial's user attribute holding what the back-test gave: {"metrics": ..., "error": ...}


@dataclass(frozen=True, slots=True)
class Range:
    """An interval axis ``lo..hi`` (both included): ints give an int parameter, otherwise a float one."""

    lo: float
    hi: float

    @property
    def integer(self) -> bool:
        return isinstance(self.lo, int) and isinstance(self.hi, int)


Axis = Sequence[Any] | Range


@dataclass(slots=True)
class SearchResult:
    """The study's finished trials as rows (best first), its name, and how many trials this run added."""

    study_name: str
    rows: list[SweepRow]
    ran: int  # trials run by this call
    before: int  # finished trials the study already held


def check_space(base: AgentSpec, space: Mapping[str, Axis]) -> None:
    """Raise BacktestError naming a parameter the strategy lacks or a value (or range end) it refuses."""
    for key, axis in space.items():
        if isinstance(axis, Range):
            if axis.lo > axis.hi:
                raise BacktestError("search", f"params.{key}", f"range {axis.lo}..{axis.hi} is empty")
            values: Sequence[Any] = (axis.lo, axis.hi)
        else:
            values = axis
        if not values:
            raise BacktestError("search", f"params.{key}", "no value to search")
        others = {k: (a.lo if isinstance(a, Range) else a[0]) for k, a in space.items() if k != key}
        check_sets(base, [{**others, key: v} for v in values])


def study_name(base: AgentSpec, data: MarketData, space: Mapping[str, Axis], metric: str, fill_model: str,
               costs: CostModel, sessions: bool, matching_params: MatchingParams) -> str:
    """``<strategy>-<metric>-<digest>``: one study per set of arguments the figures depend on."""
    bars = data.bars
    what = {"strategy": base.strategy, "codes": list(base.codes), "params": dict(base.params), "cash": base.cash_won,
            "space": {k: (["range", a.lo, a.hi] if isinstance(a, Range) else list(a)) for k, a in space.items()},
            "metric": metric, "fill": fill_model, "costs": costs.describe, "sessions": sessions,
            "matching": repr(matching_params), "data": [data.source, len(bars),
                                                        int(bars["ts_ns"].iloc[0]) if len(bars) else 0,
                                                        int(bars["close"].sum()) if len(bars) else 0]}
    digest = hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{base.strategy}-{metric}-{digest}"


def _suggest(trial: Any, space: Mapping[str, Axis]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, axis in space.items():
        if isinstance(axis, Range):
            params[key] = (trial.suggest_int(key, int(axis.lo), int(axis.hi)) if axis.integer
                           else trial.suggest_float(key, float(axis.lo), float(axis.hi)))
        else:
            params[key] = trial.suggest_categorical(key, list(axis))
    return params


def _finished(trial: Any) -> bool:
    """A trial this search ran to an end (complete, or a back-test that failed), not one a dead process left."""
    return ROW_ATTR in trial.user_attrs


class _Heartbeat:
    """Records the heartbeat of running trials every ``HEARTBEAT_S`` while a batch runs (Optuna's stale-trial rule)."""

    def __init__(self, storage: Any, trial_ids: list[int]) -> None:
        self.storage, self.trial_ids = storage, trial_ids
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="trial-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            for trial_id in self.trial_ids:
                self.storage.record_heartbeat(trial_id)

    def __enter__(self) -> Self:
        for trial_id in self.trial_ids:
            self.storage.record_heartbeat(trial_id)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def run_search(
    data: MarketData,
    base: AgentSpec,
    space: Mapping[str, Axis],
    *,
    trials: int,
    study_path: Path,
    metric: str = "sharpe",
    workers: int = 2,
    seed: int = 0,
    fill_model: FillModel | str = DEFAULT_FILL_MODEL,
    costs: CostModel = DEFAULT_COSTS,
    sessions: bool = True,
    matching_params: MatchingParams = DEFAULT_MATCHING,
    progress: Callable[[int, int], None] | None = None,
    cluster: str | None = None,
    name: str | None = None,
) -> SearchResult:
    """Run the study at ``study_path`` until it holds ``trials`` finished trials; ``progress(done, trials)``."""
    try:
        import optuna
    except ImportError:
        raise BacktestError("search", "optuna", "--search optuna needs Optuna: pip install -e '.[cluster]'") from None
    check_metric(metric)
    if trials < 1:
        raise BacktestError("search", "trials", f"at least one trial is needed, not {trials}")
    check_space(base, space)
    job = sweep_job(base, fill_model, costs, sessions, matching_params)
    name = name or study_name(base, data, space, metric, job.fill_model, costs, sessions, matching_params)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # heartbeats with ask/tell are what this module does on purpose: Optuna's notes about it are not for the user
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    storage = optuna.storages.RDBStorage(f"sqlite:///{study_path}", heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    direction = "minimize" if metric in LOWER_IS_BETTER else "maximize"
    try:
        study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True, direction=direction)
    except ValueError as exc:  # e.g. the same name stored with the other direction
        raise BacktestError("search", "study", f"{study_path}: {exc}") from None
    optuna.storages.fail_stale_trials(study)
    before = sum(_finished(t) for t in study.get_trials(deepcopy=False))
    done = before
    if progress:
        progress(done, trials)
    with set_runner(job, workers, cluster) as runner:
        while done < trials:
            study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.get_trials(deepcopy=False)))
            batch = [study.ask() for _ in range(min(max(workers, 1), trials - done))]
            sets = [_suggest(t, space) for t in batch]
            # a set the study already ran gives the same figures again (the back-test is deterministic): not rerun
            known = {_key(t.params): t.user_attrs[ROW_ATTR] for t in study.get_trials(deepcopy=False) if _finished(t)}
            new = [k for k, p in enumerate(sets) if _key(p) not in known]

            def tick(n: int, _: int, start: int = done + len(sets) - len(new)) -> None:
                if progress:
                    progress(start + n, trials)

            with _Heartbeat(storage, [batch[k]._trial_id for k in new]):
                ran = dict(zip(new, runner.run(data, [sets[k] for k in new], tick), strict=True))
            for k, trial in enumerate(batch):
                row = ran[k] if k in ran else _row(sets[k], known[_key(sets[k])])
                trial.set_user_attr(ROW_ATTR, {"metrics": row.metrics.as_dict() if row.metrics else None, "error": row.error})
                value = row.value(metric)
                if value is None:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                else:
                    study.tell(trial, value)
            done += len(batch)
            if progress:  # a batch of sets run before has ticked nothing yet
                progress(done, trials)
    return SearchResult(name, study_rows(study, space, metric), done - before, before)


def _key(params: Mapping[str, Any]) -> str:
    return repr(sorted(params.items()))


def _row(params: Mapping[str, Any], got: Mapping[str, Any]) -> SweepRow:
    """A sweep row from what a trial kept of its back-test."""
    return SweepRow(dict(params), Metrics(**got["metrics"]) if got["metrics"] else None, got["error"])


def study_rows(study: Any, space: Mapping[str, Axis], metric: str) -> list[SweepRow]:
    """The study's finished trials as sweep rows, sorted by ``metric`` like a sweep."""
    rows = [_row({k: t.params[k] for k in space if k in t.params}, t.user_attrs[ROW_ATTR])
            for t in study.get_trials(deepcopy=False) if _finished(t)]
    return sort_rows(rows, metric)
