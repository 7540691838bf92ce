"""The strategies, one module each, and the registry of them by name."""

from __future__ import annotations

from agents.strategies.sma_cross import SmaCross
from agents.strategy import Strategy

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        SmaCross,
    )
}
