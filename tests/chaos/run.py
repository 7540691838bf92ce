"""One chaos run: the whole firm over several accelerated trading days under seeded faults, then the checks.

The loop plays honcho (dead services are started again), reads the venue's
store (the paper exchange's, or with ``venue="kis-sim"`` kis-sim's: the firm
then trades through the KIS gateway and is checked against KIS's own record,
``tests.chaos.kis_checks``), listens to ``sys.alert`` and lets the injector
strike. Besides the injector's faults, the ``ChaosPlan`` takes the whole
stack down and up again once overnight (gracefully, between a day's close
and the next open) and once mid-day (kill -9 of every process at the same
moment), and injects one phantom account change at the venue: the
reconciler must report it as a break in its first run after it, the run
books it with ``trader ledger adjust`` and ``trader resume``, and trading
goes on.

When the supervisor's daily report of a day appears, injection pauses and the
day is checked (orders, fills, report, account and agents' books, journal and
archive alike); at the end of the run the faults are cleared, the account and
the reports are checked once more, the reconciler's reports and the trading
state's changes are checked over the whole run (no break but the phantom's,
no halt but the one it caused), and the stack must go down leaving no
process and no lock. ``ChaosResult.ok`` is true only when every check held.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.config import load_stack
from tests.chaos.checks import (
    Adjustment,
    AlertRecorder,
    Check,
    ExchangeRecorder,
    Journal,
    PhantomEpisode,
    ReconLog,
    account_differences,
    breaks_of,
    check_break_alerts,
    check_daily_report,
    check_fills_match_exchange,
    check_orders_match_exchange,
    check_recon_reports,
    check_trading_state,
    converge,
    is_phantom_break,
    report_started_ns,
)
from tests.chaos.firm import Firm
from tests.chaos.injector import TOKEN_INTERVAL_S, FaultInjector, kinds_of
from tests.chaos.kis_checks import (
    KisSimRecord,
    check_fills_match_kis,
    check_orders_match_kis,
)

TICK_S = 0.2
WARM_UP_S = 8.0  # the stack starts and the agents sync before the first fault
REPORT_SETTLE_TRIES = 15  # one a second: several of the supervisor's report checks (every 2 s)
RESTART_SETTLE_S = 5.0  # after a whole-stack restart, before faults strike again
PHANTOM_REASON = "phantom account change injected by the chaos test (no fill explains it)"


@dataclass(frozen=True)
class ChaosPlan:
    """The run's scheduled events, by trading day (1 = the first day of the run); None leaves one out."""

    overnight_restart_after: int | None = None  # graceful whole-stack restart after this day's close
    midday_restart_on: int | None = None  # kill -9 of the whole stack on this day (or the first after) at ``midday_at``
    midday_at: str = "10:30"
    phantom_on: int | None = None  # the phantom account change on this day (or the first after) at ``phantom_at``
    phantom_at: str = "11:30"
    phantom_agent: str = "foreign-hynix"  # who the adjustment is booked to
    phantom_code: str = "000660"
    phantom_qty: int = 3
    phantom_cash_won: int = -12345

    @classmethod
    def for_days(cls, days: int) -> ChaosPlan:
        """Overnight restart a third of the way in, the phantom in the middle, the mid-day kill after it."""
        if days < 2:
            return cls(phantom_on=1)
        phantom = days // 2 + 1
        midday = (2 * days) // 3 + 1 if days >= 3 else None
        if midday == phantom:
            midday = midday + 1 if midday < days else None
        return cls(overnight_restart_after=max(1, days // 3), midday_restart_on=midday, phantom_on=phantom)


@dataclass
class ChaosResult:
    """What a run did and whether every check held."""

    days: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    venue: str = "paper"
    faults: dict[str, int] = field(default_factory=dict)
    orders: int = 0
    fills: int = 0
    per_day: dict[str, tuple[int, int]] = field(default_factory=dict)  # date -> (orders, fills)
    recoveries: dict[str, int] = field(default_factory=dict)
    restarts: list[str] = field(default_factory=list)  # whole-stack restarts, as done
    recon: dict[str, int] = field(default_factory=dict)
    phantom: str = ""
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def summary(self) -> str:
        """The printed summary: faults by kind, orders and fills per day, restarts, reconciliation, each check."""
        lines = [f"chaos run on {self.venue} over {len(self.days)} trading day(s): {', '.join(self.days)}",
                 "faults injected:"]
        lines += [f"  {k:<24} {self.faults.get(k, 0)}" for k in kinds_of(self.venue)]
        lines.append(f"orders {self.orders}, fills {self.fills}")
        lines.append("per day (orders / fills):")
        lines += [f"  {d}  {o:>6} / {f:<6}" for d, (o, f) in sorted(self.per_day.items())]
        lines.append("whole-stack restarts: " + ("; ".join(self.restarts) or "none"))
        lines.append("phantom: " + (self.phantom or "none"))
        lines.append("reconciler reports: " + ", ".join(f"{k} {v}" for k, v in self.recon.items()))
        lines.append("recoveries: " + ", ".join(f"{k} {v}" for k, v in sorted(self.recoveries.items())))
        lines.append(f"wall time {self.wall_s:.0f} s")
        lines.append("checks:")
        lines += [f"  [{'PASS' if c.passed else 'FAIL'}] {c.name}" + ("" if c.passed else f": {c.detail}")
                  for c in self.checks]
        lines.append("RESULT: " + ("PASS" if self.ok else "FAIL"))
        return "\n".join(lines)


def run_chaos(run_dir: Path, *, days: int, seed: int, speed: float, start_time: str = "08:50",
              start_date: str = "2026-03-03", day_timeout_s: float = 600.0, roster: str | Path = "default",
              retention_days: int = 3, recon_interval_s: float = 3.0, plan: ChaosPlan | None = None,
              min_orders_per_day: int = 0, min_fills_per_day: int = 0, gap_s: tuple[float, float] = (3.0, 8.0),
              settle_tries: int = 60, venue: str = "paper", token_interval_s: float = TOKEN_INTERVAL_S,
              log: Callable[[str], None] = print) -> ChaosResult:
    """Run the firm for ``days`` trading days under faults; every process is stopped before returning.

    ``venue``: ``paper`` (the paper exchange) or ``kis-sim`` (the KIS gateway and the local kis-sim).
    ``token_interval_s``: on kis-sim, the least wall time between two faults that revoke the gateway's token
    (shorter than KIS's minute, the gateway goes without a token for the rest of it).

    ``min_orders_per_day`` / ``min_fills_per_day``: when set, every day after
    the first (which may start late) must carry at least that many.
    ``settle_tries``: how many looks, a second apart, an account check takes
    before it reports a difference (records in flight settle meanwhile).
    """
    plan = plan if plan is not None else ChaosPlan.for_days(days)
    previous = os.environ.get("TRADER_RUN_DIR")
    os.environ["TRADER_RUN_DIR"] = str(run_dir)
    try:
        settings = load_stack()
    finally:
        if previous is None:
            os.environ.pop("TRADER_RUN_DIR", None)
        else:
            os.environ["TRADER_RUN_DIR"] = previous
    firm = Firm(run_dir, speed=speed, start_time=start_time, start_date=start_date, seed=seed, roster=roster,
                retention_days=retention_days, recon_interval_s=recon_interval_s, venue=venue)
    agents = sorted(firm.ports)
    injector = FaultInjector(firm, settings, agents, seed, gap_s=gap_s, token_interval_s=token_interval_s, log=log)
    exchange = ExchangeRecorder(run_dir) if venue == "paper" else None
    kis = KisSimRecord(run_dir) if venue == "kis-sim" else None
    recorder = exchange or kis
    assert recorder is not None
    journal = Journal(run_dir)
    recon = ReconLog(journal)
    alerts = AlertRecorder(settings.endpoint("bus_out"))
    result = ChaosResult(venue=venue)
    start_cash = settings.broker.account_cash_won
    adjustments: list[Adjustment] = []
    trading_dates: list[str] = []  # as the venue's clock shows them, in order
    episode: PhantomEpisode | None = None
    closed: list[str] = []  # dates whose daily report appeared, in order (retention deletes old report files)
    inject = False
    reports = run_dir / "reports"

    def note_reports() -> None:
        if reports.exists():
            closed.extend(sorted(p.stem for p in reports.glob("*.csv") if p.stem not in closed))

    closes_seen: list[str] = []  # trading dates the venue's clock was seen closed on
    overnight = {"done": plan.overnight_restart_after is None, "busy": False}

    def watch_for_the_night() -> None:
        # the overnight restart goes in the moment the market is seen closed (at a fast clock the night
        # lasts a second or two of wall time, shorter than the day's checks)
        clock = recorder.clock()
        if clock is None or clock.session not in ("closed", "after_hours") or not clock.trading_date:
            return
        if clock.trading_date not in closes_seen:
            closes_seen.append(clock.trading_date)
        if (not overnight["done"] and not overnight["busy"] and plan.overnight_restart_after is not None
                and len(closes_seen) >= plan.overnight_restart_after and len(closes_seen) < days):
            overnight["busy"] = True
            try:
                restart_whole_stack(True, f"overnight after day {len(closes_seen)}")
            finally:
                overnight["done"], overnight["busy"] = True, False

    def tick(seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            for name in firm.keep_alive(now):
                log(f"restarted {name}")
            recorder.poll()
            alerts.poll()
            note_reports()
            watch_for_the_night()
            if inject:
                injector.step(now)
            if time.monotonic() >= end:
                return
            time.sleep(TICK_S)

    def wait_until(condition: Callable[[], Any], timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = condition()
            if value or time.monotonic() >= deadline:
                return value
            tick(0.5)

    def account_check(label: str, *, strict: bool = False) -> Check:
        def probe() -> list[str]:
            try:
                return account_differences(journal, recorder, start_cash,
                                           {a: (firm.agent_status(a) or {}).get("book") for a in agents}, adjustments,
                                           skip_behind=not strict)
            except Exception as exc:  # a store mid-restart: report it as what was seen, and look again
                return [f"could not read the records: {exc!r}"]
        problems = converge(probe, tick, settle_tries)
        return Check(f"{label} broker account = journal = sum of agents' books, to the won", not problems,
                     "; ".join(problems[:8]))

    def day_checks(date: str) -> None:
        def orders_and_fills() -> list[Check]:
            if kis is not None:
                return [*check_orders_match_kis(date, journal, kis), *check_fills_match_kis(date, journal, kis)]
            assert exchange is not None
            return [*check_orders_match_exchange(date, journal, exchange),
                    *check_fills_match_exchange(date, journal, exchange)]
        found: list[Check] = []

        def probe() -> list[str]:
            try:
                found[:] = orders_and_fills()
            except Exception as exc:  # a store mid-restart: report it as what was seen, and look again
                found[:] = [Check(f"{date} orders and fills read from the venue and the journal", False,
                                  f"could not read the records: {exc!r}")]
            return [c.name for c in found if not c.passed]
        # the order manager expires the day's open orders once it has the broker's last word on them: while it
        # cannot get it (KIS gives the gateway a token once a minute), the looks wait for it
        converge(probe, tick, 45, away=lambda: alerts.away("order-manager"), away_limit_s=day_timeout_s)
        result.checks.extend(found)
        result.checks.append(report_check(date))
        result.checks.append(account_check(date))
        result.per_day[date] = journal.counts(date)
        log(f"day {date}: {result.per_day[date][0]} orders, {result.per_day[date][1]} fills")

    def report_check(date: str, label: str = "") -> Check:
        # rows of the day may reach the journal after the report (orders refused after the close): the
        # supervisor rewrites the report then, so the check waits a few of its report checks for it
        seen: list[Check] = []

        def probe() -> list[str]:
            try:
                seen[:] = [check_daily_report(date, journal)]
            except Exception as exc:  # a store mid-write: report it as what was seen, and look again
                seen[:] = [Check(f"{date} daily report matches the journal", False, f"could not read: {exc!r}")]
            return [] if seen[0].passed else [seen[0].detail]
        converge(probe, tick, REPORT_SETTLE_TRIES)
        return Check(f"{label}{seen[0].name}", seen[0].passed, seen[0].detail) if label else seen[0]

    def restart_whole_stack(graceful: bool, why: str) -> None:
        nonlocal inject
        was_injecting, inject = inject, False
        injector.clear_all()
        clock = recorder.clock()
        where = f"{clock.trading_date} {clock.session} {clock.hhmm}" if clock else "?"
        log(f"whole stack {'down gracefully' if graceful else 'kill -9'} and up again ({why}, market at {where})")
        if graceful and clock is not None and clock.session in ("continuous", "closing_auction"):
            result.checks.append(Check(f"the overnight restart ({why}) fell between a close and the next open", False,
                                       f"the market was at {where} when the run got to it"))
        ok, detail = firm.restart_all(graceful=graceful)
        result.restarts.append(f"{'graceful' if graceful else 'kill -9'} {why} at {where}")
        result.checks.append(Check(f"whole stack went down ({'graceful' if graceful else 'kill -9'}, {why})",
                                   ok, detail))
        tick(RESTART_SETTLE_S)
        injector.schedule_from(time.monotonic())
        inject = was_injecting

    def phantom_episode() -> PhantomEpisode | None:
        nonlocal inject
        inject = False
        injector.clear_all()
        quiet_ns = time.time_ns()
        settled = wait_until(lambda: any(not breaks_of(r) and not r.get("error") for r in recon.reports(quiet_ns)),
                             recon_interval_s * 3 + 30)
        result.checks.append(Check("a clean reconciliation before the phantom", bool(settled),
                                   "" if settled else f"none began in {recon_interval_s * 3 + 30:.0f} s"))
        code, qty, cash = plan.phantom_code, plan.phantom_qty, plan.phantom_cash_won
        injected_ns = time.time_ns()
        if not injector.phantom(code, qty, cash):
            result.checks.append(Check(f"the {venue} venue took the phantom", False, "the fault command was refused"))
            inject = True
            return None
        found = PhantomEpisode(code=code, qty=qty, cash_won=cash, injected_ns=injected_ns)

        def reported() -> dict[str, Any] | None:
            return next((r for r in recon.reports(injected_ns)
                         if any(is_phantom_break(b, code) for b in breaks_of(r))), None)
        caught = wait_until(reported, recon_interval_s * 3 + 30)
        log(f"phantom caught by {caught['report_id']}" if caught else "phantom not reported by the reconciler")
        adjust = firm.trader("ledger", "adjust", plan.phantom_agent, code, "--qty", str(qty), "--cash-won", str(cash),
                             "--reason", PHANTOM_REASON)
        booked = adjust.returncode == 0
        result.checks.append(Check("the phantom booked as an adjustment (`trader ledger adjust` exit 0)", booked,
                                   "" if booked else f"exit {adjust.returncode}: {(adjust.stderr or adjust.stdout)[-300:]}"))
        if booked:
            adjustments.append(Adjustment(plan.phantom_agent, code, qty, cash))
            found = replace(found, adjusted_ns=time.time_ns())
        resume = firm.trader("resume")
        result.checks.append(Check("`trader resume` after the adjustment (exit 0)", resume.returncode == 0,
                                   (resume.stderr or resume.stdout)[-300:] if resume.returncode else ""))
        found = replace(found, resumed_ns=time.time_ns())
        if booked:
            since = found.adjusted_ns

            def without() -> dict[str, Any] | None:
                return next((r for r in recon.reports(since) if not r.get("error")
                             and not any(is_phantom_break(b, code) for b in breaks_of(r))), None)
            over = wait_until(without, recon_interval_s * 3 + 30)
            if over:
                found = replace(found, over_ns=report_started_ns(over))
        result.phantom = (f"{qty:+d} {code}, {cash:+,} won at {dt.datetime.fromtimestamp(injected_ns / 1e9):%H:%M:%S}; "
                          f"reported {'by ' + caught['report_id'] if caught else 'never'}; "
                          f"adjustment {'booked' if booked else 'NOT booked'}; "
                          f"{'books agree again' if found.over_ns else 'break still open'}")
        log(f"phantom: {result.phantom}")
        injector.schedule_from(time.monotonic())
        inject = True
        return found

    started = time.monotonic()
    stopped = False
    try:
        firm.start_all()
        tick(WARM_UP_S)
        injector.schedule_from(time.monotonic())
        inject = True
        last_report_at = time.monotonic()
        midday_done = plan.midday_restart_on is None
        phantom_done = plan.phantom_on is None
        while len(result.days) < days:
            tick(1.0)
            clock = recorder.clock()
            if clock and clock.trading_date and clock.trading_date not in trading_dates:
                trading_dates.append(clock.trading_date)
            day_no = trading_dates.index(clock.trading_date) + 1 if clock and clock.trading_date in trading_dates else 0
            # "on day n" is at the first chance from day n on: checks of a closed day may outlast a short day
            if not midday_done and day_no >= plan.midday_restart_on and clock and clock.trading_after(plan.midday_at):
                midday_done = True
                restart_whole_stack(False, f"mid-day of day {day_no}")
            if not phantom_done and day_no >= plan.phantom_on and clock and clock.trading_after(plan.phantom_at):
                phantom_done = True
                episode = phantom_episode()
            for date in [d for d in closed if d not in result.days][: days - len(result.days)]:
                inject = False
                injector.clear_all()
                result.days.append(date)
                log(f"day {date} closed: checking")
                day_checks(date)
                last_report_at = time.monotonic()
                inject = len(result.days) < days
            if time.monotonic() - last_report_at > day_timeout_s:
                result.checks.append(Check("every day ends with a daily report", False,
                                           f"no report for {day_timeout_s:.0f} s after {result.days[-1:] or 'start'}"))
                break
        inject = False
        injector.clear_all()
        # the books stop moving for the last, strict comparison: no new order from here on (the market runs on
        # and resting orders may still fill; the agents catch up with those within a moment)
        quiet_from_ns = time.time_ns()
        halted = firm.trader("halt", "--why", "chaos run over: the books are compared at rest")
        if halted.returncode == 0:
            wait_until(lambda: not [o for o in journal.rows(
                "SELECT client_order_id FROM orders WHERE status IN ('new', 'submitted', 'cancel_pending')")], 15)
        result.checks.append(account_check("end of run", strict=True))
        # retention counts from the latest day the market reached (it may have gone on past the last checked)
        latest = max([*result.days, *closed, *trading_dates], default="")
        cutoff = _retention_cutoff(latest, retention_days) if latest else ""
        for date in result.days:
            if date < cutoff and not journal.rows("SELECT 1 FROM daily_reports WHERE trading_date = ?", date):
                continue  # retention took the day's report rows with it
            result.checks.append(report_check(date, "end of run: "))
        for date in result.days:
            result.per_day[date] = journal.counts(date)
        if min_orders_per_day or min_fills_per_day:
            thin = [f"{d}: {o} orders, {f} fills" for d, (o, f) in sorted(result.per_day.items())[1:]
                    if o < min_orders_per_day or f < min_fills_per_day]
            result.checks.append(Check(f"every day after the first carries >= {min_orders_per_day} orders and >= "
                                       f"{min_fills_per_day} fills", not thin, "; ".join(thin)))
        if plan.phantom_on is not None and not phantom_done:
            result.checks.append(Check("the phantom was injected", False, f"day {plan.phantom_on} never reached "
                                                                          f"{plan.phantom_at}"))
        result.checks.extend(check_recon_reports(recon, episode, recon_interval_s))
        result.checks.append(check_trading_state(journal, episode, until_ns=quiet_from_ns))
        result.checks.append(check_break_alerts(alerts, recon, episode))
        missing = [k for k in injector.kinds if not injector.injected.get(k)]
        result.checks.append(Check("every fault kind injected at least once", not missing, ", ".join(missing)))
        result.faults = dict(injector.injected)
        result.orders = sum(o for o, _ in result.per_day.values())
        result.fills = sum(f for _, f in result.per_day.values())
        result.recon = recon.counts()
        result.recoveries = _recoveries(firm, journal)
        log(f"ran {time.monotonic() - started:.0f} s; stopping the stack")
        clean, detail = firm.stop()
        stopped = True
        result.checks.append(Check("the stack went down leaving no process and no lock", clean, detail))
    finally:
        injector.close()
        alerts.close()
        if not stopped:  # the run broke off (an error, Ctrl-C, SIGTERM): the stack still goes down
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                firm.stop()
        firm.kill_everything()
        firm.remove_stale_locks()  # kill -9 leaves its victims' locks; the run's check above saw them
    leftovers = firm.leftovers()
    if leftovers:
        result.checks.append(Check("no orphan process after the run", False, str([p.pid for p in leftovers])))
    result.wall_s = time.monotonic() - started
    return result


def _retention_cutoff(trading_date: str, retention_days: int) -> str:
    """The first date retention keeps when ``trading_date`` is the last day (calendar days, as the stack counts)."""
    day = dt.datetime.strptime(trading_date, "%Y%m%d").date()
    return (day - dt.timedelta(days=retention_days)).strftime("%Y%m%d")


def _recoveries(firm: Firm, journal: Journal) -> dict[str, int]:
    """Services started again by the run, agents restarted by the supervisor, journal and broker recoveries."""
    out = {f"restart {k}": v for k, v in firm.restarts.items()}
    ps = firm.trader("ps", "--json")
    try:
        rows: list[dict[str, Any]] = json.loads(ps.stdout) if ps.stdout.strip().startswith("[") else []
    except ValueError:
        rows = []
    out["agent restarts by the supervisor"] = sum(int(r.get("restarts") or 0) for r in rows if r.get("kind") == "agent")
    out["journal recoveries"] = journal.rows("SELECT count(*) FROM alerts WHERE kind = 'journal_recovered'")[0][0]
    return out
