"""Each strategy against a scenario built to trigger its principle, and one built not to.

Strategies run through the real AgentContext and Portfolio; the orders they
place are read from the outbox, executed at their price, and the fills come
back through the context into the book.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from agents.context import OrderIntent
from agents.strategy import STRATEGIES, FlowData, ParamsError, get_strategy
from tests.agents.conftest import MINUTE, T0, bar, execute, make_ctx, run_bars

COMMON, PREF = "005930", "005935"


def orders(sent: list) -> list[tuple[int, str, str, int, int]]:
    """(bar index, side, code, qty, price) of the order intents sent."""
    return [(i, o.side, o.code, o.qty, o.price) for i, o in sent if isinstance(o, OrderIntent)]


def test_every_strategy_is_registered_with_validated_params() -> None:
    assert set(STRATEGIES) == {
        "pair_arbitrage", "foreign_follower", "volatility_tracker", "volume_trigger", "per_valuation", "slow_trend", "sma_cross",
        "churn",
    }
    for name, cls in STRATEGIES.items():
        assert get_strategy(name) is cls and cls.__doc__ and cls.__module__.startswith("agents.strategies.")
        assert cls.from_params({}).params == cls.Params()
    with pytest.raises(ParamsError, match="qty"):
        get_strategy("sma_cross").from_params({"qty": -1})
    with pytest.raises(KeyError):
        get_strategy("martingale")


# --- sma_cross ------------------------------------------------------------------


def test_sma_cross_buys_the_cross_up_and_sells_the_cross_down() -> None:
    ctx = make_ctx("sma_cross", [COMMON], params={"fast": 3, "slow": 6, "qty": 100})
    closes = [70_000 - 100 * i for i in range(10)] + [69_100 + 200 * i for i in range(10)] + [70_900 - 300 * i for i in range(10)]
    sent = orders(run_bars(ctx, [bar(COMMON, i, c) for i, c in enumerate(closes)]))
    assert [(side, qty) for _, side, _, qty, _ in sent] == [("buy", 100), ("sell", 100)]
    (ib, _, _, _, pb), (is_, _, _, _, ps) = sent
    assert pb == closes[ib] and ps == closes[is_]  # limit at the signal bar's close
    assert ctx.position(COMMON) == 0 and ctx.portfolio.realized_pnl_won != 0
    state = ctx.strategy.state()
    assert state["sma_slow"] == pytest.approx(np.mean(closes[-6:]))
    assert state["sma_fast"] == pytest.approx(np.mean(closes[-3:]))


def test_sma_cross_stays_out_of_a_flat_market() -> None:
    ctx = make_ctx("sma_cross", [COMMON], params={"fast": 3, "slow": 6})
    assert run_bars(ctx, [bar(COMMON, i, 70_000) for i in range(50)]) == []


def test_sma_cross_market_orders_when_asked() -> None:
    ctx = make_ctx("sma_cross", [COMMON], params={"fast": 2, "slow": 4, "order_type": "market"})
    closes = [70_000, 69_900, 69_800, 69_700, 69_600, 70_000, 70_400]
    sent = run_bars(ctx, [bar(COMMON, i, c) for i, c in enumerate(closes)])
    assert [(o.side, o.order_type, o.price) for _, o in sent] == [("buy", "market", 0)]
    assert ctx.position(COMMON) == 100


# --- pair_arbitrage -------------------------------------------------------------


def pair_bars(prefs: list[int], common: int = 70_000) -> list:
    out = []
    for i, p in enumerate(prefs):
        out += [bar(COMMON, i, common), bar(PREF, i, p)]
    return out


PAIR = {"window": 30, "entry_z": 2.0, "exit_z": 0.5, "home_leg": "common"}


def test_pair_arbitrage_switches_to_the_preferred_when_the_discount_widens_and_back_when_it_reverts() -> None:
    ctx = make_ctx("pair_arbitrage", [COMMON, PREF], cash=1_000_000, params=PAIR, start=(100, 70_000))
    calm = [58_000 + 100 * (i % 2) for i in range(40)]
    wide = [55_000] * 3
    back = [58_000 + 100 * (i % 2) for i in range(10)]
    sent = orders(run_bars(ctx, pair_bars(calm + wide + back)))
    legs = [(side, code) for _, side, code, _, _ in sent]
    assert legs[:4] == [("sell", COMMON), ("buy", PREF), ("sell", PREF), ("buy", COMMON)]
    first_sell, first_buy = sent[0], sent[1]
    assert first_sell[3] == 100 and first_sell[0] >= 2 * 40  # only once the discount widened
    assert first_buy[2] == PREF and first_buy[4] == 55_000
    # the book followed every fill: back in the common, costs paid
    assert ctx.position(PREF) == 0 and ctx.position(COMMON) > 0
    assert ctx.portfolio.taxes_won > 0 and ctx.portfolio.positions[PREF].realized_pnl_won > 0


def test_pair_arbitrage_holds_still_while_the_discount_only_wobbles() -> None:
    ctx = make_ctx("pair_arbitrage", [COMMON, PREF], cash=1_000_000, params=PAIR, start=(100, 70_000))
    assert run_bars(ctx, pair_bars([58_000 + 100 * (i % 2) for i in range(120)])) == []
    assert abs(ctx.strategy.state()["z"]) < 2


def test_pair_arbitrage_refuses_a_threshold_that_costs_would_eat() -> None:
    # a deviation smaller than the round trip's costs is not worth switching for
    ctx = make_ctx("pair_arbitrage", [COMMON, PREF], cash=1_000_000, params={**PAIR, "cost_multiple": 10.0}, start=(100, 70_000))
    prefs = [58_000] * 30 + [58_000 + 100 * (i % 2) for i in range(10)] + [57_800] * 3
    assert run_bars(ctx, pair_bars(prefs)) == []


def test_pair_arbitrage_needs_a_common_and_its_preferred() -> None:
    cls = get_strategy("pair_arbitrage")
    assert cls.check_codes([COMMON, PREF]) is None
    assert "preferred" in cls.check_codes([COMMON, "000660"])
    assert cls.check_codes([COMMON]) is not None


# --- foreign_follower -----------------------------------------------------------

HYNIX = "000660"


def feed_flows(ctx, flows: list[int], start: int) -> list:
    sent = []
    for k, q in enumerate(flows):
        ctx.on_flow(FlowData(HYNIX, T0 + (start + k) * MINUTE, q))
        sent += [(start + k, o) for o in execute(ctx)]
    return sent


def test_foreign_follower_buys_strong_persistent_foreign_buying_and_exits_on_a_trailing_stop() -> None:
    ctx = make_ctx("foreign_follower", [HYNIX], cash=50_000_000,
                   params={"window": 4, "volume_bars": 60, "entry_score": 0.05, "trail_pct": 0.05})
    run_bars(ctx, [bar(HYNIX, i, 170_000) for i in range(60)])  # 600,000 shares traded
    sent = feed_flows(ctx, [10_000, 9_000, 8_000, 12_000], 60)  # 39,000 / 600,000 = 0.065
    [(_, buy)] = sent
    assert buy.side == "buy" and buy.price == 170_000 and ctx.position(HYNIX) == buy.qty > 0
    assert ctx.cash() >= 0
    rally = [bar(HYNIX, 70 + i, 170_000 + 1_000 * i) for i in range(11)]  # peak 180,000
    slide = [bar(HYNIX, 81 + i, 179_000 - 1_000 * i) for i in range(10)]
    sent = orders(run_bars(ctx, rally + slide))
    [(i, side, _, qty, price)] = sent
    assert side == "sell" and qty == buy.qty and price <= 180_000 * 0.95
    assert ctx.position(HYNIX) == 0 and ctx.strategy.state()["exits"]["trailing_stop"] == 1
    assert ctx.portfolio.realized_pnl_won > 0


def test_foreign_follower_leaves_when_foreign_buying_reverses() -> None:
    ctx = make_ctx("foreign_follower", [HYNIX], cash=50_000_000, params={"window": 2, "volume_bars": 60, "entry_score": 0.05})
    run_bars(ctx, [bar(HYNIX, i, 170_000) for i in range(60)])
    assert len(feed_flows(ctx, [20_000, 20_000], 60)) == 1
    sent = feed_flows(ctx, [-30_000, -30_000], 62)
    assert [o.side for _, o in sent] == ["sell"] and ctx.position(HYNIX) == 0


def test_foreign_follower_ignores_flows_that_are_weak_or_not_persistent() -> None:
    ctx = make_ctx("foreign_follower", [HYNIX], params={"window": 4, "volume_bars": 60, "entry_score": 0.05})
    run_bars(ctx, [bar(HYNIX, i, 170_000) for i in range(60)])
    assert feed_flows(ctx, [40_000, -30_000, 40_000, -30_000], 60) == []  # large but flipping
    assert feed_flows(ctx, [1_000, 1_000, 1_000, 1_000], 64) == []  # persistent but small
    assert ctx.position(HYNIX) == 0


# --- volatility_tracker ---------------------------------------------------------

VOL = {"fair_per": 12.0, "warmup": 20, "fast_halflife": 5, "slow_halflife": 40, "target_vol": 0.25, "spike_ratio": 1.5}


def swings(n: int, low: int, high: int, start: int) -> list:
    return [bar(COMMON, start + i, low if i % 2 == 0 else high) for i in range(n)]


def test_volatility_tracker_adds_below_value_as_volatility_falls_and_cuts_on_a_spike() -> None:
    # value = EPS 4,950 x 12 = 59,400; the price swings around 55,000, below it
    ctx = make_ctx("volatility_tracker", [COMMON], params=VOL)
    wild = orders(run_bars(ctx, swings(40, 55_000, 55_600, 0)))
    assert wild == []  # volatility high and rising: nothing to add
    calm = orders(run_bars(ctx, swings(40, 55_000, 55_100, 40)))
    assert calm and {side for _, side, *_ in calm} == {"buy"}
    held = ctx.position(COMMON)
    assert held > 0
    assert held * 55_100 <= ctx.equity() * 0.9  # never beyond the cap
    spike = orders(run_bars(ctx, swings(6, 55_000, 57_000, 80)))
    assert spike and spike[0][1] == "sell"
    assert ctx.position(COMMON) < held


def test_volatility_tracker_does_not_buy_above_value() -> None:
    ctx = make_ctx("volatility_tracker", [COMMON], params={**VOL, "fair_per": 10.0})  # value 49,500
    assert run_bars(ctx, swings(40, 55_000, 55_600, 0) + swings(40, 55_000, 55_100, 40)) == []
    assert ctx.strategy.state()["vol_fast"] < ctx.strategy.state()["vol_slow"]


# --- volume_trigger ------------------------------------------------------------

KAKAO = "035720"
VT = {"lookback": 20, "surge_ratio": 3.0, "min_move": 0.005, "take_profit": 0.01, "stop_loss": 0.01}


def test_volume_trigger_buys_a_confirmed_surge_and_takes_profit_after_costs() -> None:
    ctx = make_ctx("volume_trigger", [KAKAO], cash=10_000_000, params=VT)
    quiet = [bar(KAKAO, i, 38_000, 10_000) for i in range(25)]
    surge = [bar(KAKAO, 25, 38_300, 50_000)]
    # +1.3 % is only about +1.09 % after costs; +1.2 % (38,760) would be short of 1 % after costs
    drift = [bar(KAKAO, 26, 38_600), bar(KAKAO, 27, 38_750), bar(KAKAO, 28, 38_800)]
    sent = orders(run_bars(ctx, quiet + surge + drift))
    assert [(i, side, price) for i, side, _, _, price in sent] == [(25, "buy", 38_300), (28, "sell", 38_800)]
    assert sent[0][3] == sent[1][3] == 130  # half of the 10,000,000 won at 38,300
    assert ctx.position(KAKAO) == 0 and ctx.portfolio.realized_pnl_won > 0
    assert ctx.strategy.state()["exits"] == {"take_profit": 1, "stop_loss": 0}


def test_volume_trigger_stops_out() -> None:
    ctx = make_ctx("volume_trigger", [KAKAO], cash=10_000_000, params=VT)
    bars = [bar(KAKAO, i, 38_000, 10_000) for i in range(25)] + [bar(KAKAO, 25, 38_300, 50_000), bar(KAKAO, 26, 37_850)]
    sent = orders(run_bars(ctx, bars))
    assert [side for _, side, *_ in sent] == ["buy", "sell"]
    assert ctx.portfolio.realized_pnl_won < 0 and ctx.strategy.state()["exits"]["stop_loss"] == 1


def test_volume_trigger_needs_both_the_surge_and_the_move() -> None:
    ctx = make_ctx("volume_trigger", [KAKAO], params=VT)
    bars = [bar(KAKAO, i, 38_000, 10_000) for i in range(25)]
    bars += [bar(KAKAO, 25, 38_000, 80_000)]  # volume without a move
    bars += [bar(KAKAO, 26, 38_500, 10_000)]  # a move without volume
    bars += [bar(KAKAO, 27, 38_550, 25_000)]  # a small move on 2.5x volume
    assert run_bars(ctx, bars) == []


# --- per_valuation -------------------------------------------------------------

HYUNDAI = "005380"  # EPS 45,200
PER = {"low_per": 4.5, "high_per": 6.5, "step_pct": 0.05, "max_steps": 3, "step_fraction": 0.25}


def test_per_valuation_buys_in_steps_below_the_band_and_sells_in_steps_above() -> None:
    ctx = make_ctx("per_valuation", [HYUNDAI], cash=60_000_000, params=PER)
    path = [215_000, 200_000, 200_000, 190_000, 180_000, 170_000, 250_000, 300_000, 300_000, 315_000, 330_000, 340_000]
    sent = orders(run_bars(ctx, [bar(HYUNDAI, i, c) for i, c in enumerate(path)]))
    # PER 4.42, 4.20, 3.98 cross the levels 4.5, 4.275, 4.05; then 6.64, 6.97, 7.30 cross 6.5, 6.825, 7.15
    assert [(i, side) for i, side, *_ in sent] == [(1, "buy"), (3, "buy"), (4, "buy"), (7, "sell"), (9, "sell"), (10, "sell")]
    bought = sum(q for _, side, _, q, _ in sent if side == "buy")
    sells = [q for _, side, _, q, _ in sent if side == "sell"]
    assert sells[0] == math.ceil(bought / 3) and sum(sells) == bought
    assert ctx.position(HYUNDAI) == 0 and ctx.portfolio.realized_pnl_won > 0


def test_per_valuation_does_nothing_inside_the_band() -> None:
    ctx = make_ctx("per_valuation", [HYUNDAI], params=PER)
    assert run_bars(ctx, [bar(HYUNDAI, i, 210_000 + 5_000 * (i % 15)) for i in range(60)]) == []
    assert 4.5 < ctx.strategy.state()["per"] < 6.5


# --- slow_trend ----------------------------------------------------------------

NAVER = "035420"
TREND = {"window": 60, "eval_every": 5, "t_entry": 8.0, "t_exit": 2.0, "min_r2": 0.8, "break_sigmas": 3.0}


def test_slow_trend_enters_a_steady_trend_and_exits_when_it_breaks() -> None:
    ctx = make_ctx("slow_trend", [NAVER], cash=30_000_000, params=TREND)
    rising = [bar(NAVER, i, int(round(150_000 * math.exp(0.0005 * i), -2)), 10_000 + 10 * i) for i in range(80)]
    sent = orders(run_bars(ctx, rising))
    [(i, side, _, qty, _)] = sent
    assert side == "buy" and 59 <= i < 65 and ctx.position(NAVER) == qty
    assert ctx.strategy.state()["t_stat"] >= 8 and ctx.strategy.state()["r2"] >= 0.8
    crash = [bar(NAVER, 80, 150_000)]
    sent = orders(run_bars(ctx, crash))
    assert [(side, q) for _, side, _, q, _ in sent] == [("sell", qty)]
    assert ctx.position(NAVER) == 0


def test_slow_trend_ignores_a_noisy_flat_market() -> None:
    ctx = make_ctx("slow_trend", [NAVER], params=TREND)
    rng = np.random.default_rng(7)
    noise = rng.integers(-10, 11, size=200) * 100
    assert run_bars(ctx, [bar(NAVER, i, 180_000 + int(n)) for i, n in enumerate(noise)]) == []
    assert ctx.strategy.state()["t_stat"] < 8
