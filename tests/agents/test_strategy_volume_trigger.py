"""Volume trigger: a surge that lifts the price above the day's VWAP is bought; volume without that direction is not."""

from __future__ import annotations

from agents.context import OrderIntent
from agents.strategy import BarData, get_strategy
from tests.agents.conftest import MINUTE, T0, make_ctx, run_bars

KAKAO = "035720"
VT = {"lookback": 20, "surge_ratio": 3.0, "min_move": 0.005, "take_profit": 0.01, "stop_loss": 0.01, "max_hold_bars": 30}


def kbar(i: int, close: int, volume: int = 10_000, low: int | None = None, high: int | None = None) -> BarData:
    return BarData(KAKAO, T0 + i * MINUTE, close, high or close, low or close, close, volume)


def orders(sent: list) -> list[tuple[int, str, int, int]]:
    return [(i, o.side, o.qty, o.price) for i, o in sent if isinstance(o, OrderIntent)]


QUIET = [kbar(i, 38_000) for i in range(25)]  # the day's VWAP is 38,000


def test_volume_trigger_buys_a_surge_above_vwap_and_takes_profit_after_costs() -> None:
    ctx = make_ctx("volume_trigger", [KAKAO], cash=10_000_000, params=VT)
    surge = [kbar(25, 38_300, 50_000)]  # 5x the volume, up 0.8% on the close, ~0.6% above the VWAP it lifts
    # +1.3 % is only about +1.09 % after costs; +1.2 % (38,760) would be short of 1 % after costs
    drift = [kbar(26, 38_600), kbar(27, 38_750), kbar(28, 38_800)]
    sent = orders(run_bars(ctx, QUIET + surge + drift))
    assert [(i, side, price) for i, side, _, price in sent] == [(25, "buy", 38_300), (28, "sell", 38_800)]
    assert sent[0][2] == sent[1][2] == 130  # half of the 10,000,000 won at 38,300
    assert ctx.position(KAKAO) == 0 and ctx.portfolio.realized_pnl_won > 0
    assert ctx.strategy.state()["exits"] == {"take_profit": 1, "stop_loss": 0, "time": 0}


def test_volume_trigger_stops_out_and_times_out() -> None:
    ctx = make_ctx("volume_trigger", [KAKAO], cash=10_000_000, params=VT)
    sent = orders(run_bars(ctx, QUIET + [kbar(25, 38_300, 50_000), kbar(26, 37_850)]))
    assert [side for _, side, *_ in sent] == ["buy", "sell"]
    assert ctx.portfolio.realized_pnl_won < 0 and ctx.strategy.state()["exits"]["stop_loss"] == 1
    ctx = make_ctx("volume_trigger", [KAKAO], cash=10_000_000, params=VT)
    flat = [kbar(26 + k, 38_300) for k in range(30)]
    sent = orders(run_bars(ctx, QUIET + [kbar(25, 38_300, 50_000)] + flat))
    assert [(i, side) for i, side, *_ in sent] == [(25, "buy"), (55, "sell")]
    assert ctx.strategy.state()["exits"]["time"] == 1


def test_volume_without_a_move_above_vwap_is_not_bought() -> None:
    ctx = make_ctx("volume_trigger", [KAKAO], params=VT)
    bars = list(QUIET)
    bars += [kbar(25, 38_000, 80_000)]  # volume without a move
    bars += [kbar(26, 38_500, 10_000)]  # a move without volume
    bars += [kbar(27, 37_700, 80_000)]  # heavy selling: volume, the price down through the VWAP
    bars += [kbar(28, 38_050, 80_000, low=37_600)]  # bought back up, but still under 0.5% above the VWAP
    assert run_bars(ctx, bars) == []


def test_a_take_profit_that_costs_would_eat_is_refused() -> None:
    _, problems = get_strategy("volume_trigger").check_params({**VT, "take_profit": 0.002})
    assert [key for key, _ in problems] == ["take_profit"]
