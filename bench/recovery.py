"""Recovery figures of the order path (``python -m bench.recovery``).

Starts bus proxy, the venue (``--venue``: the paper exchange, or the KIS gateway
in front of a local kis-sim, see ``bench/kis_venue.py``), market data, risk
guard and order manager in a temporary run directory (generous risk limits)
and measures two recoveries, each over ``--trials`` trials:

* OMS restart: with a journal of ``--journal-orders`` resting orders (and more
  each trial), kill -9 the order manager, start it again and send real
  OrderRequests (a resting limit buy far below the market, a new client order
  id each) until one is ACCEPTED: journal replayed, broker reconciled, orders
  taken. Then check the state was rebuilt: its ``orders`` command returns every
  earlier order, its book counts them, and an earlier request repeated gets the
  original answer. Where the time went (process start to "journal replayed" to
  "reconciled" to accepted) is read from the order manager's log.
* Broker reconnect: the exchange plays dead for ``--disconnect-s`` seconds (the
  ``fault`` command {kind: "disconnect"}); from the moment it answers again
  (the fault's send time plus its length, confirmed by a ping) the bench sends
  OrderRequests until one is ACCEPTED rather than BROKER_DISCONNECTED. The
  backoff wait pending when the broker came back is inferred from the order
  manager's ``broker_connection`` alerts: the last failed attempt's alert,
  stamped after the call that failed (its length read from the alert's reason),
  plus the "next attempt in D s" it announced, gives when the next attempt was
  due; the wait is how far that lies after the broker's return. The attempt
  that succeeded is stamped by its own "disconnected -> reconnecting" alert.
* KIS reconnect (``--venue kis-sim``): kis-sim itself goes away: stopped (its
  Ctrl-C), started again ``--disconnect-s`` seconds later on the same state,
  and from the moment it answers its status again the bench sends
  OrderRequests until one is ACCEPTED: the gateway's stream reconnected,
  registered again and caught up with the daily orders. The order manager
  stays connected to the gateway meanwhile (the gateway refuses orders with
  BROKER_DISCONNECTED), so the backoff that counts is the gateway's stream's:
  read by polling the gateway's ``status`` through the outage
  (``kis_venue.StreamWatch``), it is how far the next attempt's due time lay
  after kis-sim's return. The stream's backoff starts over only after a
  session that stayed connected a minute, so trials closer together than
  that see it grow towards its 30 s cap: the figure beyond it is the one to
  compare.

Goals: trading within 2 s of the broker coming back plus the pending backoff
wait (1 s of kis-sim coming back, through the gateway); the order manager back
within 3 s of kill -9. Prints figures and, last, one JSON line::

    {"bench": "recovery", "reconnect_p50_s": ..., "reconnect_max_s": ..., "oms_restart_p50_s": ..., "oms_restart_max_s": ..., "venue": ...}

    python -m bench.recovery                       # the paper exchange
    python -m bench.recovery --venue kis-sim -v    # kis-sim goes away, each outage's alerts printed
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import zmq

from bench import kis_venue
from bench.kis_venue import VENUE_HELP, VENUES
from bench.orders import RISK, percentile
from bus.pubsub import Subscriber
from bus.rpc import RpcClient, RpcFailure
from core import krx
from core.config import PROJECT_ROOT, load_stack
from core.messages import Alert, Command, OrderEvent, OrderRequest, OrderStatus, Side
from services.broker.base import BrokerError, BrokerUnavailable
from services.broker.connection import ALERT_KIND
from services.broker.venue import VenueBroker

RECONNECT_GOAL_S = {"paper": 2.0, "kis-sim": 1.0}  # beyond the pending backoff
AGENT, CODE = "foreign-hynix", "293490"  # a low-priced code: hundreds of resting buys fit the allocation
POLL_S = 0.01  # pause between two probe orders
NEXT_ATTEMPT = re.compile(r"next attempt in ([0-9.]+) s")
FAILED_CALL = re.compile(r"after (\d+) attempt\(s\) of (\d+) ms")
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ \w+ (.*)$")


class Stopped(Exception):
    """SIGTERM reached the bench: unwind and stop every process."""


@dataclass
class Restart:
    """One kill -9 and restart of the order manager, times in seconds from the kill."""

    total_s: float
    spawn_s: float  # the kill until the new process was started (reaping the dead one)
    replayed_s: float | None  # the log's "journal replayed" line
    reconciled_s: float | None  # the log's "reconciled with the broker" line
    probes: int
    orders_before: int
    rebuilt: bool
    why_not: str = ""


@dataclass
class Reconnect:
    """One broker disconnect, times in seconds from the moment the exchange answers again."""

    total_s: float
    pending_backoff_s: float  # how long the next attempt was still due after the broker came back
    attempt_s: float | None  # the successful attempt's "disconnected -> reconnecting" alert
    connected_s: float | None  # the "reconciling -> connected" alert
    exchange_answered_s: float  # the bench's own ping of the exchange (kis-sim: 0, its answer is the return)
    probes: int
    refused: int
    alerts: list[str] = field(default_factory=list)
    caught_up_s: float | None = None  # kis-sim: the gateway's "caught up; orders go out again" alert
    venue_start_s: float | None = None  # kis-sim: from its start to its first answer (the outage beyond --disconnect-s)


class Bench:
    """The processes and clients of one bench run."""

    def __init__(self, run_dir: Path, venue: str = "paper") -> None:
        self.run_dir = run_dir
        self.venue = venue
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        (run_dir / "risk.toml").write_text(RISK)
        self.env = {**os.environ, "TRADER_RUN_DIR": str(run_dir), "TRADER_RISK_FILE": str(run_dir / "risk.toml"),
                    "TRADER_CLOCK__START_TIME": "08:59", "TRADER_CLOCK__SPEED": "5", "PYTHONUNBUFFERED": "1",
                    **kis_venue.venue_env(venue)}
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("TRADER_")})
        self.commands = kis_venue.order_path_commands(venue)
        self.settings = load_stack()
        self.kis = kis_venue.LocalKis(self.settings) if venue != "paper" else None
        self.ctx = zmq.Context()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.oms = RpcClient(self.ctx, self.settings.endpoint("order_manager_rpc"), timeout_ms=5000, retries=0,
                             sender="bench")
        self.exchange = VenueBroker(self.ctx, self.settings, timeout_ms=3000, retries=0)
        self.alerts = Subscriber(self.ctx, self.settings.endpoint("bus_out"), ["sys.alert"])
        self.wall_minus_mono_ns = time.time_ns() - time.monotonic_ns()
        self.date = ""
        self.price = 0
        self.n = 0
        self.placed: dict[str, OrderEvent] = {}  # accepted resting orders, by client order id

    # --- processes ---------------------------------------------------------------

    def start(self, name: str) -> None:
        with open(self.log_path(name), "ab") as log:  # the process holds its own copy of the descriptor
            self.procs[name] = subprocess.Popen(self.commands[name], cwd=PROJECT_ROOT, env=self.env, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)

    def log_path(self, name: str) -> Path:
        return self.run_dir / "logs" / f"{name}.log"

    def close(self) -> None:
        """Stop every process, the last started first (TERM, kis-sim INT; KILL after 10 s), and the clients."""
        kis_venue.stop_all([(name, self.procs[name]) for name in self.commands if name in self.procs], self.run_dir)
        self.procs.clear()
        self.oms.close()
        self.exchange.close()
        self.alerts.close()
        if self.kis is not None:
            self.kis.close()
        self.ctx.destroy(linger=0)

    # --- talking to the stack ------------------------------------------------------

    def status(self) -> dict[str, Any] | None:
        try:
            reply = self.oms.call(Command(command_id=f"s{time.monotonic_ns()}", name="status"), timeout_ms=1000)
        except RpcFailure:
            self.oms.close()
            return None
        return reply.result if getattr(reply, "ok", False) else None  # type: ignore[return-value]

    def command(self, name: str, **args: Any) -> Any:
        reply = self.oms.call(Command(command_id=f"c{time.monotonic_ns()}", name=name, args=args))
        if not getattr(reply, "ok", False):
            raise RuntimeError(f"{name}: {reply}")
        return reply.result  # type: ignore[attr-defined]

    def order(self, timeout_ms: int = 5000) -> OrderEvent | None:
        """One resting limit buy with a new client order id; None when the order manager did not answer."""
        self.n += 1
        req = OrderRequest(client_order_id=f"{AGENT}-{self.date}-{self.n}", agent_id=AGENT, code=CODE, side=Side.BUY,
                           qty=1, price=self.price)
        try:
            reply = self.oms.call(req, timeout_ms=timeout_ms)
        except RpcFailure:
            self.oms.close()
            return None
        if not isinstance(reply, OrderEvent):
            return None
        if reply.status is OrderStatus.ACCEPTED:
            self.placed[reply.client_order_id] = reply
        return reply

    def probe_until_accepted(self, deadline_s: float, timeout_ms: int,
                             between: Callable[[], None] | None = None) -> tuple[float, int, int]:
        """Send orders until one is ACCEPTED: (monotonic time of that answer, probes sent, refused answers).

        ``between`` runs after each refused probe (the KIS trial watches the gateway's stream with it).
        """
        probes = refused = 0
        limit = time.monotonic() + deadline_s
        while time.monotonic() < limit:
            probes += 1
            reply = self.order(timeout_ms)
            if reply is not None and reply.status is OrderStatus.ACCEPTED:
                return time.monotonic(), probes, refused
            if reply is not None:
                refused += 1
            if between is not None:
                between()
            time.sleep(POLL_S)
        raise RuntimeError(f"no order accepted within {deadline_s:.0f} s; logs in {self.run_dir / 'logs'}")

    def connection_alerts(self, source: str = "order-manager") -> list[tuple[float, str]]:
        """``source``'s broker_connection alerts received since the last call: (monotonic stamp, text)."""
        out = []
        for env in self.alerts.drain():
            msg = env.msg
            if isinstance(msg, Alert) and msg.kind == ALERT_KIND and msg.source == source:
                out.append(((msg.ts_ns - self.wall_minus_mono_ns) / 1e9, msg.text))
        return out

    def log_times(self, name: str, offset: int) -> list[tuple[float, str]]:
        """Lines of a process's log written after ``offset`` bytes: (monotonic stamp, message)."""
        with open(self.log_path(name), "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        out = []
        for line in text.splitlines():
            m = LOG_LINE.match(line)
            if m:
                wall = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                out.append((wall - self.wall_minus_mono_ns / 1e9, m.group(2)))
        return out

    # --- the stack comes up ----------------------------------------------------------

    def bring_up(self) -> None:
        for name in self.commands:
            self.start(name)
        if self.venue != "paper":
            print("started kis-sim and the KIS gateway; waiting for the gateway's stream", file=sys.stderr)
            kis_venue.wait_ready(self.ctx, self.settings, 120)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until the whole chain approves and acknowledges an order
            st = self.status()
            if st and st.get("accepting") and st.get("trading_date"):
                try:
                    self.date = st["trading_date"]
                    self.price = krx.round_to_tick(self.exchange.quote(CODE)["last"] * 0.9, "up")
                except RpcFailure:
                    self.exchange.close()
                else:
                    reply = self.order()
                    if reply is not None and reply.status is OrderStatus.ACCEPTED:
                        return
            time.sleep(0.2)
        raise RuntimeError(f"the stack did not come up within 120 s; logs in {self.run_dir / 'logs'}")

    def wait_connected(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            st = self.status()
            if st and st.get("accepting") and st.get("connection") == "connected":
                return
            time.sleep(0.05)
        raise RuntimeError("the order manager did not get back to CONNECTED")

    # --- the trials ------------------------------------------------------------------

    def restart_trial(self) -> Restart:
        """kill -9 the order manager, start it again, probe until an order is accepted; check the rebuilt state."""
        st = self.status() or {}
        orders_before = int(st.get("orders", 0))
        earlier = dict(self.placed)
        offset = self.log_path("order-manager").stat().st_size
        proc = self.procs["order-manager"]  # replaced by start(); until then close() finds the dead one's lock
        t_kill = time.monotonic()
        proc.kill()
        proc.wait()
        self.oms.close()
        self.start("order-manager")
        t_spawn = time.monotonic()
        t_ok, probes, _ = self.probe_until_accepted(60, timeout_ms=3000)
        replayed = reconciled = None
        for ts, text in self.log_times("order-manager", offset):
            if replayed is None and text.startswith("journal replayed"):
                replayed = ts - t_kill
            if reconciled is None and text.startswith("reconciled with the broker"):
                reconciled = ts - t_kill
        why = self.check_rebuilt(earlier, orders_before)
        return Restart(t_ok - t_kill, t_spawn - t_kill, replayed, reconciled, probes, orders_before, not why, why)

    def check_rebuilt(self, earlier: dict[str, OrderEvent], orders_before: int) -> str:
        """'' when the restarted order manager holds every earlier order, else what is missing."""
        listed = {o["client_order_id"] for o in self.command("orders", agent_id=AGENT)}
        missing = set(earlier) - listed
        if missing:
            return f"{len(missing)} earlier order(s) missing from its orders, e.g. {sorted(missing)[:3]}"
        st = self.status() or {}
        if int(st.get("orders", 0)) < orders_before:
            return f"its book holds {st.get('orders')} order(s), {orders_before} before the kill"
        coid = min(earlier, key=lambda c: int(c.rsplit("-", 1)[1]))
        first = earlier[coid]
        again = self.oms.call(OrderRequest(client_order_id=coid, agent_id=AGENT, code=CODE, side=Side.BUY, qty=first.qty,
                                           price=first.price))
        if again != first:
            return f"the repeated request {coid} got {again!r}, not the original answer"
        return ""

    def reconnect_trial(self, seconds: float) -> Reconnect:
        """The exchange plays dead for ``seconds``; probe from its return until an order is accepted."""
        self.wait_connected()
        self.connection_alerts()  # forget what came before
        t_sent = time.monotonic()
        self.exchange.fault(kind="disconnect", seconds=seconds)
        # the exchange plays dead until its clock on receiving the fault plus ``seconds``: not before this moment,
        # so counting from it never flatters the figure
        t_back = t_sent + seconds
        time.sleep(max(0.0, t_back - time.monotonic()))
        t_answered = self.exchange_answers(t_back + 10)
        t_ok, probes, refused = self.probe_until_accepted(60, timeout_ms=5000)
        time.sleep(0.1)  # the alerts of the reconnect travel through the proxy
        alerts = self.connection_alerts()
        pending, attempt, connected = infer_backoff(alerts, t_back)
        return Reconnect(t_ok - t_back, pending, attempt, connected, t_answered - t_back, probes, refused,
                         [f"{ts - t_back:+7.3f} s  {text}" for ts, text in alerts])

    def exchange_answers(self, deadline: float) -> float:
        """When the exchange first answered a ping from the bench (monotonic)."""
        probe = VenueBroker(self.ctx, self.settings, timeout_ms=20, retries=0)
        try:
            while time.monotonic() < deadline:
                try:
                    probe.ping()
                    return time.monotonic()
                except Exception:  # noqa: BLE001 - still playing dead
                    probe.close()
            raise RuntimeError("the exchange did not answer after its disconnect")
        finally:
            probe.close()


    def kis_outage_trial(self, seconds: float) -> Reconnect:
        """kis-sim goes away for ``seconds`` and comes back; probe from its first answer until an order is accepted."""
        assert self.kis is not None
        self.wait_connected()
        self.wait_venue_ready()
        self.connection_alerts("kis-gateway")  # forget what came before
        stream = kis_venue.StreamWatch(self.exchange)
        stream.poll()
        t_stop = time.monotonic()
        kis_venue.stop_all([("kis-sim", self.procs["kis-sim"])], self.run_dir)  # start() replaces it
        while time.monotonic() < t_stop + seconds:
            stream.poll()
            time.sleep(POLL_S)
        self.start("kis-sim")
        t_start = time.monotonic()
        while not self.kis.answers():
            if time.monotonic() > t_start + 30 or self.procs["kis-sim"].poll() is not None:
                raise RuntimeError(f"kis-sim did not come back; see {self.log_path('kis-sim')}")
            stream.poll()
            time.sleep(0.002)
        t_back = time.monotonic()
        t_ok, probes, refused = self.probe_until_accepted(60, timeout_ms=5000, between=stream.poll)
        time.sleep(0.1)  # the gateway's alerts travel through the proxy
        alerts = self.connection_alerts("kis-gateway")
        pending, attempt = stream.pending_backoff(t_back)
        connected = next((ts - t_back for ts, text in alerts if "-> connected" in text), None)
        caught_up = next((ts - t_back for ts, text in alerts if "caught up" in text), None)
        return Reconnect(t_ok - t_back, pending, attempt, connected, 0.0, probes, refused,
                         [f"{ts - t_back:+7.3f} s  {text}" for ts, text in alerts], caught_up, t_back - t_start)

    def wait_venue_ready(self, timeout_s: float = 60.0) -> None:
        """Until the gateway answers a ping with ready: its stream up and caught up."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self.exchange.ping().get("ready"):
                    return
            except (BrokerError, BrokerUnavailable):
                self.exchange.close()
            time.sleep(0.05)
        raise RuntimeError("the KIS gateway did not get ready")


def infer_backoff(alerts: list[tuple[float, str]], t_back: float) -> tuple[float, float | None, float | None]:
    """From the alerts of one outage: (backoff wait pending at ``t_back``, successful attempt, connected), in s from t_back.

    Each drop's alert is stamped after the call that failed (``after N attempt(s)
    of M ms`` in its reason says how long that call blocked) and announces the
    delay to the next attempt (to 0.1 s), counted from when that call began. The
    last drop before the reconnect thus says when the attempt that succeeded was
    due; as no attempt starts before it is due, the successful attempt's own
    alert (stamped once its ping was answered) bounds that from above and takes
    out the rounding.
    """
    due: float | None = None
    attempt = connected = None
    for ts, text in alerts:
        wait = NEXT_ATTEMPT.search(text)
        if "-> disconnected" in text and wait:
            call = FAILED_CALL.search(text)
            blocked = int(call.group(1)) * int(call.group(2)) / 1000 if call else 0.0
            due = ts - blocked + float(wait.group(1))
            attempt = None  # only an attempt after the last drop can be the one that succeeded
        elif text.startswith("disconnected -> reconnecting"):
            attempt = ts - t_back
        elif text.endswith("-> connected: reconciled") and connected is None:
            connected = ts - t_back
    if due is None:
        return 0.0, attempt, connected
    if attempt is not None:
        due = min(due, t_back + attempt)
    return max(0.0, due - t_back), attempt, connected


def _fmt(x: float | None) -> str:
    return "   -  " if x is None else f"{x:6.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.recovery", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venue", choices=VENUES, default="paper", help=VENUE_HELP + " (default: %(default)s)")
    parser.add_argument("--trials", type=int, default=5, help="trials of each recovery (default: %(default)s)")
    parser.add_argument("--journal-orders", type=int, default=300,
                        help="resting orders in the journal before the first OMS restart (default: %(default)s)")
    parser.add_argument("--disconnect-s", type=float, default=3.0,
                        help="how long the venue is away: the exchange plays dead, or kis-sim is stopped this long "
                             "before it is started again (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each outage's connection alerts")
    opts = parser.parse_args()

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise Stopped()

    signal.signal(signal.SIGTERM, on_term)
    bench = Bench(Path(tempfile.mkdtemp(prefix="bench-recovery-")), opts.venue)
    reconnect_trial = bench.reconnect_trial if opts.venue == "paper" else bench.kis_outage_trial
    restarts: list[Restart] = []
    reconnects: list[Reconnect] = []
    try:
        t0 = time.monotonic()
        bench.bring_up()
        print(f"stack up and accepting orders in {time.monotonic() - t0:.1f} s (run dir {bench.run_dir})")
        while len(bench.placed) < opts.journal_orders:
            bench.order()
        print(f"journal holds {len(bench.placed)} resting orders")

        for i in range(opts.trials):
            for _ in range(20):  # the journal grows from trial to trial
                bench.order()
            r = bench.restart_trial()
            restarts.append(r)
            print(f"oms restart {i + 1}: {r.total_s:6.3f} s to an accepted order ({r.orders_before} orders in the book; "
                  f"spawned {r.spawn_s:.3f}, journal replayed {_fmt(r.replayed_s)}, reconciled {_fmt(r.reconciled_s)}, "
                  f"{r.probes} probes) state rebuilt: {'yes' if r.rebuilt else 'NO, ' + r.why_not}")

        for i in range(opts.trials):
            c = reconnect_trial(opts.disconnect_s)
            reconnects.append(c)
            if opts.venue == "paper":
                print(f"reconnect {i + 1}: {c.total_s:6.3f} s to an accepted order after the broker came back "
                      f"(pending backoff {c.pending_backoff_s:.3f} s, so {c.total_s - c.pending_backoff_s:.3f} s beyond "
                      f"it; attempt began {_fmt(c.attempt_s)}, connected {_fmt(c.connected_s)}, exchange answered the "
                      f"bench {c.exchange_answered_s:.3f}; {c.refused} refused probes)")
            else:
                print(f"reconnect {i + 1}: {c.total_s:6.3f} s to an accepted order after kis-sim came back "
                      f"(pending backoff {c.pending_backoff_s:.3f} s, so {c.total_s - c.pending_backoff_s:.3f} s beyond "
                      f"it; the gateway's attempt began {_fmt(c.attempt_s)}, stream connected {_fmt(c.connected_s)}, "
                      f"caught up {_fmt(c.caught_up_s)}; kis-sim answered {c.venue_start_s:.3f} s after its start; "
                      f"{c.refused} refused probes)")
            if opts.verbose:
                for line in c.alerts:
                    print("    " + line)
    except (KeyboardInterrupt, Stopped):
        print("interrupted; stopping the stack", file=sys.stderr)
        raise SystemExit(130)
    finally:
        bench.close()

    restart_s = sorted(r.total_s for r in restarts)
    reconnect_s = sorted(c.total_s for c in reconnects)
    beyond = sorted(c.total_s - c.pending_backoff_s for c in reconnects)
    result = {"bench": "recovery",
              "reconnect_p50_s": round(percentile(reconnect_s, 50), 3),
              "reconnect_max_s": round(reconnect_s[-1], 3),
              "reconnect_minus_backoff_p50_s": round(percentile(beyond, 50), 3),
              "reconnect_minus_backoff_max_s": round(beyond[-1], 3),
              "pending_backoff_p50_s": round(percentile(sorted(c.pending_backoff_s for c in reconnects), 50), 3),
              "oms_restart_p50_s": round(percentile(restart_s, 50), 3),
              "oms_restart_max_s": round(restart_s[-1], 3),
              "oms_state_rebuilt": all(r.rebuilt for r in restarts),
              "journal_orders": max(r.orders_before for r in restarts),
              "disconnect_s": opts.disconnect_s,
              "trials": opts.trials,
              "venue": opts.venue}
    print(f"reconnect: p50 {result['reconnect_p50_s']} s, max {result['reconnect_max_s']} s; beyond the pending "
          f"backoff: p50 {result['reconnect_minus_backoff_p50_s']} s, max {result['reconnect_minus_backoff_max_s']} s "
          f"(goal <= {RECONNECT_GOAL_S[opts.venue]:g} s)")
    print(f"oms restart: p50 {result['oms_restart_p50_s']} s, max {result['oms_restart_max_s']} s (goal <= 3 s), "
          f"state rebuilt in every trial: {result['oms_state_rebuilt']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
