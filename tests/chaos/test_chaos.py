"""The chaos test, short version: the whole firm over three accelerated trading days under seeded faults.

Every fault kind of the injector may strike (kill -9 of each kind of process,
broker disconnects, slow replies, duplicated and early notices, a journal that
refuses writes); the whole stack goes down gracefully and up again after the
first close; on the second day the exchange's account changes without a fill
(the phantom), which the reconciler must report as a break in its first run
after it, and which is then booked with ``trader ledger adjust`` and trading
resumed. At each close and at the end the exchange, the order manager's
journal (and its archive: retention is one day, so the first day is archived
during the run), the daily report and the agents' books must agree exactly;
the reconciler must have seen no other break and the firm no other halt; and
the stack must go down leaving no process and no lock. The busy roster is
trimmed to ten agents (four churn agents among them) and the first day starts
at 12:30, so the run stays well under three minutes on two cores. The
standalone run (``python -m tests.chaos --days 10 --roster busy``) is the
long version.

The same on kis-sim, one day: the firm trades through the KIS gateway and
the local kis-sim, every fault of the kis-sim deck strikes (kis-sim and the
gateway killed, the stream dropped with and without a close frame, REST
silent, orders carried out and their replies lost, early and doubled
notices, tokens revoked back to back, random 500s, the weekly restart), the
phantom comes at kis-sim, and KIS's own record (its orders, filled
quantities, amounts and costs, its account) must agree with the journal
(``python -m tests.chaos --venue kis-sim --days 3`` is the long version).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.firm import roster_file, trimmed_roster
from tests.chaos.run import ChaosPlan, run_chaos

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

AGENTS = ["pair-samsung", "foreign-hynix", "volume-kakao", "per-hyundai", "sma-samsung", "sma-kb",
          "churn-hynix", "churn-samsung", "churn-kakao", "churn-kakaogames"]


def test_three_days_of_faults_restarts_and_a_phantom_lose_nothing_and_reconcile_to_the_won(tmp_path: Path) -> None:
    roster = trimmed_roster(roster_file("busy"), AGENTS, tmp_path / "roster.toml")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lines: list[str] = []
    plan = ChaosPlan(overnight_restart_after=1, phantom_on=2, phantom_at="10:00")
    result = run_chaos(run_dir, days=3, seed=7, speed=900, start_time="12:30", day_timeout_s=120, roster=roster,
                       retention_days=1, recon_interval_s=2.0, plan=plan, gap_s=(2.0, 5.0), settle_tries=20,
                       log=lines.append)
    summary = result.summary()
    print("\n".join(lines))
    print(summary)
    failed = [c for c in result.checks if not c.passed]
    assert result.days and not failed, summary
    assert result.orders > 0 and result.fills > 0, summary
    assert result.restarts and result.phantom, summary


def test_a_day_on_kis_sim_of_its_faults_and_a_phantom_loses_nothing_at_kis_and_reconciles_to_the_won(
        tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lines: list[str] = []
    plan = ChaosPlan(phantom_on=1, phantom_at="09:30")  # early: the faults go on after it
    result = run_chaos(run_dir, days=1, seed=7, speed=300, start_time="08:50", day_timeout_s=150, roster="default",
                       retention_days=3, recon_interval_s=2.0, plan=plan, gap_s=(1.0, 2.0), settle_tries=20,
                       venue="kis-sim", token_interval_s=0.0, log=lines.append)
    summary = result.summary()
    print("\n".join(lines))
    print(summary)
    failed = [c for c in result.checks if not c.passed]
    assert result.days and not failed, summary
    assert result.orders > 0 and result.fills > 0 and result.phantom, summary
