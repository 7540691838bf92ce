"""The strategies, one module each, and the registry of them by name."""

from __future__ import annotations

from agents.strategies.churn import Churn
from agents.strategies.foreign_follower import ForeignFollower
from agents.strategies.pair_arbitrage import PairArbitrage
from agents.strategies.per_valuation import PerValuation
from agents.strategies.slow_trend import SlowTrend
from agents.strategies.sma_cross import SmaCross
from agents.strategies.volatility_tracker import VolatilityTracker
from agents.strategies.volume_trigger import VolumeTrigger
from agents.strategy import Strategy

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        PairArbitrage,
        ForeignFollower,
        VolatilityTracker,
        VolumeTrigger,
        PerValuation,
        SlowTrend,
        SmaCross,
        Churn,
    )
}
