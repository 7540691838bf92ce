"""One chaos run: the whole firm over several accelerated trading days under seeded faults, then the checks.

The loop plays honcho (dead services are started again), reads the exchange's
store, and lets the injector strike. When the supervisor's daily report of a
day appears, injection pauses and the day is checked (orders, fills, report,
account and agents' books); at the end of the run the faults are cleared,
the account and every day's report are checked once more (a report must
follow rows of its day that reach the journal late), and the stack must go
down leaving no process and no lock. ``ChaosResult.ok`` is true only when every check held.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import load_stack
from tests.chaos.checks import (
    Check,
    ExchangeRecorder,
    Journal,
    account_differences,
    check_daily_report,
    check_fills_match_exchange,
    check_orders_match_exchange,
    converge,
)
from tests.chaos.firm import Firm
from tests.chaos.injector import KINDS, FaultInjector

TICK_S = 0.2
WARM_UP_S = 8.0  # the stack starts and the agents sync before the first fault
REPORT_SETTLE_TRIES = 15  # one a second: several of the supervisor's report checks (every 2 s)


@dataclass
class ChaosResult:
    """What a run did and whether every check held."""

    days: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    faults: dict[str, int] = field(default_factory=dict)
    orders: int = 0
    fills: int = 0
    recoveries: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def summary(self) -> str:
        """The printed summary: faults by kind, orders, fills, recoveries, each check."""
        lines = [f"chaos run over {len(self.days)} trading day(s): {', '.join(self.days)}", "faults injected:"]
        lines += [f"  {k:<24} {self.faults.get(k, 0)}" for k in KINDS]
        lines.append(f"orders {self.orders}, fills {self.fills}")
        lines.append("recoveries: " + ", ".join(f"{k} {v}" for k, v in sorted(self.recoveries.items())))
        lines.append("checks:")
        lines += [f"  [{'PASS' if c.passed else 'FAIL'}] {c.name}" + ("" if c.passed else f": {c.detail}")
                  for c in self.checks]
        lines.append("RESULT: " + ("PASS" if self.ok else "FAIL"))
        return "\n".join(lines)


def run_chaos(run_dir: Path, *, days: int, seed: int, speed: float, start_time: str = "08:50",
              start_date: str = "2026-03-03", day_timeout_s: float = 600.0,
              log: Callable[[str], None] = print) -> ChaosResult:
    """Run the firm for ``days`` trading days under faults; every process is stopped before returning."""
    previous = os.environ.get("TRADER_RUN_DIR")
    os.environ["TRADER_RUN_DIR"] = str(run_dir)
    try:
        settings = load_stack()
    finally:
        if previous is None:
            os.environ.pop("TRADER_RUN_DIR", None)
        else:
            os.environ["TRADER_RUN_DIR"] = previous
    firm = Firm(run_dir, speed=speed, start_time=start_time, start_date=start_date, seed=seed)
    agents = sorted(firm.ports)
    injector = FaultInjector(firm, settings, agents, seed, log=log)
    recorder = ExchangeRecorder(run_dir)
    journal = Journal(run_dir)
    result = ChaosResult()
    start_cash = settings.broker.account_cash_won
    inject = False

    def tick(seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            for name in firm.keep_alive(now):
                log(f"restarted {name}")
            recorder.poll()
            if inject:
                injector.step(now)
            if time.monotonic() >= end:
                return
            time.sleep(TICK_S)

    def account_check(label: str) -> Check:
        def probe() -> list[str]:
            try:
                return account_differences(journal, recorder, start_cash,
                                           {a: (firm.agent_status(a) or {}).get("book") for a in agents})
            except Exception as exc:  # a store mid-restart: report it as what was seen, and look again
                return [f"could not read the records: {exc!r}"]
        problems = converge(probe, tick, 60)
        return Check(f"{label} broker account = journal = sum of agents' books, to the won", not problems,
                     "; ".join(problems[:8]))

    def day_checks(date: str) -> None:
        def orders_and_fills() -> list[Check]:
            return [*check_orders_match_exchange(date, journal, recorder),
                    *check_fills_match_exchange(date, journal, recorder)]
        found: list[Check] = []

        def probe() -> list[str]:
            found[:] = orders_and_fills()
            return [c.name for c in found if not c.passed]
        converge(probe, tick, 45)
        result.checks.extend(found)
        result.checks.append(report_check(date))
        result.checks.append(account_check(date))

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

    try:
        firm.start_all()
        started = time.monotonic()
        tick(WARM_UP_S)
        injector.schedule_from(time.monotonic())
        inject = True
        reports = run_dir / "reports"
        last_report_at = time.monotonic()
        while len(result.days) < days:
            tick(1.0)
            fresh = sorted(p.stem for p in reports.glob("*.csv") if p.stem not in result.days) if reports.exists() else []
            for date in fresh:
                inject = False
                injector.clear_all()
                log(f"day {date} closed: checking")
                result.days.append(date)
                day_checks(date)
                last_report_at = time.monotonic()
                inject = len(result.days) < days
            if time.monotonic() - last_report_at > day_timeout_s:
                result.checks.append(Check("every day ends with a daily report", False,
                                           f"no report for {day_timeout_s:.0f} s after {result.days[-1:] or 'start'}"))
                break
        inject = False
        injector.clear_all()
        result.checks.append(account_check("end of run"))
        for date in result.days:
            result.checks.append(report_check(date, "end of run: "))
        missing = [k for k in KINDS if not injector.injected.get(k)]
        result.checks.append(Check("every fault kind injected at least once", not missing, ", ".join(missing)))
        result.faults = dict(injector.injected)
        result.orders = journal.rows("SELECT count(*) FROM orders")[0][0]
        result.fills = journal.rows("SELECT count(*) FROM fills")[0][0]
        result.recoveries = _recoveries(firm, journal)
        log(f"ran {time.monotonic() - started:.0f} s; stopping the stack")
        clean, detail = firm.stop()
        result.checks.append(Check("the stack went down leaving no process and no lock", clean, detail))
    finally:
        injector.close()
        firm.kill_everything()
    leftovers = firm.leftovers()
    if leftovers:
        result.checks.append(Check("no orphan process after the run", False, str([p.pid for p in leftovers])))
    return result


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
