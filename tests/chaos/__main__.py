"""Run the chaos test alone: ``python -m tests.chaos --days N --seed S`` (exit code 0 only when every check held)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.chaos.run import run_chaos


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run, print the summary; the exit code says whether every check held."""
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--days", type=int, default=3, help="simulated trading days to run (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fault injector and the market")
    parser.add_argument("--speed", type=float, default=300.0, help="market seconds per wall second (default 300)")
    parser.add_argument("--start-time", default="08:50", help="market time (KST) the first day starts at")
    parser.add_argument("--run-dir", type=Path, default=None, help="run directory (default: a new temporary one)")
    args = parser.parse_args(argv)
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="trader-chaos-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"chaos run in {run_dir}: {args.days} day(s), seed {args.seed}, clock x{args.speed:g}", flush=True)

    def log(line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)

    result = run_chaos(run_dir, days=args.days, seed=args.seed, speed=args.speed, start_time=args.start_time, log=log)
    print(result.summary(), flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
