"""Run the chaos test alone: ``python -m tests.chaos --days N --roster busy --seed S [--venue kis-sim]`` (exit 0 only
when every check held)."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from tests.chaos.firm import VENUES
from tests.chaos.run import ChaosPlan, run_chaos

BUSY_MIN_ORDERS_PER_DAY = 300
BUSY_MIN_FILLS_PER_DAY = 100


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run, print the summary; the exit code says whether every check held."""
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--days", type=int, default=3, help="simulated trading days to run (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fault injector and the market")
    parser.add_argument("--speed", type=float, default=300.0, help="market seconds per wall second (default 300)")
    parser.add_argument("--start-time", default="08:50", help="market time (KST) the first day starts at")
    parser.add_argument("--run-dir", type=Path, default=None, help="run directory (default: a new temporary one)")
    parser.add_argument("--roster", default="default", help="default, busy, or the path of a roster file")
    parser.add_argument("--venue", default="paper", choices=VENUES,
                        help="paper (the paper exchange, default) or kis-sim (the KIS gateway and the local kis-sim)")
    parser.add_argument("--retention-days", type=int, default=3, help="journal retention in days (default 3)")
    parser.add_argument("--recon-interval", type=float, default=3.0, help="reconciler interval in wall seconds")
    parser.add_argument("--no-phantom", action="store_true", help="leave the phantom account change out")
    parser.add_argument("--no-restarts", action="store_true", help="leave the whole-stack restarts out")
    args = parser.parse_args(argv)
    # a terminated run still takes its whole stack down (the run's ``finally``), leaving no orphan
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    plan = ChaosPlan.for_days(args.days)
    if args.no_phantom:
        plan = replace(plan, phantom_on=None)
    if args.no_restarts:
        plan = replace(plan, overnight_restart_after=None, midday_restart_on=None)
    busy = args.roster == "busy"
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="trader-chaos-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"chaos run in {run_dir}: venue {args.venue}, {args.days} day(s), roster {args.roster}, seed {args.seed}, "
          f"clock x{args.speed:g}, "
          f"retention {args.retention_days} day(s); {plan}", flush=True)

    def log(line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)

    result = run_chaos(run_dir, days=args.days, seed=args.seed, speed=args.speed, start_time=args.start_time,
                       roster=args.roster, retention_days=args.retention_days, recon_interval_s=args.recon_interval,
                       plan=plan, min_orders_per_day=BUSY_MIN_ORDERS_PER_DAY if busy else 0,
                       min_fills_per_day=BUSY_MIN_FILLS_PER_DAY if busy else 0, venue=args.venue, log=log)
    print(result.summary(), flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
