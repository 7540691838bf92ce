"""The chaos test, short version: the whole firm for two accelerated trading days under seeded faults.

Every fault kind of the injector may strike (kill -9 of each kind of process,
broker disconnects, slow replies, duplicated and early notices, a journal that
refuses writes); at each close and at the end the exchange, the order
manager's journal, the daily report and the agents' books must agree exactly,
and the stack must go down leaving no process and no lock. The first day
starts at 12:30 and the clock runs x500, so the run takes about two and a
half minutes, in which every fault kind strikes at least once (two rounds of
the injector's deck). The standalone run (``python -m tests.chaos --days 3``)
is the long version.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.run import run_chaos

pytestmark = [pytest.mark.slow, pytest.mark.timeout(360)]


def test_two_days_of_faults_lose_no_order_double_no_fill_and_reconcile_to_the_won(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_chaos(tmp_path, days=2, seed=7, speed=500, start_time="12:30", day_timeout_s=240, log=lines.append)
    summary = result.summary()
    print(summary)
    failed = [c for c in result.checks if not c.passed]
    assert result.days and not failed, summary
    assert result.orders > 0 and result.fills > 0, summary
