"""Benchmark: one year of simulated 1-minute bars for 100 instruments (``python -m bench.simulator``).

Builds the XKRX calendar first (a one-time cost of the process, reported on its
own), then times ``core.simulator.simulate`` over the trading days of a year,
the long bar and flow tables included. Prints figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

from core import krx
from core.instruments import load_instruments
from core.simulator import simulate, universe

MASTER_PATH = Path(__file__).resolve().parent.parent / "configs" / "instruments.csv"


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instruments", type=int, default=100)
    parser.add_argument("--year", type=int, default=2025)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    t0 = time.perf_counter()
    days = krx.trading_days(dt.date(args.year, 1, 1), dt.date(args.year, 12, 31))
    calendar_s = time.perf_counter() - t0
    instruments = universe(list(load_instruments(MASTER_PATH).values()), args.instruments)

    t0 = time.perf_counter()
    bars, flows = simulate(instruments, args.seed, days[0], len(days))
    seconds = time.perf_counter() - t0

    print(f"calendar load      {calendar_s:8.2f} s (once per process)")
    print(f"trading days       {len(days):8d} ({args.year})")
    print(f"instruments        {len(instruments):8d}")
    print(f"bars               {len(bars):8d}")
    print(f"flow reports       {len(flows):8d}")
    print(f"generation         {seconds:8.2f} s")
    print(f"bars per second    {len(bars) / seconds:12.0f}")
    print(
        json.dumps(
            {
                "bench": "simulator",
                "instruments": len(instruments),
                "days": len(days),
                "bars": len(bars),
                "seconds": round(seconds, 3),
                "bars_per_s": round(len(bars) / seconds),
            }
        )
    )


if __name__ == "__main__":
    main()
