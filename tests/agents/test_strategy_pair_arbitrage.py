"""Pair arbitrage: it switches to the cheap leg when a mean-reverting discount is wide, and not for noise or a walk."""

from __future__ import annotations

import math

import numpy as np

from agents.context import OrderIntent
from agents.strategies.pair_arbitrage import half_life
from agents.strategy import get_strategy
from tests.agents.conftest import bar, make_ctx, run_bars

COMMON, PREF = "005930", "005935"
COMMON_PX = 70_000
# one sample a bar, a short ring: the scenario's discount reverts within bars, not weeks
PAIR = {"sample_bars": 1, "min_samples": 40, "max_samples": 400, "window_half_lives": 3.0, "entry_z": 2.0, "exit_z": 0.5}


def pair_bars(discounts: list[float]) -> list:
    """The common at a fixed price and the preferred at common x exp(discount), bar by bar."""
    out = []
    for i, d in enumerate(discounts):
        out += [bar(COMMON, i, COMMON_PX), bar(PREF, i, int(round(COMMON_PX * math.exp(d), -2)))]
    return out


def ou(n: int, seed: int, mean: float = -0.19, phi: float = 0.9, sd: float = 0.01) -> list[float]:
    """An Ornstein-Uhlenbeck log discount sampled per bar: d' = mean + phi (d - mean) + noise."""
    rng = np.random.default_rng(seed)
    d, out = mean, []
    for _ in range(n):
        d = mean + phi * (d - mean) + sd * math.sqrt(1 - phi * phi) * rng.standard_normal()
        out.append(d)
    return out


def sent_orders(sent: list) -> list[tuple[int, str, str, int]]:
    return [(i // 2, o.side, o.code, o.qty) for i, o in sent if isinstance(o, OrderIntent)]


def test_the_half_life_of_an_ou_discount_is_estimated_and_a_trend_has_none() -> None:
    phi = 0.9
    assert abs(half_life(np.array(ou(4000, 1, phi=phi))) - math.log(2) / -math.log(phi)) < 2.0
    assert half_life(np.linspace(-0.15, -0.25, 200)) > 1e6  # no reversion: at most rounding's


def test_pair_arbitrage_holds_the_preferred_while_a_reverting_discount_is_wide_and_goes_home_when_it_closes() -> None:
    ctx = make_ctx("pair_arbitrage", [COMMON, PREF], cash=1_000_000, params=PAIR, start=(100, COMMON_PX))
    calm = ou(200, 7)
    wide = [-0.29] * 3  # the preferred 10% cheaper than usual: many standard deviations
    back = ou(30, 8)
    sent = sent_orders(run_bars(ctx, pair_bars(calm + wide + back)))
    legs = [(side, code) for _, side, code, _ in sent]
    assert legs[:4] == [("sell", COMMON), ("buy", PREF), ("sell", PREF), ("buy", COMMON)]
    assert sent[0][0] == 200  # only once the discount widened
    assert ctx.position(PREF) == 0 and ctx.position(COMMON) > 0
    assert ctx.portfolio.positions[PREF].realized_pnl_won > 0  # bought cheap, sold once the discount closed
    state = ctx.strategy.state()
    assert state["half_life_days"] is not None and state["target_leg"] == "common"


def test_pair_arbitrage_holds_still_while_the_discount_only_wobbles() -> None:
    # z beyond 2 now and then, but a deviation of a few tenths of a percent never pays both legs' costs
    ctx = make_ctx("pair_arbitrage", [COMMON, PREF], cash=0, params=PAIR, start=(100, COMMON_PX))
    assert run_bars(ctx, pair_bars(ou(300, 3, sd=0.004))) == []
    assert ctx.strategy.state()["half_life_days"] is not None


def test_pair_arbitrage_does_not_switch_for_a_discount_that_only_drifts_away() -> None:
    # a discount widening steadily has no half-life the samples show (rounding's wobble aside): the last value is far
    # below the mean, but nothing says it comes back
    ctx = make_ctx("pair_arbitrage", [COMMON, PREF], cash=0, params=PAIR, start=(100, COMMON_PX))
    drift = list(np.linspace(-0.15, -0.30, 300))
    assert run_bars(ctx, pair_bars(drift)) == []
    strategy = ctx.strategy
    assert strategy.half_life * PAIR["window_half_lives"] > PAIR["max_samples"] and strategy.state()["z"] < -1.5  # type: ignore[attr-defined]


def test_pair_arbitrage_refuses_a_deviation_that_costs_would_eat() -> None:
    # the same wide discount, but the switch must pay the round trip of both legs 40 times over
    ctx = make_ctx("pair_arbitrage", [COMMON, PREF], cash=0, params={**PAIR, "cost_multiple": 40.0}, start=(100, COMMON_PX))
    assert run_bars(ctx, pair_bars(ou(200, 7) + [-0.29] * 3)) == []


def test_pair_arbitrage_needs_a_common_and_its_preferred() -> None:
    cls = get_strategy("pair_arbitrage")
    assert cls.check_codes([COMMON, PREF]) is None
    assert "preferred" in cls.check_codes([COMMON, "000660"])
    assert cls.check_codes([COMMON]) is not None
