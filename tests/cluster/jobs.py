"""A sweep job whose task raises for one set: importable by Ray's workers (they get the test's sys.path)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backtest.data import MarketData
from backtest.sweep import SweepJob, SweepRow


class RaisingJob(SweepJob):
    """Raises past the job's own guard when ``fast`` is 3, as a task that breaks outside the back-test would."""

    __slots__ = ()

    def run(self, data: MarketData, params: Mapping[str, Any]) -> SweepRow:
        if params.get("fast") == 3:
            raise RuntimeError("the task broke on fast=3")
        return SweepJob.run(self, data, params)
