"""The real agent process with one extra strategy that raises on every tick (for containment tests).

``python -m tests.agents.raising_agent --id ID``: registers ``raising`` in the
strategy registry of this process only, then runs ``agents.runtime.main``.
"""

from __future__ import annotations

import sys

from agents.context import AgentContext
from agents.strategies import STRATEGIES
from agents.strategy import Strategy, TickData


class Raising(Strategy):
    """A strategy with a bug: every tick raises."""

    name = "raising"

    def on_tick(self, ctx: AgentContext, tick: TickData) -> None:
        raise ZeroDivisionError(f"bug at price {tick.price}")


STRATEGIES[Raising.name] = Raising

if __name__ == "__main__":
    from agents.runtime import main

    sys.exit(main())
