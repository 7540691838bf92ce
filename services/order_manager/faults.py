"""Crash points inside the order manager, armed from the environment to prove the journal's durability.

``TRADER_OMS_FAULT_POINT=<point>[:N]`` makes the process SIGKILL itself at the
N-th time (default the first) it passes ``<point>``:

* ``after_journal_before_broker``: a new order is journaled as SUBMITTED, the
  broker has not been asked;
* ``after_broker_before_journal``: the broker answered a new order, the answer
  is not journaled;
* ``mid_fill``: a fill is written inside its journal transaction, not committed.

A kill -9 is what a power cut or the OOM killer does: no handler, no flush,
no clean-up. Unset (the normal case), passing a point costs one comparison.
"""

from __future__ import annotations

import logging
import os
import signal

ENV_VAR = "TRADER_OMS_FAULT_POINT"
AFTER_JOURNAL_BEFORE_BROKER = "after_journal_before_broker"
AFTER_BROKER_BEFORE_JOURNAL = "after_broker_before_journal"
MID_FILL = "mid_fill"
POINTS = (AFTER_JOURNAL_BEFORE_BROKER, AFTER_BROKER_BEFORE_JOURNAL, MID_FILL)

log = logging.getLogger("order-manager.faults")


class FaultPoints:
    """The one crash point armed in this process (or none) and how often it has been passed."""

    def __init__(self, spec: str = "") -> None:
        self.point = ""
        self.on_hit = 1
        self.hits = 0
        spec = spec.strip()
        if not spec:
            return
        name, _, nth = spec.partition(":")
        if name not in POINTS:
            raise ValueError(f"{ENV_VAR}: unknown fault point {name!r}; known: {', '.join(POINTS)}")
        if nth and (not nth.isdigit() or int(nth) < 1):
            raise ValueError(f"{ENV_VAR}: the hit number must be a positive integer, not {nth!r}")
        self.point = name
        self.on_hit = int(nth) if nth else 1

    @classmethod
    def from_env(cls) -> FaultPoints:
        """The crash point named by ``TRADER_OMS_FAULT_POINT`` (none when unset)."""
        return cls(os.environ.get(ENV_VAR, ""))

    def hit(self, point: str) -> None:
        """Pass ``point``; when it is the armed one and its turn has come, die as kill -9 would."""
        if point != self.point:
            return
        self.hits += 1
        if self.hits == self.on_hit:
            log.critical("fault point %s reached (hit %d): killing the process", point, self.hits)
            os.kill(os.getpid(), signal.SIGKILL)
