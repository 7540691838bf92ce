"""Benchmark of a sweep on the local pool against the same sweep on a two-node Ray cluster on this machine.

The sweep: SMA crossover on ``--days`` (160) simulated days of 005930 (seed 1),
a 10 x 10 grid of windows (100 sets, every one valid), each back-test about
0.4 s of CPU so that Ray's costs (its workers' start and imports, about 2 s
more than the pool's; its daemons' share of the two cores) are small beside
the work. The local pool
has 2 workers; the cluster is a head and one more node of 1 CPU each, started
with ``ray start`` like the cluster tests and always stopped at the end. Both
timings include their start-up (the pool's spawned processes; ``ray.init``,
the data put in the object store and the workers' first imports); the cluster's
own start is not timed. The two result tables must be identical, rows and
metrics.

Progress goes to stderr; the last line is the JSON
{"bench": "sweep", "sets": 100, "local_s": ..., "ray_s": ..., "identical": true}.

Each sweep runs ``--repeat`` (2) times and the fastest counts, as in
bench.backtest: on a shared machine the slower repeats measure the neighbours.

Run: ``python -m bench.sweep`` (``--days``, ``--repeat``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from backtest.cluster import LocalCluster
from backtest.data import from_simulator
from backtest.engine import AgentSpec
from backtest.sweep import SweepRow, run_sweep
from core.config import PROJECT_ROOT
from core.instruments import load_instruments

GRID = {"fast": list(range(2, 12)), "slow": list(range(20, 120, 10))}


def _progress(label: str) -> Callable[[int, int], None]:
    def tick(done: int, total: int) -> None:
        if done % 10 == 0 or done == total:
            print(f"  {label}: {done}/{total}", file=sys.stderr, flush=True)
    return tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=160)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.2f} (2 cores; figures are disturbed above ~0.5)", file=sys.stderr)
    master = load_instruments(PROJECT_ROOT / "configs" / "instruments.csv")
    data = from_simulator(["005930"], args.days, 1, master)
    base = AgentSpec("bench", "sma_cross", ("005930",), {"qty": 10})
    sets = len(GRID["fast"]) * len(GRID["slow"])
    print(f"sweep of {sets} sets on {len(data.bars):,} bars", file=sys.stderr)
    root = Path(tempfile.mkdtemp(prefix="rb", dir="/tmp"))  # short: Ray's socket paths live under it
    cluster = LocalCluster(root, nodes=2, cpus=1)
    os.environ.update(cluster.env)  # this process is the cluster's driver: it holds its token
    local_s = ray_s = float("inf")
    local: list[SweepRow] = []
    remote: list[SweepRow] = []
    try:
        t0 = time.perf_counter()
        cluster.start()
        print(f"cluster at {cluster.address}: head + 1 node, 1 CPU each, started in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
        for n in range(args.repeat):
            t0 = time.perf_counter()
            local = run_sweep(data, base, GRID, metric="sharpe", workers=2, progress=_progress(f"local #{n + 1}"))
            local_s = min(local_s, time.perf_counter() - t0)
            t0 = time.perf_counter()
            remote = run_sweep(data, base, GRID, metric="sharpe", cluster=cluster.address, progress=_progress(f"ray #{n + 1}"))
            ray_s = min(ray_s, time.perf_counter() - t0)
            print(f"local pool {local_s:.2f} s, ray {ray_s:.2f} s (best so far)", file=sys.stderr)
    finally:
        cluster.stop()
        left = cluster.processes()
        shutil.rmtree(root, ignore_errors=True)
        print(f"cluster stopped ({len(left)} process(es) left)", file=sys.stderr)
    identical = remote == local and all(r.metrics is not None for r in local)
    print(f"ray / local = {ray_s / local_s:.2f}", file=sys.stderr)
    print(json.dumps({"bench": "sweep", "sets": sets, "local_s": round(local_s, 2), "ray_s": round(ray_s, 2),
                      "identical": identical}))


if __name__ == "__main__":
    main()
