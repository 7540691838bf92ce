"""Performance figures of a back-test, per agent and combined, from daily equity and fills.

Definitions (daily returns ``r_d = E_d / E_{d-1} - 1`` with ``E_0`` the capital
given at the start, 252 trading days a year, no risk-free rate):

- total return ``E_last / E_0 - 1``; annualised ``(1 + total) ** (252 / days) - 1``
- volatility ``std(r, ddof=1) * sqrt(252)``; Sharpe ``mean(r) / std(r, ddof=1) * sqrt(252)``
- Sortino ``mean(r) / sqrt(mean(min(r, 0) ** 2)) * sqrt(252)`` (downside deviation
  about zero over all days)
- maximum drawdown ``max(1 - E / running peak)`` and its duration: the longest
  run of days spent below a previous peak (to recovery, or to the end); Calmar
  ``annual return / max drawdown`` (None without a drawdown)
- trades are closing fills (sells): each realises ``proceeds - fee - tax -
  cost of the shares sold`` where the cost is the average cost *including buy
  fees*; win rate = share of closing fills with a positive result; profit
  factor = gross gains / gross losses (None when there are no losses);
  expectancy = the mean result of a closing fill, in won
- holding time: each share sold is matched to the earliest shares bought
  still held (first in, first out), and the average is taken over the shares
  sold, in minutes of market time (a night held counts in full); None when
  nothing bought was sold
- gross PnL = net PnL (``E_last - E_0``) + fees + taxes, what the trades made
  before costs; cost share = (fees + taxes) / abs(gross PnL) (None when the
  gross PnL is zero)
- turnover = traded notional / mean equity; fees and taxes in won; exposure =
  share of the agent's bars during which it held shares.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from backtest.engine import AgentResult, BacktestResult, Trade

TRADING_DAYS = 252
NS_PER_MINUTE = 60_000_000_000


@dataclass(frozen=True, slots=True)
class Metrics:
    """The figures of one agent (or of all agents combined)."""

    days: int
    start_equity_won: int
    end_equity_won: int
    total_return: float
    annual_return: float
    volatility: float
    sharpe: float
    sortino: float
    max_drawdown: float
    max_drawdown_days: int
    calmar: float | None
    trades: int
    closed_trades: int
    win_rate: float
    profit_factor: float | None
    expectancy_won: float
    avg_holding_minutes: float | None
    turnover: float
    gross_pnl_won: int
    fees_won: int
    taxes_won: int
    cost_share: float | None
    exposure: float

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON and tables."""
        return asdict(self)


def daily_returns(equity: Sequence[int], start_equity: int) -> np.ndarray:
    """Day-over-day returns, the first against the starting capital."""
    e = np.asarray([start_equity, *equity], dtype=float)
    if len(e) < 2 or start_equity <= 0:
        return np.zeros(0)
    prev = e[:-1]
    return np.divide(e[1:] - prev, prev, out=np.zeros(len(prev)), where=prev > 0)


def max_drawdown(equity: Sequence[int], start_equity: int) -> tuple[float, int]:
    """(deepest fall from a running peak as a fraction, longest number of days under water)."""
    e = np.asarray([start_equity, *equity], dtype=float)
    if len(e) == 0:
        return 0.0, 0
    peak = np.maximum.accumulate(e)
    dd = np.divide(peak - e, peak, out=np.zeros(len(e)), where=peak > 0)
    longest = run = 0
    for under in e < peak:
        run = run + 1 if under else 0
        longest = max(longest, run)
    return float(dd.max()), longest


def closed_trade_results(trades: Iterable[Trade]) -> list[int]:
    """Net result in won of every closing fill, by average cost with buy fees in the cost."""
    held: dict[tuple[str, str], tuple[int, int]] = {}  # (agent, code) -> (qty, cost incl. fees)
    out: list[int] = []
    for t in trades:
        key = (t.agent_id, t.code)
        qty, cost = held.get(key, (0, 0))
        if t.side == "buy":
            held[key] = (qty + t.qty, cost + t.qty * t.price + t.fee_won)
        else:
            take = min(t.qty, qty)
            cost_out = cost if take == qty else (cost * take // qty if qty else 0)
            out.append(t.qty * t.price - t.fee_won - t.tax_won - cost_out)
            held[key] = (qty - take, cost - cost_out)
    return out


def average_holding_ns(trades: Iterable[Trade]) -> float | None:
    """Mean time a sold share was held, first in first out, in ns (None when nothing bought was sold)."""
    lots: dict[tuple[str, str], deque[list[int]]] = {}  # (agent, code) -> [ts_ns, qty] of shares still held
    held_ns = sold = 0
    for t in trades:
        queue = lots.setdefault((t.agent_id, t.code), deque())
        if t.side == "buy":
            queue.append([t.ts_ns, t.qty])
            continue
        left = t.qty
        while left and queue:
            lot = queue[0]
            take = min(left, lot[1])
            held_ns += take * (t.ts_ns - lot[0])
            sold += take
            left -= take
            lot[1] -= take
            if not lot[1]:
                queue.popleft()
    return held_ns / sold if sold else None


def compute(
    equity: Sequence[int],
    start_equity: int,
    trades: Sequence[Trade],
    *,
    bars: int = 0,
    exposed_bars: int = 0,
) -> Metrics:
    """Every figure of the module docstring from a daily equity curve (won) and the fills."""
    r = daily_returns(equity, start_equity)
    n = len(r)
    end = int(equity[-1]) if len(equity) else start_equity
    total = end / start_equity - 1 if start_equity > 0 else 0.0
    annual = (1 + total) ** (TRADING_DAYS / n) - 1 if n and total > -1 else (-1.0 if total <= -1 else 0.0)
    sd = float(np.std(r, ddof=1)) if n > 1 else 0.0
    mean = float(np.mean(r)) if n else 0.0
    vol = sd * math.sqrt(TRADING_DAYS)
    sharpe = mean / sd * math.sqrt(TRADING_DAYS) if sd > 0 else 0.0
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2))) if n else 0.0
    sortino = mean / downside * math.sqrt(TRADING_DAYS) if downside > 0 else 0.0
    mdd, mdd_days = max_drawdown(equity, start_equity)
    results = closed_trade_results(trades)
    gains = sum(x for x in results if x > 0)
    losses = -sum(x for x in results if x < 0)
    notional = sum(t.qty * t.price for t in trades)
    mean_equity = float(np.mean([start_equity, *equity])) if start_equity > 0 else 0.0
    fees = sum(t.fee_won for t in trades)
    taxes = sum(t.tax_won for t in trades)
    gross = end - start_equity + fees + taxes
    holding_ns = average_holding_ns(trades)
    return Metrics(
        days=n,
        start_equity_won=start_equity,
        end_equity_won=end,
        total_return=total,
        annual_return=annual,
        volatility=vol,
        sharpe=sharpe,
        sortino=sortino,
        max_drawdown=mdd,
        max_drawdown_days=mdd_days,
        calmar=annual / mdd if mdd > 0 else None,
        trades=len(trades),
        closed_trades=len(results),
        win_rate=sum(1 for x in results if x > 0) / len(results) if results else 0.0,
        profit_factor=gains / losses if losses > 0 else None,
        expectancy_won=sum(results) / len(results) if results else 0.0,
        avg_holding_minutes=holding_ns / NS_PER_MINUTE if holding_ns is not None else None,
        turnover=notional / mean_equity if mean_equity > 0 else 0.0,
        gross_pnl_won=gross,
        fees_won=fees,
        taxes_won=taxes,
        cost_share=(fees + taxes) / abs(gross) if gross else None,
        exposure=exposed_bars / bars if bars else 0.0,
    )


def agent_metrics(agent: AgentResult) -> Metrics:
    """The figures of one agent."""
    return compute([d.equity_won for d in agent.days], agent.capital_won, agent.trades,
                   bars=agent.bars_seen, exposed_bars=agent.exposed_bars)


def combined_equity(result: BacktestResult) -> list[int]:
    """The sum of every agent's equity at each close."""
    curves = [[d.equity_won for d in a.days] for a in result.agents.values()]
    return [sum(day) for day in zip(*curves)] if curves else []


def combined_metrics(result: BacktestResult) -> Metrics:
    """The figures of all agents together, as one account."""
    agents = list(result.agents.values())
    trades = sorted((t for a in agents for t in a.trades), key=lambda t: (t.ts_ns, t.exec_id))
    return compute(combined_equity(result), sum(a.capital_won for a in agents), trades,
                   bars=sum(a.bars_seen for a in agents), exposed_bars=sum(a.exposed_bars for a in agents))


def all_metrics(result: BacktestResult) -> dict[str, Metrics]:
    """Per agent by id, and ``"combined"``."""
    out = {aid: agent_metrics(a) for aid, a in result.agents.items()}
    out["combined"] = combined_metrics(result)
    return out
