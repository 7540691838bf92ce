"""The risk guard measures price bands against the venue's base price of the day (``md.ref.<code>``)."""

from __future__ import annotations

from core import krx
from core.config import PROJECT_ROOT
from core.instruments import load_instruments
from core.messages import DayReference, SessionEvent, SessionPhase
from core.risk import RiskLimits
from services.risk_guard.guard import AgentAllocation, RiskGuard

NS = 1_000_000_000


def guard() -> RiskGuard:
    instruments = load_instruments(PROJECT_ROOT / "configs" / "instruments.csv")
    return RiskGuard(RiskLimits(), instruments, [AgentAllocation("a", 10_000_000, {})])


def ref(date: str, base: int) -> DayReference:
    lower, upper = krx.limit_prices(base)
    return DayReference(code="005930", trading_date=date, ts_ns=1, base_price=base, lower_limit=lower,
                        upper_limit=upper)


def test_the_venues_base_price_replaces_the_masters_and_a_new_days_waits_for_its_roll() -> None:
    g = guard()
    master = g.view.base_prices["005930"]
    g.on_message(SessionEvent(phase=SessionPhase.OPEN, trading_date="20260303", ts_ns=1), 0)
    g.on_message(ref("20260303", master + 1_000), 0)  # KIS's 기준가 differs from the CSV's last close
    assert g.view.base_prices["005930"] == master + 1_000
    assert g.view.limit_prices("005930") == krx.limit_prices(master + 1_000)
    # the next day's reference, told before this guard has seen the next day: kept for it, not applied now
    g.on_message(ref("20260304", master + 2_000), 0)
    assert g.view.base_prices["005930"] == master + 1_000
    g.on_message(SessionEvent(phase=SessionPhase.PRE_OPEN, trading_date="20260304", ts_ns=2 * NS), 0)
    assert g.view.base_prices["005930"] == master + 2_000  # not the last price the roll would have taken
    # a stale day's reference changes nothing
    g.on_message(ref("20260303", master), 0)
    assert g.view.base_prices["005930"] == master + 2_000
