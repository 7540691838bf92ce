"""Benchmark of the back-tester: the SMA(10)/SMA(30) crossover on 200,000 one-minute bars, and a 100-set sweep.

The full path runs: strategy callbacks in the agent context, the order state
machine, the pre-trade risk checks, the matching venue with its order book and
the portfolio, under the default fill model (``next_open``: the spread paid at
the next bar's open, depth walked, resting orders filling by queue position).
The same single run under the ``close`` model is timed beside it. Bars come
from the simulator (one instrument, seed 1). Prints figures and a final JSON
line: {"bench": "backtest", "fill_model": ..., "book": true, "bars": ...,
"bars_per_s": ..., "trades": ..., "close_bars_per_s": ..., "close_trades": ...,
"sweep_100_s": ...}.

The single run is timed ``--repeat`` times (default 3) and the fastest counts,
as ``timeit`` does: on a shared machine the slower repeats measure the
neighbours. Its CPU time is printed too, and the ratio to a plain Python loop
over the same closes (a moving sum and a comparison per bar), which shows the
cost of the full path independent of the machine's speed. Simulating the bars
loads the XKRX calendar, which the run would otherwise load once per process.

Run: ``python -m bench.backtest`` (``--profile`` prints the cProfile top of the single run).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import resource
import time

from backtest.data import MarketData, from_simulator
from backtest.engine import AgentSpec, run_backtest
from backtest.fills import DEFAULT_FILL_MODEL, FillModel
from backtest.sweep import run_sweep
from core.instruments import load_instruments
from core.config import PROJECT_ROOT

BARS_PER_DAY = 381


def bars_of(days: int) -> MarketData:
    """About ``days`` x 381 simulated one-minute bars of 005930."""
    master = load_instruments(PROJECT_ROOT / "configs" / "instruments.csv")
    return from_simulator(["005930"], days, 1, master)


def plain_loop_s(data: MarketData) -> float:
    """CPU seconds of the floor: a Python loop keeping a 30-bar moving sum of the closes and comparing it."""
    closes = data.bars["close"].tolist()
    ring, total, above = [0] * 30, 0, 0
    c0 = time.process_time()
    for i, close in enumerate(closes):
        slot = i % 30
        total += close - ring[slot]
        ring[slot] = close
        above += total > 30 * close
    return max(time.process_time() - c0, 1e-9)


def _children_cpu_s() -> float:
    """CPU seconds (user + system) used so far by this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bars", type=int, default=200_000)
    parser.add_argument("--sweep-bars", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    t0 = time.perf_counter()
    data = bars_of(-(-args.bars // BARS_PER_DAY))
    data.bars = data.bars.iloc[: args.bars].reset_index(drop=True)
    print(f"simulated {len(data.bars):,} bars in {time.perf_counter() - t0:.1f} s")
    spec = AgentSpec("sma", "sma_cross", ("005930",), {"fast": 10, "slow": 30, "qty": 100}, 1_000_000_000)
    profiler = cProfile.Profile() if args.profile else None
    runs = {}
    for model in (DEFAULT_FILL_MODEL, FillModel.CLOSE):
        elapsed = cpu = float("inf")
        for _ in range(max(1, args.repeat)):
            t0, c0 = time.perf_counter(), time.process_time()
            if profiler and model is DEFAULT_FILL_MODEL:
                profiler.enable()
            result = run_backtest(data, [spec], fill_model=model)
            if profiler:
                profiler.disable()
            elapsed, cpu = min(elapsed, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
        trades = len(result.agents["sma"].trades)
        runs[model] = (result.bars / elapsed, trades)
        loop_s = plain_loop_s(data)
        print(f"single run ({model.value}): {result.bars:,} bars, {trades} fills in {elapsed:.2f} s = "
              f"{result.bars / elapsed:,.0f} bars/s (best of {max(1, args.repeat)}; CPU {cpu:.2f} s = "
              f"{result.bars / cpu:,.0f} bars/s; {cpu / loop_s:.0f}x a plain loop over the closes)")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)

    sweep_data = MarketData(data.bars.iloc[: args.sweep_bars].reset_index(drop=True), data.instruments, data.flows,
                            data.first_base_prices, data.source)
    grid = [{"fast": f, "slow": s} for f in range(2, 22, 2) for s in range(25, 75, 5)]
    t0 = time.perf_counter()
    children_cpu = _children_cpu_s()
    rows = run_sweep(sweep_data, spec, grid, metric="sharpe", workers=args.workers)
    sweep_s = time.perf_counter() - t0
    workers_cpu = _children_cpu_s() - children_cpu
    print(f"sweep: {len(rows)} sets on {len(sweep_data.bars):,} bars with {args.workers} workers in {sweep_s:.1f} s "
          f"({workers_cpu:.1f} s of CPU in the workers, start-up included); best {rows[0].params}")
    (rate, trades), (close_rate, close_trades) = runs[DEFAULT_FILL_MODEL], runs[FillModel.CLOSE]
    print(json.dumps({"bench": "backtest", "fill_model": DEFAULT_FILL_MODEL.value, "book": True, "bars": result.bars,
                      "bars_per_s": round(rate), "trades": trades, "close_bars_per_s": round(close_rate),
                      "close_trades": close_trades, "sweep_100_s": round(sweep_s, 2)}))


if __name__ == "__main__":
    main()
