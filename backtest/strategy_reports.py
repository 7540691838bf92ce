"""Strategy reports: each strategy back-tested where its effect is (the simulated market) and where it is not (the null world).

``python -m backtest.strategy_reports`` (``make strategy-reports``) writes
``docs/strategies/<strategy>.md`` for each strategy of ``CASES`` with SVG
charts beside it, and ``docs/strategies/README.md``, the index of them: the strategy's hypothesis (its module docstring), the
codes and params (those of its agent in ``configs/agents.toml``), one
back-test of ``DAYS`` days on the simulated market (seed ``SEED``: metrics,
refusals by reason, the equity curve and the price with the fills), then the
mean net return after costs and its standard error over ``SEEDS`` seeds of
``DAYS`` days in the simulated market and in the null world
(``from_simulator(world="null")``: the same volatility and volume, none of
the effects), and the null test: ``SEEDS`` seeds of the case's
``test_days`` days in the null world, where a strategy passes when its mean
net return is not positive beyond two standard errors. The test suite runs
the same null test (``tests/agents/test_null_world.py``).

Options: ``--out DIR`` (default ``docs/strategies``), ``--only NAME`` (repeatable).
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.strategy import get_strategy
from backtest.data import from_simulator
from backtest.engine import AgentSpec, BacktestResult, run_backtest
from backtest.metrics import agent_metrics
from backtest.report import svg_lines
from core import krx
from core.config import PROJECT_ROOT
from core.instruments import Instrument, load_instruments
from core.risk import RiskLimits, load_risk_limits

DAYS = 60  # the single back-test on the simulated market
SEED = 7
SEEDS = 20  # seeds of the comparison between the two worlds
CASH_WON = 100_000_000
START = dt.date(2025, 1, 2)


@dataclass(frozen=True, slots=True)
class Case:
    """A strategy as its roster agent runs it, and how many days a run of its null test lasts."""

    strategy: str
    agent_id: str  # the roster agent whose codes and params are taken
    test_days: int  # days per seed of the null test: short, but long enough for the strategy to trade
    params: Mapping[str, Any] = field(default_factory=dict)  # overrides of the roster's params


CASES: tuple[Case, ...] = (
    Case("pair_arbitrage", "pair-samsung", 20),
    Case("foreign_follower", "foreign-hynix", 15),
    Case("volatility_tracker", "voltarget-samsung", 10),
    Case("volume_trigger", "volume-kakao", 5),
    Case("per_valuation", "per-hyundai", 15),
    Case("slow_trend", "trend-naver", 10),
)


@dataclass(frozen=True, slots=True)
class WorldRuns:
    """Net returns after costs (final equity over capital, less 1) and fills of one strategy over many seeds."""

    world: str
    days: int
    returns: tuple[float, ...]
    fills: tuple[int, ...]
    holding: tuple[float, ...] = ()  # per run: the return of holding the first code from the first open to the last close

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def standard_error(self) -> float:
        n = len(self.returns)
        return float(np.std(self.returns, ddof=1) / math.sqrt(n)) if n > 1 else math.inf

    @property
    def finds_money_in_noise(self) -> bool:
        """The null test's failure: a mean net return positive beyond two standard errors."""
        return self.mean > 2 * self.standard_error


def roster_spec(case: Case, roster_file: Path | None = None, cash_won: int = CASH_WON) -> AgentSpec:
    """The back-test spec of a case: its roster agent's codes and params (with the case's overrides), a fixed cash."""
    path = roster_file or PROJECT_ROOT / "configs" / "agents.toml"
    with open(path, "rb") as f:
        agents = tomllib.load(f)["agents"]
    [agent] = [a for a in agents if a["id"] == case.agent_id]
    codes = tuple(agent.get("codes") or [agent["code"]])
    return AgentSpec(case.agent_id, case.strategy, codes, {**agent.get("params", {}), **case.params}, cash_won)


def risk_limits() -> RiskLimits:
    """The firm's limits as ``trader backtest`` applies them: ``configs/risk.toml``."""
    return load_risk_limits(PROJECT_ROOT / "configs" / "risk.toml")


def run_world(spec: AgentSpec, world: str, days: int, seeds: Sequence[int], master: Mapping[str, Instrument],
              limits: RiskLimits | None = None) -> WorldRuns:
    """One back-test per seed in ``world`` ("sim" or "null"): the strategy's net return and fills in each."""
    returns, fills, holding = [], [], []
    limits = limits or risk_limits()
    for seed in seeds:
        data = from_simulator(list(spec.codes), days, seed, master, START, world=world)
        result = run_backtest(data, [spec], risk_limits=limits)
        if result.failure is not None:
            raise RuntimeError(f"{spec.strategy} in the {world} world, seed {seed}: {result.failure}")
        agent = result.agents[spec.agent_id]
        end = agent.days[-1].equity_won if agent.days else agent.capital_won
        returns.append(end / agent.capital_won - 1)
        fills.append(len(agent.trades))
        bars = data.bars[data.bars["code"] == spec.codes[0]]
        holding.append(float(bars["close"].iloc[-1] / bars["open"].iloc[0] - 1))
    return WorldRuns(world, days, tuple(returns), tuple(fills), tuple(holding))


def world_seeds(n: int = SEEDS) -> list[int]:
    """The seeds of the comparison (apart from the single back-test's)."""
    return [1000 + k for k in range(n)]


# --- the page ---------------------------------------------------------------------


def hypothesis(strategy: str) -> str:
    """The strategy module's docstring without the paragraph on the state it keeps."""
    doc = inspect.getdoc(inspect.getmodule(get_strategy(strategy))) or ""
    paras = [p for p in doc.split("\n\n") if not p.startswith("State kept")]
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paras)


def _pct(x: float) -> str:
    return f"{x * 100:+.2f}%"


def _charts(result: BacktestResult, agent_id: str, out: Path, name: str) -> list[str]:
    agent = result.agents[agent_id]
    files = []
    dates = [d.date for d in agent.days]
    xs = list(range(len(dates)))
    equity = svg_lines(f"{name}: equity (won), {result.source}", xs, {"equity": [d.equity_won for d in agent.days]},
                       labels=(str(dates[0]) if dates else "", str(dates[-1]) if dates else ""))
    (out / f"{name}-equity.svg").write_text(equity)
    files.append(f"{name}-equity.svg")
    for code in agent.codes:
        ts, close = result.prices[code]
        step = max(1, len(ts) // 4000)
        markers = [(float(t.ts_ns), float(t.price), t.side) for t in agent.trades if t.code == code]
        price = svg_lines(f"{code}: close and fills (buys up, sells down)", ts[::step].astype(float), {code: close[::step]},
                          markers=markers, labels=(str(krx.kst_date(int(ts[0]))), str(krx.kst_date(int(ts[-1])))))
        (out / f"{name}-{code}.svg").write_text(price)
        files.append(f"{name}-{code}.svg")
    return files


def render(case: Case, spec: AgentSpec, result: BacktestResult, worlds: Sequence[WorldRuns], test: WorldRuns,
           charts: list[str]) -> str:
    """The markdown page of one strategy."""
    agent = result.agents[spec.agent_id]
    m = agent_metrics(agent)
    params = ", ".join(f"`{k}={v}`" for k, v in sorted(spec.params.items())) or "defaults"
    lines = [
        f"# {case.strategy}",
        "",
        "Written by `python -m backtest.strategy_reports` (`make strategy-reports`) from the code as it is; "
        "do not edit by hand.",
        "",
        "## Hypothesis and rules",
        "",
        hypothesis(case.strategy),
        "",
        "## Set-up",
        "",
        f"- agent `{spec.agent_id}` of `configs/agents.toml`: codes {', '.join(f'`{c}`' for c in spec.codes)}, params {params}",
        f"- cash {spec.cash_won:,} won; costs: commission both ways and the dated sell tax; fill model `{result.fill_model.value}`",
        "- risk limits: `configs/risk.toml`, as `trader backtest` applies them",
        "",
        f"## One back-test: simulated market, {DAYS} days, seed {SEED}",
        "",
        "| figure | value |",
        "|---|---|",
        f"| net return after costs | {_pct(m.total_return)} |",
        f"| annualised return | {_pct(m.annual_return)} |",
        f"| Sharpe | {m.sharpe:.2f} |",
        f"| max drawdown | {m.max_drawdown * 100:.2f}% |",
        f"| fills | {m.trades} |",
        f"| closing fills, win rate | {m.closed_trades}, {m.win_rate * 100:.0f}% |",
        f"| fees, taxes (won) | {m.fees_won:,}, {m.taxes_won:,} |",
        f"| exposure | {m.exposure * 100:.0f}% of bars |",
        f"| orders sent | {agent.orders} |",
        f"| refusals by reason | {_counter(agent.refusals)} |",
        f"| orders held back by a backoff | {_counter(agent.held_back)} |",
        f"| alerts | {len(agent.alerts)} |",
        "",
        *[f"![{c}]({c})" for c in charts],
        "",
        f"## Where the effect is, and where it is not: {SEEDS} seeds each",
        "",
        "Net return after costs per run (final equity over the cash, less 1); the null world has the same volatility "
        "and volume but none of the effects the strategies look for (prices a random walk, flows and fundamentals "
        "independent of future prices, the discount without mean reversion). The last column is what holding the "
        "first code through the same runs returned, for comparison.",
        "",
        f"| world | days per run | mean net return | standard error | mean / SE | fills per run | holding {spec.codes[0]} |",
        "|---|---|---|---|---|---|---|",
    ]
    for runs in (*worlds, test):
        lines.append(f"| {runs.world} | {runs.days} | {_pct(runs.mean)} | {runs.standard_error * 100:.2f}% | "
                     f"{runs.mean / runs.standard_error if runs.standard_error > 0 else 0.0:+.2f} | {np.mean(runs.fills):.1f} | "
                     f"{_pct(float(np.mean(runs.holding)))} |")
    verdict = ("FAILS: it finds money in noise" if test.finds_money_in_noise
               else "passes: no positive mean beyond two standard errors")
    lines += ["", f"The last row is the null test of `tests/agents/test_null_world.py` ({SEEDS} seeds, {test.days} days "
              f"each): {verdict}.", ""]
    return "\n".join(lines)


def _counter(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def write(case: Case, out: Path, master: Mapping[str, Instrument]) -> tuple[Path, tuple[WorldRuns, WorldRuns, WorldRuns]]:
    """Run a case's back-tests and write its page and charts; returns the page's path and the runs of each world."""
    spec = roster_spec(case)
    limits = risk_limits()
    result = run_backtest(from_simulator(list(spec.codes), DAYS, SEED, master, START), [spec], risk_limits=limits)
    if result.failure is not None:
        raise RuntimeError(str(result.failure))
    seeds = world_seeds()
    sim = run_world(spec, "sim", DAYS, seeds, master, limits)
    null = run_world(spec, "null", DAYS, seeds, master, limits)
    test = run_world(spec, "null", case.test_days, seeds, master, limits)
    out.mkdir(parents=True, exist_ok=True)
    charts = _charts(result, spec.agent_id, out, case.strategy)
    page = out / f"{case.strategy}.md"
    page.write_text(render(case, spec, result, (sim, null), test, charts))
    return page, (sim, null, test)


def render_index(rows: Sequence[tuple[str, WorldRuns, WorldRuns, WorldRuns]]) -> str:
    """The index page: each strategy's mean net return in both worlds and its null test."""
    lines = [
        "# Strategy reports",
        "",
        "Written by `python -m backtest.strategy_reports` (`make strategy-reports`); do not edit by hand. Each page "
        "states the strategy's hypothesis and shows it back-tested where its effect is (the simulated market) and "
        f"where it is not (the null world). Mean net return after costs, ± one standard error, over {SEEDS} seeds.",
        "",
        f"| strategy | simulated market, {DAYS} days | null world, {DAYS} days | null test | |",
        "|---|---|---|---|---|",
    ]
    for name, sim, null, test in rows:
        verdict = "fails" if test.finds_money_in_noise else "passes"
        lines.append(f"| [{name}]({name}.md) | {_pct(sim.mean)} ± {sim.standard_error * 100:.2f}% | "
                     f"{_pct(null.mean)} ± {null.standard_error * 100:.2f}% | {_pct(test.mean)} ± "
                     f"{test.standard_error * 100:.2f}% ({test.days} days) | {verdict} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backtest.strategy_reports", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(PROJECT_ROOT / "docs" / "strategies"), help="folder of the pages")
    parser.add_argument("--only", action="append", default=[], help="a strategy to report (repeatable; default all)")
    args = parser.parse_args(argv)
    master = load_instruments(PROJECT_ROOT / "configs" / "instruments.csv")
    known = {c.strategy for c in CASES}
    unknown = [n for n in args.only if n not in known]
    if unknown:
        parser.error(f"no report case for {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    out = Path(args.out)
    rows = []
    for case in CASES:
        if args.only and case.strategy not in args.only:
            continue
        page, worlds = write(case, out, master)
        rows.append((case.strategy, *worlds))
        print(page)
    if not args.only:
        (out / "README.md").write_text(render_index(rows))
        print(out / "README.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
