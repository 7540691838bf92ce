"""Order round trip through the real processes: agent RpcClient -> OMS -> risk guard -> venue -> ack.

Starts bus proxy, the venue, market data, risk guard and order manager in a
temporary run directory (generous risk limits), sends ``--orders`` limit buys
far below the market so they rest, one at a time, and measures each
acknowledgement's round trip; then the sustained rate. The venue
(``--venue``) is the paper exchange, or the KIS gateway in front of a local
kis-sim (``bench/kis_venue.py``: their rate limits raised, kis-sim's market
open). Prints figures and, last, one JSON line::

    {"bench": "orders", "orders": ..., "ack_p50_us": ..., "ack_p99_us": ..., "orders_per_s": ..., "venue": ...}

The journal runs with its shipped durability (WAL, synchronous=NORMAL; see
services/order_manager/journal.py), reported as ``journal_synchronous``.
Goals through kis-sim: ack p50 <= 10 ms, p99 <= 40 ms, ``not_accepted`` 0.
Progress goes to stderr, the processes' logs to ``<run dir>/bench.log``.

    python -m bench.orders                       # the paper exchange
    python -m bench.orders --venue kis-sim       # the KIS gateway and kis-sim
    python -m bench.orders --orders 500 --profile /tmp/prof   # where each process spends its time
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import FrameType

import zmq

from bench import kis_venue
from bench.kis_venue import VENUE_HELP, VENUES
from bus.rpc import RpcClient
from core import krx
from core.config import PROJECT_ROOT, StackSettings, load_stack
from core.messages import Command, OrderEvent, OrderRequest, OrderStatus, Side
from services.broker.venue import VenueBroker
from services.order_manager.journal import SYNCHRONOUS

ACK_P50_GOAL_US, ACK_P99_GOAL_US = 10_000, 40_000  # through the KIS gateway and kis-sim
AGENT, CODE = "foreign-hynix", "293490"  # a low-priced code: 2,000 resting buys fit the allocation
RISK = """
blocked_codes = []
[order]
max_qty = 100000
max_notional_won = 1000000000
fat_finger_pct = 29.0
[position]
max_qty_per_agent = 100000000
max_notional_per_agent_won = 100000000000000
max_qty_per_code = 100000000
[open_orders]
max_per_agent = 1000000
[rate]
window_s = 1.0
max_per_agent = 1000000
max_account = 1000000
[loss]
daily_loss_limit_agent_won = 1000000000
daily_loss_limit_account_won = 1000000000
"""


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, nearest rank."""
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


IDLE = ("poll.py", "{method 'poll'", "select.", "time.sleep")  # time spent waiting for work, left out of the summary


def profile_summary(prof_dir: Path, top: int = 8) -> str:
    """Per process, the functions that took the most time of their own, waiting on sockets left out."""
    out = io.StringIO()
    for prof in sorted(prof_dir.glob("*.prof")):
        stats = pstats.Stats(str(prof), stream=out)
        rows = []
        for (filename, line, name), (_, calls, own, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
            where = f"{Path(filename).name}:{line}({name})" if line else name
            if not any(idle in where for idle in IDLE):
                rows.append((own, cum, calls, where))
        rows.sort(reverse=True)
        busy = sum(r[0] for r in rows)
        out.write(f"--- {prof.stem}: {busy:.3f} s busy (socket waits left out)\n")
        for own, cum, calls, where in rows[:top]:
            out.write(f"  own {own * 1e3:9.1f} ms  cum {cum * 1e3:9.1f} ms  calls {calls:7d}  {where}\n")
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.orders", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venue", choices=VENUES, default="paper", help=VENUE_HELP + " (default: %(default)s)")
    parser.add_argument("--orders", type=int, default=2000, help="orders to time, one in flight (default: %(default)s)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="run every process under cProfile, writing <dir>/<module>.prof at its exit, "
                             "and print each process's busiest functions to stderr at the end")
    opts = parser.parse_args()
    signal.signal(signal.SIGTERM, _stop_on_term)
    try:
        run(opts)
    except KeyboardInterrupt:
        print("interrupted; the stack was stopped", file=sys.stderr)
        raise SystemExit(130)


def _stop_on_term(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through run(), which stops every process it started


def run(opts: argparse.Namespace) -> None:
    """Start the stack on ``opts.venue``, time ``opts.orders`` round trips, print the figures and the JSON line."""
    run_dir = Path(tempfile.mkdtemp(prefix="bench-orders-"))
    (run_dir / "risk.toml").write_text(RISK)
    env = {**os.environ, "TRADER_RUN_DIR": str(run_dir), "TRADER_RISK_FILE": str(run_dir / "risk.toml"),
           "TRADER_CLOCK__START_TIME": "08:59", "TRADER_CLOCK__SPEED": "5", **kis_venue.venue_env(opts.venue)}
    os.environ.update({k: v for k, v in env.items() if k.startswith("TRADER_")})
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    ctx = zmq.Context()
    try:
        with open(run_dir / "bench.log", "ab") as log:  # each process holds its own copy of the descriptor
            for name, argv in kis_venue.order_path_commands(opts.venue).items():
                if opts.profile is not None:
                    opts.profile.mkdir(parents=True, exist_ok=True)
                    module = argv[argv.index("-m") + 1]
                    argv = [argv[0], "-m", "cProfile", "-o", str(opts.profile / f"{module}.prof"), *argv[1:]]
                procs.append((name, subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, stdout=log,
                                                     stderr=subprocess.STDOUT, start_new_session=True)))
        settings = load_stack()
        oms = RpcClient(ctx, settings.endpoint("order_manager_rpc"), timeout_ms=5000, retries=0, sender="bench")
        exchange = VenueBroker(ctx, settings, timeout_ms=3000, retries=0)
        t_start = time.monotonic()
        if opts.venue != "paper":
            print(f"started kis-sim and the KIS gateway (run dir {run_dir}); waiting for the gateway's stream",
                  file=sys.stderr)
            kis_venue.wait_ready(ctx, settings, 120)
            print(f"the gateway is ready after {time.monotonic() - t_start:.1f} s", file=sys.stderr)
        deadline = t_start + 120
        date, price, n = "", 0, 0
        while time.monotonic() < deadline:  # until the whole chain approves and acknowledges an order
            try:
                date = oms.call(Command(command_id="s", name="status")).result["trading_date"]  # type: ignore[attr-defined]
                last = exchange.quote(CODE)["last"]
                price = krx.round_to_tick(last * 0.9, "up")
                n += 1
                reply = oms.call(OrderRequest(client_order_id=f"{AGENT}-{date}-{n}", agent_id=AGENT, code=CODE,
                                              side=Side.BUY, qty=1, price=price))
                if isinstance(reply, OrderEvent) and reply.status is OrderStatus.ACCEPTED:
                    break
            except Exception:  # noqa: BLE001 - processes still starting
                oms.close()
            time.sleep(0.2)
        else:
            raise SystemExit("the stack did not come up within 120 s; see " + str(run_dir / "bench.log"))
        latencies: list[float] = []
        refusals: Counter[str] = Counter()
        started = time.perf_counter()
        for _ in range(opts.orders):
            n += 1
            req = OrderRequest(client_order_id=f"{AGENT}-{date}-{n}", agent_id=AGENT, code=CODE, side=Side.BUY,
                               qty=1, price=price)
            t0 = time.perf_counter_ns()
            reply = oms.call(req)
            latencies.append((time.perf_counter_ns() - t0) / 1000)
            if not (isinstance(reply, OrderEvent) and reply.status is OrderStatus.ACCEPTED):
                refusals[getattr(reply, "reason_code", "") or getattr(reply, "status", type(reply).__name__)] += 1
        elapsed = time.perf_counter() - started
        rejected = sum(refusals.values())
        latencies.sort()
        result = {"bench": "orders", "orders": opts.orders, "ack_p50_us": round(percentile(latencies, 50), 1),
                  "ack_p99_us": round(percentile(latencies, 99), 1), "orders_per_s": round(opts.orders / elapsed, 1)}
        print(f"orders sent {opts.orders}, not accepted {rejected}, journal synchronous={SYNCHRONOUS}")
        print(f"ack round trip: p50 {result['ack_p50_us']} us, p90 {percentile(latencies, 90):.1f} us, "
              f"p99 {result['ack_p99_us']} us, max {latencies[-1]:.1f} us")
        print(f"sustained: {result['orders_per_s']} orders/s (one agent, one order in flight)")
        if refusals:
            print(f"not accepted, by reason: {dict(refusals)} (the venue's reasons in {run_dir / 'bench.log'})",
                  file=sys.stderr)
        if opts.venue != "paper":
            print(kis_sim_figures(settings, result["ack_p50_us"], result["ack_p99_us"], rejected))
        result["journal_synchronous"] = SYNCHRONOUS
        result["not_accepted"] = rejected
        result["venue"] = opts.venue
        print(json.dumps(result))
        oms.close()
        exchange.close()
    finally:
        kis_venue.stop_all(procs, run_dir)
        ctx.destroy(linger=0)
    if opts.profile is not None:  # the profiles are written as the processes exit; stderr keeps the JSON line last
        print(profile_summary(opts.profile), file=sys.stderr, end="")


def kis_sim_figures(settings: StackSettings, p50_us: float, p99_us: float, not_accepted: int) -> str:
    """What kis-sim counted of the run, and the round trip against the goals of a KIS venue."""
    sim = kis_venue.LocalKis(settings)
    try:
        st = sim.status()
    finally:
        sim.close()
    met = p50_us <= ACK_P50_GOAL_US and p99_us <= ACK_P99_GOAL_US and not_accepted == 0
    return (f"kis-sim: {st.get('orders_today')} orders today, {st.get('rate_limited')} refused by its rate limit "
            f"of {st.get('rate_limit_per_s')}/s; goal p50 <= {ACK_P50_GOAL_US / 1000:g} ms and p99 <= "
            f"{ACK_P99_GOAL_US / 1000:g} ms, every order accepted: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
